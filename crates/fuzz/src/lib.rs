//! A mutation fuzzer for the parsers that read what users hand Sweep: the
//! sweep spec, the trial config (`sweep train`), the labels CSV and the image
//! decoding path. It runs on the stable toolchain with no extra tools (the CI
//! machine and a fresh clone have only `cargo`): inputs are the seed corpus in
//! `corpus/<target>/`, mutated byte-wise and with each target's tokens, and
//! spliced together. Every input is run under `catch_unwind` (a panic is a
//! finding), timed (slower than [`SLOW`] is a finding), and measured by the
//! counting allocator the fuzzing binaries install (more than [`MEMORY_CAP`]
//! live at once is a finding; a single request over it is refused, so the
//! decoder's own limit is what has to catch it). Findings are written to
//! `regressions/<target>/`, which the regression test replays on every run.
//!
//! Without coverage feedback (which needs nightly's sanitizer flags or
//! cargo-fuzz), depth comes from the corpus and the tokens: inputs start from
//! valid files, so most mutations reach past the first syntax check.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// An input slower than this is a finding (a hang, or work out of proportion).
/// The largest image the decoder's limits let through (64 megapixels, e.g. a
/// 71-byte BMP that claims 9 × 7,012,353 1-bit pixels, the first long run's
/// one finding at 2 s) takes about 2 s on a busy 2-core machine: bounded by
/// design, not a finding.
pub const SLOW: Duration = Duration::from_secs(5);

/// Live heap above this while one input runs is a finding.
pub const MEMORY_CAP: usize = 1 << 30;

/// Inputs longer than this are cut (the targets' own limits are larger; this
/// keeps mutation cheap).
pub const MAX_INPUT: usize = 64 << 10;

/// What is fuzzed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `SweepSpec::from_toml_str` and, for grids of at most 10,000
    /// combinations, the expansion into trials.
    Spec,
    /// `TrialConfig::from_toml_str` (a `sweep train` config).
    TrialConfig,
    /// The labels CSV reader.
    LabelsCsv,
    /// The image decoding path (`decode_bytes`: format, dimension and
    /// allocation limits, decoding, resizing to 16 × 16 × 3).
    Image,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::Spec,
        Target::TrialConfig,
        Target::LabelsCsv,
        Target::Image,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Spec => "spec",
            Target::TrialConfig => "trial_config",
            Target::LabelsCsv => "labels_csv",
            Target::Image => "image",
        }
    }

    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Runs one input; true when the target accepted it (parsed, decoded).
    /// Errors are the expected answer to bad input; only a panic (or a hang,
    /// or unbounded memory) is a finding.
    pub fn run(self, input: &[u8]) -> bool {
        match self {
            Target::Spec => {
                let text = String::from_utf8_lossy(input);
                match sweep_orchestrator::spec::SweepSpec::from_toml_str(
                    &text,
                    Path::new("fuzz.toml"),
                ) {
                    Ok(spec) => {
                        let combos = spec
                            .grid
                            .iter()
                            .try_fold(1usize, |n, (_, c)| n.checked_mul(c.len()));
                        if combos.is_some_and(|n| n * spec.seeds.len().max(1) <= 10_000) {
                            let _ = spec.expand();
                        }
                        true
                    }
                    Err(_) => false,
                }
            }
            Target::TrialConfig => {
                let text = String::from_utf8_lossy(input);
                sweep_train::TrialConfig::from_toml_str(&text, "fuzz.toml").is_ok()
            }
            Target::LabelsCsv => {
                let text = String::from_utf8_lossy(input);
                match sweep_train::data::csv::parse(&text) {
                    Ok(rows) => {
                        for (_, row) in rows.iter().take(100) {
                            for f in row {
                                let _ = sweep_train::data::csv::shown(f);
                            }
                        }
                        true
                    }
                    Err(_) => false,
                }
            }
            Target::Image => {
                sweep_train::data::decode_bytes(input, Path::new("fuzz.png"), 16, 3).is_ok()
            }
        }
    }

    /// Tokens worth inserting whole (keys, syntax, edge numbers, chunk names).
    pub fn tokens(self) -> &'static [&'static [u8]] {
        match self {
            Target::Spec | Target::TrialConfig => &[
                b"[grid]\n",
                b"[data]\n",
                b"[model]\n",
                b"[train]\n",
                b"[search]\n",
                b"[space]\n",
                b"[pruner]\n",
                b"[[exclude]]\n",
                b"[data.synthetic]\n",
                b"[train.early_stopping]\n",
                b"seeds = ",
                b"name = ",
                b"objective = ",
                b"trial_timeout = ",
                b"model.hidden = ",
                b"hidden = ",
                b"image_size = ",
                b"epochs = ",
                b"batch_size = ",
                b"learning_rate = ",
                b"dropout = ",
                b"augment = ",
                b"method = \"tpe\"\n",
                b"{ log_uniform = [",
                b"{ uniform = [",
                b"{ int = [",
                b"{ choice = [",
                b"step = ",
                b"log = true",
                b"trials = ",
                b"= [",
                b"]",
                b"[",
                b"\"",
                b"'",
                b"=",
                b",",
                b"{",
                b"}",
                b"\n",
                b".",
                b"0",
                b"-1",
                b"1e308",
                b"-1e308",
                b"nan",
                b"inf",
                b"-inf",
                b"18446744073709551615",
                b"9223372036854775807",
                b"-9223372036854775808",
                b"4294967296",
                b"0.0",
                b"1e-300",
                b"true",
                b"false",
                b"\"\"",
                b"[]",
                b"[[]]",
                b"{}",
                b"\"90s\"",
                b"\"1h30m\"",
                b"\"0s\"",
                b"\"99999999d\"",
                b"\"kaiming_normal\"",
                b"\"mlp\"",
                b"\"cnn\"",
                b"\"hflip\"",
                b"\"shift_scale_rotate\"",
                b"\"val.macro_f1\"",
                b"\"\\u0000\"",
            ],
            Target::LabelsCsv => &[
                b"\"",
                b"\"\"",
                b",",
                b"\n",
                b"\r\n",
                b"\r",
                b"\xef\xbb\xbf",
                b"\0",
                b"filename,label\n",
                b"a.png,x\n",
                b"../",
                b"/",
                b"\xff",
            ],
            Target::Image => &[
                b"\x89PNG\r\n\x1a\n",
                b"IHDR",
                b"IDAT",
                b"IEND",
                b"PLTE",
                b"tRNS",
                b"\xff\xd8\xff",
                b"\xff\xd9",
                b"\xff\xc0",
                b"\xff\xc4",
                b"\xff\xda",
                b"BM",
                b"\0\0\0\0",
                b"\xff\xff\xff\xff",
                b"\x7f\xff\xff\xff",
                b"\0\x01\x86\xa0",
                b"\x00\x00\x10\x00",
            ],
        }
    }
}

/// A small, fast, seeded generator (xorshift64*): runs repeat exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One mutation of `input` (1 to 8 edits), maybe spliced with `other`.
pub fn mutate(input: &[u8], other: &[u8], tokens: &[&[u8]], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    // mostly one or two edits (an input that stays nearly valid reaches the
    // checks behind the syntax), sometimes a burst
    let edits = if rng.below(4) == 0 {
        1 + rng.below(8)
    } else {
        1 + rng.below(2)
    };
    for _ in 0..edits {
        let len = v.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                v.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                v.drain(i..i + n);
            }
            4 if len > 0 => {
                // repeat a slice (long lines, deep nesting)
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let piece = v[i..i + n].to_vec();
                let at = rng.below(len + 1);
                for _ in 0..1 + rng.below(16) {
                    v.splice(at..at, piece.iter().copied());
                }
            }
            5 | 6 => {
                let t = tokens[rng.below(tokens.len())];
                let i = rng.below(len + 1);
                v.splice(i..i, t.iter().copied());
            }
            7 if !other.is_empty() => {
                // splice: our head, the other's tail
                let a = rng.below(len + 1);
                let b = rng.below(other.len());
                v.truncate(a);
                v.extend_from_slice(&other[b..]);
            }
            8 if len > 0 => {
                v.truncate(rng.below(len));
            }
            9 if len >= 4 => {
                // an interesting 32-bit value (sizes, counts) at a random spot
                let vals: [u32; 6] = [0, 1, 0x7fff_ffff, 0xffff_ffff, 100_000, 65_536];
                let x = vals[rng.below(vals.len())].to_be_bytes();
                let i = rng.below(len - 3);
                v[i..i + 4].copy_from_slice(&x);
            }
            _ => {}
        }
    }
    v.truncate(MAX_INPUT);
    v
}

/// The live-heap counter of the fuzzing binaries' allocator.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MEMORY_CAP {
            // refused: the decoder must have stopped it before asking
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

/// Live heap now, and the peak since [`reset_peak`].
pub fn heap() -> (usize, usize) {
    (LIVE.load(Ordering::Relaxed), PEAK.load(Ordering::Relaxed))
}

pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// What a fuzzing run found.
#[derive(Debug, Default)]
pub struct Report {
    pub inputs: u64,
    /// Inputs the target accepted (parsed, decoded): how deep the run went.
    pub accepted: u64,
    pub seconds: f64,
    /// (input, what went wrong)
    pub findings: Vec<(Vec<u8>, String)>,
    pub slowest: Duration,
    /// The most heap any one input took above what was live before it.
    pub peak_bytes: usize,
}

/// The files of a corpus folder, sorted by name.
pub fn read_corpus(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

/// A target's seed corpus (`corpus/<target>/`).
pub fn seeds(target: Target) -> Vec<Vec<u8>> {
    read_corpus(&crate_dir().join("corpus").join(target.name()))
        .into_iter()
        .map(|(_, b)| b)
        .collect()
}

/// Runs one input and judges it: `Some(what)` for a finding.
pub fn check(target: Target, input: &[u8]) -> Option<String> {
    judge(target, input).err()
}

/// Runs one input: whether the target accepted it, or the finding.
pub fn judge(target: Target, input: &[u8]) -> Result<bool, String> {
    verdict(|| target.run(input))
}

/// Runs `f` as a target run: its answer, or a panic, a slow run or unbounded
/// memory as a finding.
pub fn verdict(f: impl FnOnce() -> bool + std::panic::UnwindSafe) -> Result<bool, String> {
    let base = heap().0;
    reset_peak();
    let t = Instant::now();
    let r = std::panic::catch_unwind(f);
    let took = t.elapsed();
    let peak = heap().1.saturating_sub(base);
    match r {
        Err(p) => Err(format!(
            "panic: {}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("(not a string)")
        )),
        Ok(_) if took > SLOW => Err(format!("slow: {:.1} s", took.as_secs_f64())),
        Ok(_) if peak > MEMORY_CAP => Err(format!("memory: {} MiB live", peak >> 20)),
        Ok(accepted) => Ok(accepted),
    }
}

/// Fuzzes `target` from `corpus` for `inputs` inputs or until `until`.
/// `before` sees each input before it runs (the binary's watchdog keeps it).
pub fn fuzz(
    target: Target,
    corpus: &[Vec<u8>],
    inputs: u64,
    until: Duration,
    seed: u64,
    before: &dyn Fn(&[u8]),
) -> Report {
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let mut pool: Vec<Vec<u8>> = corpus.to_vec();
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let tokens = target.tokens();
    let start = Instant::now();
    // panics are findings, counted here, not printed thousands of times
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while report.inputs < inputs && start.elapsed() < until {
        let a = &pool[rng.below(pool.len())];
        let b = &pool[rng.below(pool.len())];
        let input = mutate(a, b, tokens, &mut rng);
        before(&input);
        let base = heap().0;
        reset_peak();
        let t = Instant::now();
        let verdict = judge(target, &input);
        report.slowest = report.slowest.max(t.elapsed());
        report.peak_bytes = report.peak_bytes.max(heap().1.saturating_sub(base));
        report.inputs += 1;
        report.accepted += u64::from(verdict == Ok(true));
        if let Err(what) = verdict {
            report.findings.push((input.clone(), what));
            if report.findings.len() >= 20 {
                break;
            }
        } else if verdict == Ok(true) || rng.below(256) == 0 {
            // Keep inputs the target accepted (and a few it refused): later
            // inputs start from them, so the run wanders from the seeds while
            // staying mostly valid.
            if pool.len() < 4096 {
                pool.push(input);
            } else {
                let i = corpus.len() + rng.below(pool.len() - corpus.len().min(pool.len()));
                if i < pool.len() {
                    pool[i] = input;
                }
            }
        }
    }
    std::panic::set_hook(hook);
    report.seconds = start.elapsed().as_secs_f64();
    report
}

/// Where the crate keeps its corpus and its regressions.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A finding's file name: the target, a hash of the input.
pub fn finding_name(input: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutation_is_seeded_and_bounded() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let x = mutate(
            b"name = \"x\"\n",
            b"[grid]\n",
            Target::Spec.tokens(),
            &mut a,
        );
        let y = mutate(
            b"name = \"x\"\n",
            b"[grid]\n",
            Target::Spec.tokens(),
            &mut b,
        );
        assert_eq!(x, y);
        let mut r = Rng::new(1);
        let mut v = vec![b'a'; 10];
        for _ in 0..2000 {
            v = mutate(&v, &v, Target::LabelsCsv.tokens(), &mut r);
            assert!(v.len() <= MAX_INPUT);
        }
    }

    #[test]
    fn a_panic_is_a_finding_an_error_is_not() {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = verdict(|| panic!("index out of bounds"));
        std::panic::set_hook(hook);
        assert_eq!(r, Err("panic: index out of bounds".to_string()));
        assert_eq!(
            judge(Target::Image, b""),
            Ok(false),
            "an empty image is an error, not a finding"
        );
        assert_eq!(judge(Target::LabelsCsv, b"a,b\n1,2\n"), Ok(true));
    }
}
