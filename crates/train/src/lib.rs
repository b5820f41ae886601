//! Sweep's training crate: image-classification trials on candle.
//!
//! (config, data set, device) in; plain-data events, a report and checkpoints out.
//! It knows nothing of databases, sweeps, processes or terminals, and never prints.

pub mod bench;
pub mod config;
pub mod data;
pub mod early_stop;
pub mod engine;
pub mod error;
mod kernels;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod pretrained;
pub mod probe;
pub mod rng;
pub mod serde_float;
pub mod trainer;

pub use config::TrialConfig;
pub use data::Dataset;
pub use error::{Error, Result};
pub use metrics::Report;
pub use pretrained::InitReport;
pub use probe::{LayerHealth, Probe};
pub use trainer::{
    run_trial, EpochMetrics, Histogram, NoObserver, Observer, StopFlag, StopReason, TrialOptions,
    TrialOutcome, TrialStart,
};

pub use candle_core::Device;
