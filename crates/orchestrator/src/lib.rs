//! Sweep's orchestrator: spec parsing and grid expansion, the results store
//! (SQLite through sqlx), the worker protocol and the scheduler that runs trials in
//! worker processes and resumes after any interruption. Never touches tensors and
//! never prints: progress leaves as [`runner::Progress`] values.

pub mod bench;
pub mod cache;
pub mod diagnostics;
pub mod error;
pub mod fault;
pub mod leaderboard;
pub mod mlflow;
pub mod plan;
pub mod pretrain;
pub mod process;
pub mod protocol;
pub mod query;
pub mod report;
pub mod retry;
pub mod runner;
pub mod search;
pub mod select;
pub mod slurm;
pub mod spec;
pub mod stats;
pub mod store;
pub mod tb;
pub mod worker;

pub use error::{Error, Result};
