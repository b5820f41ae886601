-- Sweep results database, version 1. Long tables that pandas can pivot.
-- Documented column by column in docs/schema.md. Never edit an applied migration:
-- add 0002_... instead.

CREATE TABLE sweeps (
    id                  INTEGER PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    description         TEXT,
    spec_path           TEXT NOT NULL,
    spec_text           TEXT NOT NULL,
    spec_hash           TEXT NOT NULL,
    objective           TEXT NOT NULL,
    direction           TEXT NOT NULL CHECK (direction IN ('maximize', 'minimize')),
    dataset             TEXT NOT NULL,
    dataset_fingerprint TEXT NOT NULL,
    tool_version        TEXT NOT NULL,
    git_commit          TEXT,
    host                TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

CREATE TABLE classes (
    sweep_id    INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    class_index INTEGER NOT NULL,
    name        TEXT NOT NULL,
    image_count INTEGER NOT NULL,
    PRIMARY KEY (sweep_id, class_index)
);

CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY,
    sweep_id     INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    pid          INTEGER NOT NULL,
    host         TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    ended_at     TEXT,
    end_reason   TEXT
);

CREATE TABLE trials (
    id               INTEGER PRIMARY KEY,
    sweep_id         INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    number           INTEGER NOT NULL,
    key              TEXT NOT NULL,
    config_json      TEXT NOT NULL,
    seed             INTEGER NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('waiting', 'running', 'complete', 'pruned', 'failed')),
    stop_reason      TEXT,
    stop_epoch       INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    session_id       INTEGER REFERENCES sessions(id),
    device           TEXT,
    worker_pid       INTEGER,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    duration_seconds REAL,
    best_epoch       INTEGER,
    report_epoch     INTEGER,
    num_parameters   INTEGER,
    train_size       INTEGER,
    val_size         INTEGER,
    error            TEXT,
    UNIQUE (sweep_id, key),
    UNIQUE (sweep_id, number)
);
CREATE INDEX trials_by_state ON trials (sweep_id, state, number);

-- Every attempt at a trial, including interrupted and failed ones.
CREATE TABLE trial_attempts (
    trial_id   INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL,
    session_id INTEGER REFERENCES sessions(id),
    started_at TEXT NOT NULL,
    ended_at   TEXT,
    outcome    TEXT CHECK (outcome IN ('complete', 'pruned', 'failed', 'interrupted', 'orphaned')),
    error      TEXT,
    PRIMARY KEY (trial_id, attempt)
);

CREATE TABLE trial_params (
    trial_id     INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('bool', 'int', 'float', 'text', 'list', 'table', 'none')),
    value_text   TEXT NOT NULL,
    value_number REAL,
    swept        INTEGER NOT NULL CHECK (swept IN (0, 1)),
    PRIMARY KEY (trial_id, name)
);

CREATE TABLE epoch_metrics (
    trial_id   INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    epoch      INTEGER NOT NULL,
    split      TEXT NOT NULL CHECK (split IN ('train', 'val', 'time')),
    name       TEXT NOT NULL,
    value      REAL,
    value_kind TEXT NOT NULL CHECK (value_kind IN ('finite', 'nan', 'inf', '-inf')),
    PRIMARY KEY (trial_id, epoch, split, name)
);

CREATE TABLE final_metrics (
    trial_id   INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    value      REAL,
    value_kind TEXT NOT NULL CHECK (value_kind IN ('finite', 'nan', 'inf', '-inf')),
    PRIMARY KEY (trial_id, name)
);

CREATE TABLE class_metrics (
    trial_id    INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    class_index INTEGER NOT NULL,
    precision   REAL NOT NULL,
    recall      REAL NOT NULL,
    f1          REAL NOT NULL,
    support     INTEGER NOT NULL,
    PRIMARY KEY (trial_id, class_index)
);

CREATE TABLE confusion_cells (
    trial_id        INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    true_index      INTEGER NOT NULL,
    predicted_index INTEGER NOT NULL,
    count           INTEGER NOT NULL CHECK (count > 0),
    PRIMARY KEY (trial_id, true_index, predicted_index)
);

CREATE TABLE artifacts (
    trial_id INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    kind     TEXT NOT NULL,
    path     TEXT NOT NULL,
    PRIMARY KEY (trial_id, kind)
);
