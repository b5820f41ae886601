-- Large sweeps: a waiting grid trial is stored as its difference from a base
-- configuration that the sweep's trials share, not as its whole configuration
-- (50,000 waiting trials took 289 MB as full configs and 2.75 million
-- setting rows). While `trials.base_id` is set, `trials.config_json` holds only
-- the settings where the trial differs from `config_bases.config_json` (its
-- seed, its swept values, settings its canonical form resets) and
-- `trial_params` only its swept settings. When the trial is claimed, the full
-- configuration replaces the difference, every setting gets its
-- `trial_params` row and `base_id` is cleared, in the claim's transaction:
-- every trial that ran has its full configuration, as before. Trials recorded
-- before this migration have `base_id` NULL (full configuration). docs/schema.md.
CREATE TABLE config_bases (
    id          INTEGER PRIMARY KEY,
    sweep_id    INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    hash        TEXT NOT NULL,
    config_json TEXT NOT NULL,
    UNIQUE (sweep_id, hash)
);
ALTER TABLE trials ADD COLUMN base_id INTEGER REFERENCES config_bases(id);
-- The swept settings of each trial, found without reading its other rows:
-- `compare`, `status` and the report read them for every trial.
CREATE INDEX trial_params_swept ON trial_params (trial_id) WHERE swept = 1;
