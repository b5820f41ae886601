//! The worker protocol: the orchestrator writes one [`Job`] as a JSON line to a
//! worker's stdin; the worker answers with JSON lines ([`Event`]) on stdout.
//! When a pruner judges the trial, the orchestrator answers each epoch event
//! with a [`Reply`] line on the same stdin. Plain data only.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sweep_train::{EpochMetrics, TrialConfig, TrialOutcome, TrialStart};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub trial_id: i64,
    pub config: TrialConfig,
    /// The decoded data set (see [`crate::cache`]).
    pub cache: PathBuf,
    /// Folder for the checkpoint and config of this trial.
    pub trial_dir: PathBuf,
    /// `cpu`, or `cuda:N`.
    pub device: String,
    /// The objective's metric name (picks the best epoch when early stopping is off).
    pub objective: String,
    /// The trial's TensorBoard folder, and what to log there.
    pub tensorboard_dir: Option<PathBuf>,
    pub logging: crate::spec::Logging,
    /// The swept parameters' values (and the seed), for the hparams dashboard.
    pub hparams: Vec<(String, serde_json::Value)>,
    /// A pruner judges this trial: after each epoch but the last, the worker
    /// waits for one [`Reply`] line on stdin before going on.
    #[serde(default)]
    pub ask_after_epoch: bool,
    /// The weights file `config.model.init_from` names (a sweep's trial's
    /// checkpoint, found by the orchestrator).
    #[serde(default)]
    pub init_weights: Option<PathBuf>,
}

/// The orchestrator's answer after an epoch, one JSON line on the worker's
/// stdin. End of input means go on (the orchestrator is stopping or gone).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Continue,
    Prune { rule: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Start {
        start: TrialStart,
    },
    Epoch {
        metrics: EpochMetrics,
    },
    Done {
        outcome: Box<TrialOutcome>,
    },
    Error {
        message: String,
    },
    /// The trial stopped on a fault of the machine (see [`crate::fault`]), not
    /// of its own: the attempt is given back and the sweep stops.
    Fault {
        message: String,
    },
}
