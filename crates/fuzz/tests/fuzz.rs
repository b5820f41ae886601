//! The fuzzing targets in CI: every regression input found so far and every
//! seed still answers without a panic, a hang or unbounded memory; then a
//! short fuzzing run per target (`SWEEP_FUZZ_SECONDS`, default 15 s each).
//! Long runs (millions of inputs) are `cargo run --release -p sweep-fuzz`;
//! their results are in docs/RELIABILITY.md.

use std::time::Duration;

use sweep_fuzz::{check, crate_dir, fuzz, judge, read_corpus, seeds, Counting, Target};

#[global_allocator]
static ALLOC: Counting = Counting;

/// One test, not two: the fuzzing loop silences the (process-wide) panic
/// hook and measures the (process-wide) heap, which a test running beside it
/// would disturb.
#[test]
fn seeds_and_regressions_pass_then_a_short_fuzz_run_finds_nothing() {
    seeds_and_regressions_answer_without_a_panic();
    a_short_fuzz_run_finds_nothing();
}

fn seeds_and_regressions_answer_without_a_panic() {
    let mut replayed = 0;
    for t in Target::ALL {
        let seeds = read_corpus(&crate_dir().join("corpus").join(t.name()));
        assert!(!seeds.is_empty(), "{}: no seed corpus", t.name());
        let found = read_corpus(&crate_dir().join("regressions").join(t.name()));
        for (path, input) in seeds.iter().chain(&found) {
            if let Some(what) = check(t, input) {
                panic!("{}: {what}", path.display());
            }
            replayed += 1;
        }
        // the seeds are valid input: fuzzing starts deep
        for (path, input) in &seeds {
            assert_eq!(
                judge(t, input),
                Ok(true),
                "{}: a seed the target refuses",
                path.display()
            );
        }
    }
    eprintln!("replayed {replayed} seeds and regressions");
}

fn a_short_fuzz_run_finds_nothing() {
    let seconds: f64 = std::env::var("SWEEP_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15.0);
    let mut failures = Vec::new();
    for t in Target::ALL {
        let corpus = seeds(t);
        let r = fuzz(
            t,
            &corpus,
            u64::MAX,
            Duration::from_secs_f64(seconds),
            0x5eed,
            &|_| {},
        );
        eprintln!(
            "fuzz {}: {} inputs ({} accepted) in {:.1} s, slowest {:.1} ms, most heap {:.1} MiB, {} findings",
            t.name(),
            r.inputs,
            r.accepted,
            r.seconds,
            r.slowest.as_secs_f64() * 1e3,
            r.peak_bytes as f64 / (1 << 20) as f64,
            r.findings.len()
        );
        assert!(r.inputs > 100, "{}: only {} inputs", t.name(), r.inputs);
        for (input, what) in r.findings {
            let shown: String = String::from_utf8_lossy(&input).chars().take(300).collect();
            failures.push(format!("{}: {what}: {shown:?}", t.name()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
