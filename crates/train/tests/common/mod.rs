//! Helpers shared by the integration tests: where the real data sets are.
//!
//! - `digits` (1,797 8×8 images) travels with the repository as
//!   `tests/data/digits.zip`, so a fresh clone's tests train on real images.
//!   The shared copy (`SWEEP_TEST_DATA/digits`) is used when present.
//! - The larger shared sets (`skin`, `caltech101_100`) are only in
//!   `SWEEP_TEST_DATA` (default `../shared/data`): a test that needs one prints
//!   a visible `skipped:` line and returns when it is absent, and fails instead
//!   when `SWEEP_REQUIRE_DATA=1` (set by `.ci/run`).
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Where the shared real data sets live: `SWEEP_TEST_DATA`, default
/// `../shared/data` from the repository root.
pub fn shared_base() -> PathBuf {
    std::env::var_os("SWEEP_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A line on the real standard error, past the test harness's capture, so
/// that `cargo test` shows it even for a passing test.
pub fn visible(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string()
}

/// The digits set: the shared copy when present, else the repository's zip
/// unpacked (once per build) under `CARGO_TARGET_TMPDIR`.
pub fn digits() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shared = shared_base().join("digits");
        if shared.join("labels.csv").is_file() {
            visible(&format!("test data: digits from {}", shared.display()));
            return shared;
        }
        let zip = repo_root().join("crates/train/tests/data/digits.zip");
        let bytes = std::fs::read(&zip)
            .unwrap_or_else(|e| panic!("reading the repository's {}: {e}", zip.display()));
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = tmp.join(format!("digits-{:016x}", fnv1a(&bytes)));
        if !dir.join("labels.csv").is_file() {
            std::fs::create_dir_all(&tmp).unwrap();
            // Unpack beside, then rename into place: another test process that
            // unpacks at the same time either wins the rename or finds it done.
            let part = tempfile::Builder::new()
                .prefix("digits-unpacking-")
                .tempdir_in(&tmp)
                .unwrap();
            zip::ZipArchive::new(std::io::Cursor::new(bytes))
                .and_then(|mut a| a.extract(part.path()))
                .unwrap_or_else(|e| panic!("unpacking {}: {e}", zip.display()));
            let part = part.keep();
            if std::fs::rename(&part, &dir).is_err() {
                assert!(
                    dir.join("labels.csv").is_file(),
                    "could not move {} to {}",
                    part.display(),
                    dir.display()
                );
                let _ = std::fs::remove_dir_all(&part);
            }
        }
        visible(&format!(
            "test data: digits from the repository (crates/train/tests/data/digits.zip, unpacked in {}); no {} here",
            dir.display(),
            shared.display()
        ));
        dir
    })
    .clone()
}

/// A larger shared data set, or None after a visible `skipped:` line when it
/// is absent (a failure instead under `SWEEP_REQUIRE_DATA=1`).
pub fn shared_data(name: &str) -> Option<PathBuf> {
    let p = shared_base().join(name);
    if p.is_dir() {
        return Some(p);
    }
    let why = format!(
        "the shared data set {} is absent (SWEEP_TEST_DATA names the folder holding skin/, digits/, caltech101_100/)",
        p.display()
    );
    assert!(
        std::env::var_os("SWEEP_REQUIRE_DATA").is_none(),
        "SWEEP_REQUIRE_DATA is set and {why}"
    );
    visible(&format!("skipped: {}: {why}", test_name()));
    None
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}
