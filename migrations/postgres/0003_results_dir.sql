-- Where the sweep writes its files (checkpoints, TensorBoard logs, the report,
-- the decoded data cache): the results folder, absolute and canonical, as the
-- last `sweep run` that recorded the sweep saw it. `eval`, `report`, `show` and
-- `export` find the files through it without `--results`. NULL for sweeps
-- recorded before this migration: those fall back to `--results` (default
-- results/).
ALTER TABLE sweeps ADD COLUMN results_dir TEXT;
