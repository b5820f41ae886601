//! `sweep-fuzz [TARGET ...] [--inputs N] [--seconds S] [--seed N]`: fuzzes the
//! targets (default: all four) one after another, prints a table, writes each
//! finding to `crates/fuzz/regressions/<target>/` (replayed by the tests) and
//! exits 1 when there is one. A watchdog ends the run, saving the input, when
//! one input runs for more than a minute (a hang that never returns).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sweep_fuzz::{crate_dir, finding_name, fuzz, seeds, Counting, Target};

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() -> ExitCode {
    let mut targets = Vec::new();
    let mut inputs = u64::MAX;
    let mut seconds = 60.0;
    let mut seed = 1u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| {
                    eprintln!("error: {name} needs a number");
                    std::process::exit(2)
                })
        };
        match a.as_str() {
            "--inputs" => inputs = value("--inputs") as u64,
            "--seconds" => seconds = value("--seconds"),
            "--seed" => seed = value("--seed") as u64,
            t => match Target::parse(t) {
                Some(t) => targets.push(t),
                None => {
                    eprintln!(
                        "error: unknown target `{t}`; targets: spec, trial_config, labels_csv, image"
                    );
                    return ExitCode::from(2);
                }
            },
        }
    }
    if targets.is_empty() {
        targets = Target::ALL.to_vec();
    }
    watchdog();
    println!("| target | inputs | accepted | seconds | inputs/s | findings | slowest input | most heap for one input |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut any = false;
    for t in targets {
        let corpus = seeds(t);
        *TARGET.lock().unwrap() = Some(t);
        let r = fuzz(
            t,
            &corpus,
            inputs,
            Duration::from_secs_f64(seconds),
            seed,
            &|input| {
                let mut c = CURRENT.lock().unwrap();
                c.clear();
                c.extend_from_slice(input);
                STARTED.store(epoch_ms(), Ordering::Relaxed);
            },
        );
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {} | {:.1} ms | {:.1} MiB |",
            t.name(),
            r.inputs,
            r.accepted,
            r.seconds,
            r.inputs as f64 / r.seconds.max(1e-9),
            r.findings.len(),
            r.slowest.as_secs_f64() * 1e3,
            r.peak_bytes as f64 / (1 << 20) as f64
        );
        for (input, what) in &r.findings {
            any = true;
            let path = save(t, input);
            eprintln!("{}: {what}: {}", t.name(), path.display());
        }
    }
    if any {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

static CURRENT: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static TARGET: Mutex<Option<Target>> = Mutex::new(None);
static STARTED: AtomicU64 = AtomicU64::new(0);

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn save(t: Target, input: &[u8]) -> std::path::PathBuf {
    let dir = crate_dir().join("regressions").join(t.name());
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(finding_name(input));
    let _ = std::fs::write(&path, input);
    path
}

/// Ends the process when one input has run for a minute, saving it.
fn watchdog() {
    let started = Instant::now();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        let s = STARTED.load(Ordering::Relaxed);
        if s > 0 && epoch_ms().saturating_sub(s) > 60_000 {
            let input = CURRENT.lock().unwrap().clone();
            if let Some(t) = *TARGET.lock().unwrap() {
                let path = save(t, &input);
                eprintln!(
                    "{}: hang: one input ran for more than a minute ({:.0} s into the run): {}",
                    t.name(),
                    started.elapsed().as_secs_f64(),
                    path.display()
                );
            }
            std::process::exit(1);
        }
    });
}
