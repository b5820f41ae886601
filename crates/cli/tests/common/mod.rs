//! Helpers shared by the CLI's integration tests: the real binary in a
//! folder, and the data sets (the train crate's helper, so both find digits,
//! skin and caltech the same way).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

#[path = "../../../train/tests/common/mod.rs"]
pub mod data;
pub mod mlflow;

/// Runs `sweep ARGS` in `dir`, without a `SWEEP_DB` from the environment.
pub fn sweep(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sweep"))
        .args(args)
        .current_dir(dir)
        .env_remove("SWEEP_DB")
        .output()
        .unwrap()
}

/// Standard output of a command that must have succeeded (else both streams
/// in the panic).
pub fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
