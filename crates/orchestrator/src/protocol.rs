//! The worker protocol: the orchestrator writes one [`Job`] as JSON to a worker's
//! stdin; the worker answers with JSON lines ([`Event`]) on stdout. Plain data only.

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
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Start { start: TrialStart },
    Epoch { metrics: EpochMetrics },
    Done { outcome: Box<TrialOutcome> },
    Error { message: String },
}
