-- What a trial's metrics were recorded with. NULL: before version 2 (trials
-- recorded by an older Sweep: no training diagnostics, no per-class final
-- metrics, no batch-loss spread per epoch). 2: training diagnostics
-- (speed.*, stability.*, overfit.*, init.*, epoch1.*, val.f1.CLASS,
-- val.recall.CLASS; docs/results.md). Old trials keep their rows as they were.
ALTER TABLE trials ADD COLUMN metrics_version BIGINT;
