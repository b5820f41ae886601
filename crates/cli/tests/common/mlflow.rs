//! A sweep read back from MLflow with MLflow's own Python client
//! (scripts/mlflow-readback.py, run with SWEEP_MLFLOW_PYTHON).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Everything of an experiment, as MLflow's Python client reads it.
pub fn readback(python: &str, url: &str, experiment: &str) -> Value {
    readback_with(python, url, experiment, &[], None)
}

/// As [`readback`], with environment variables for the client and the
/// histories of `only` these metrics.
pub fn readback_with(
    python: &str,
    url: &str,
    experiment: &str,
    env: &[(&str, &str)],
    only: Option<&str>,
) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mlflow-readback.py");
    let o = Command::new(python)
        .arg(script)
        .args([url, experiment])
        .args(only)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "readback failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// No run was ever created twice and deleted (MLflow's trash is empty).
pub fn none_deleted(rb: &Value) {
    assert_eq!(rb["deleted_runs"], 0, "runs were created twice: {rb:#}");
}

pub fn children(rb: &Value) -> Vec<&Value> {
    rb["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["tags"]["sweep.role"] == "trial")
        .collect()
}

pub fn parents(rb: &Value) -> Vec<&Value> {
    rb["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["tags"]["sweep.role"] == "parent")
        .collect()
}

/// The distinct trial keys of these runs, sorted.
pub fn trial_keys<'a>(runs: &[&'a Value]) -> Vec<&'a str> {
    let mut keys: Vec<&str> = runs
        .iter()
        .map(|r| r["tags"]["sweep.trial_key"].as_str().unwrap())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}
