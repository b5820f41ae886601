//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared real data sets: `SWEEP_TEST_DATA`, default `../shared/data` from the
/// repository root.
pub fn data_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("SWEEP_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let p = base.join(name);
    assert!(p.is_dir(), "test data set {} not found; set SWEEP_TEST_DATA to the folder holding skin/, digits/, caltech101_100/", p.display());
    p
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
