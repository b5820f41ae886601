-- Search (`[search] method = "random" | "tpe"`): every configuration a sampler
-- proposed, numbered in the order proposed, recorded with its trials (one per
-- seed) in one transaction before any of them runs. `space_hash` identifies the
-- search space, base settings and seeds it was drawn for: a rerun with another
-- space is refused instead of mixing two searches. Grid sweeps have no rows here.
CREATE TABLE proposals (
    sweep_id    BIGINT NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    number      BIGINT NOT NULL,
    params_json TEXT NOT NULL,
    sampler     TEXT NOT NULL,
    space_hash  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (sweep_id, number)
);
-- The proposal a trial belongs to (NULL for grid trials).
ALTER TABLE trials ADD COLUMN proposal BIGINT;
-- What stopped a pruned trial, in words: the rule, the epoch and rung, the
-- threshold (`stop_reason` keeps the short code, `pruned`).
ALTER TABLE trials ADD COLUMN stop_detail TEXT;
