//! What a sweep runs, before anything runs: the spec expanded and its data
//! sets decoded once ([`prepare`]), trials as content-addressed rows
//! ([`trial_key`], [`new_trial`]), the manifest that workers on other machines
//! read ([`Manifest`]), and the sweep recorded in the store ([`record`],
//! [`plan`]). The scheduler ([`crate::runner`]) takes it from there.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use serde_json::Value as Json;
use sweep_train::{Dataset, TrialConfig};

use crate::cache;
use crate::error::{Error, Result};
use crate::spec::{Logging, SweepSpec, TrialPlan};
use crate::store::compact::ConfigBase;
use crate::store::{DbLocation, NewSweep, NewTrial, Store};

/// How a sweep is run (resolved by the CLI from arguments and environment).
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub jobs: usize,
    pub db: DbLocation,
    pub results: PathBuf,
    pub fail_fast: bool,
    /// Attempts per trial before a failure is final.
    pub max_attempts: i64,
    /// The executable that runs `worker` (normally the current one).
    pub worker_exe: PathBuf,
    /// Devices workers are pinned to, each taking `per_device` trials at once.
    pub devices: Vec<String>,
    pub per_device: usize,
    /// Compute threads per worker (`RAYON_NUM_THREADS`).
    pub threads_per_worker: usize,
    /// Seconds without a heartbeat after which a session's running trials are
    /// reclaimed by others; sessions beat every quarter of it.
    pub lease_seconds: f64,
    /// Refuse to run when the data checks warn (`sweep run --strict-data`).
    pub strict_data: bool,
    /// Re-queue the sweep's failed trials with fresh attempts (`--retry-failed`).
    pub retry_failed: bool,
    /// Stop and fail a trial running longer than this many seconds
    /// (`--trial-timeout`; else the spec's `trial_timeout`).
    pub trial_timeout: Option<f64>,
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub fn pid_alive(pid: i64) -> bool {
    // A zombie (killed, not yet reaped) is dead; so is a reused pid that is no
    // longer a `run` or `worker` of this tool.
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if state == Some("Z") || state == Some("X") {
            return false;
        }
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            if !args.iter().any(|a| *a == b"run" || *a == b"worker") {
                return false;
            }
        }
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A 128-bit content hash as hex.
pub fn content_hash(bytes: &[u8]) -> String {
    format!("{:016x}{:016x}", fnv(1, bytes), fnv(2, bytes))
}

/// The settings that decide decoding (everything else about `[data]` is per batch).
pub(crate) fn decode_key(c: &TrialConfig) -> String {
    let d = &c.data;
    serde_json::json!({
        "root": d.root, "labels": d.labels, "file_column": d.file_column, "label_column": d.label_column,
        "image_dirs": d.image_dirs, "synthetic": d.synthetic, "image_size": d.image_size,
        "channels": d.channels, "on_bad_image": d.on_bad_image,
    })
    .to_string()
}

pub use crate::store::compact::flatten_params;

/// Text of one swept value, as `trial_params.value_text` stores it.
pub fn param_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn git_commit(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Data sets by decode key, decoded once and cached under `results/<sweep>/cache/`.
pub struct Prepared {
    pub plans: Vec<TrialPlan>,
    pub caches: HashMap<String, (PathBuf, String)>,
    pub classes: Vec<(String, usize)>,
    pub dataset: String,
    pub fingerprint: String,
    /// What the data checks found in the base data set (`sweep data inspect`'s
    /// warnings: duplicates across the split of the first seed, odd colour
    /// modes, tiny validation classes); empty when all is well.
    pub data_warnings: Vec<String>,
}

impl Prepared {
    /// The fingerprint of the data set a trial decodes.
    pub fn fingerprint_of(&self, p: &TrialPlan) -> &str {
        if self.caches.len() == 1 {
            // (one data set: no need to build the trial's decode settings)
            return &self.caches.values().next().expect("one").1;
        }
        &self.caches[&decode_key(&p.config)].1
    }

    /// Decode settings → data-set fingerprint.
    pub fn fingerprints(&self) -> BTreeMap<String, String> {
        self.caches
            .iter()
            .map(|(k, (_, fp))| (k.clone(), fp.clone()))
            .collect()
    }
}

/// A trial's content address from its canonical config and its data set's fingerprint.
pub fn trial_key(config: &TrialConfig, fingerprint: &str) -> String {
    key_of_json(
        serde_json::to_value(config).expect("config serializes"),
        fingerprint,
    )
}

/// Settings added to the trial config after trial keys were first stored
/// (JSON pointers). While one holds its default it is left out of the key, so
/// a sweep recorded before it existed keeps its keys: a resume re-runs nothing.
/// A setting added later goes at the end of this list (and of its struct).
pub const ADDED_SETTINGS: &[&str] = &[
    "/data/augmentation/crop_scale",
    "/data/augmentation/crop_ratio",
    "/data/augmentation/hue_shift_limit",
    "/data/augmentation/sat_shift_limit",
    "/data/augmentation/val_shift_limit",
    "/data/augmentation/grid_num_steps",
    "/data/augmentation/grid_distort_limit",
    "/data/augmentation/elastic_alpha",
    "/data/augmentation/elastic_sigma",
    "/data/augmentation/noise_std_range",
    "/data/augmentation/noise_mean_range",
    "/data/augmentation/noise_per_channel",
    "/data/augmentation/num_holes_range",
    "/data/augmentation/hole_height_range",
    "/data/augmentation/hole_width_range",
    "/data/augmentation/hole_fill",
    "/model/init_from",
    "/train/freeze",
    "/train/freeze_epochs",
];

/// [`trial_key`] of a config already serialized to JSON.
fn key_of_json(mut config: Json, fingerprint: &str) -> String {
    static DEFAULTS: std::sync::OnceLock<Json> = std::sync::OnceLock::new();
    let defaults = DEFAULTS
        .get_or_init(|| serde_json::to_value(TrialConfig::default()).expect("config serializes"));
    for path in ADDED_SETTINGS {
        let (parent, leaf) = path.rsplit_once('/').expect("a JSON pointer");
        let default = defaults.pointer(path);
        if let Some(table) = config.pointer_mut(parent).and_then(Json::as_object_mut) {
            if table.get(leaf) == default {
                table.remove(leaf);
            }
        }
    }
    content_hash(format!("{config}\n{fingerprint}").as_bytes())
}

/// The row to insert for a trial plan: its key, canonical config and every
/// parameter, flagged swept when it is one of `swept`.
pub fn new_trial(p: &TrialPlan, key: String, swept: &[String]) -> NewTrial {
    let json = serde_json::to_value(&p.config).expect("config serializes");
    let text = json.to_string();
    let mut flat = Vec::new();
    flatten_params("", &json, &mut flat);
    NewTrial {
        key,
        config_json: text,
        base: None,
        seed: p.seed,
        params: flat
            .into_iter()
            .map(|(n, k, t, v)| {
                let s = swept.contains(&n);
                (n, k, t, v, s)
            })
            .collect(),
    }
}

/// The row of a grid trial, stored against `base`: its config as the
/// difference from the base and rows for its swept settings only (the rest
/// are written when it is claimed); its key as [`trial_key`] makes it (the
/// config is serialized once for both).
pub fn grid_trial(p: &TrialPlan, fingerprint: &str, swept: &[String], base: &GridBase) -> NewTrial {
    let json = serde_json::to_value(&p.config).expect("config serializes");
    let Some(text) = crate::store::compact::stored_difference(&json, &base.json) else {
        return new_trial(p, key_of_json(json, fingerprint), swept);
    };
    let params = swept
        .iter()
        .filter_map(|name| {
            let v = crate::spec::get_path(&json, name)?;
            let mut leaf = Vec::new();
            flatten_params(name, v, &mut leaf);
            // (a setting that is a table is not itself a row)
            leaf.retain(|l| l.0 == *name);
            Some(leaf)
        })
        .flatten()
        .map(|(n, k, t, v)| (n, k, t, v, true))
        .collect();
    NewTrial {
        key: key_of_json(json, fingerprint),
        config_json: text,
        base: Some(Arc::clone(&base.row)),
        seed: p.seed,
        params,
    }
}

/// The base a grid's trials are stored against.
pub struct GridBase {
    pub row: Arc<ConfigBase>,
    pub json: Json,
}

/// The spec's base settings, canonical, with the first seed (what most of a
/// grid's trials share).
pub fn grid_base(spec: &SweepSpec) -> GridBase {
    let mut c = spec.base.clone();
    c.train.seed = spec.seeds.first().copied().unwrap_or(c.train.seed);
    let json = serde_json::to_value(crate::spec::canonicalize(c)).expect("config serializes");
    let text = json.to_string();
    GridBase {
        row: Arc::new(ConfigBase {
            hash: content_hash(text.as_bytes()),
            json: text,
        }),
        json,
    }
}

/// A trial's swept values and seed as one line of text (`a=1 b=x seed=2`).
pub fn params_line(swept: &BTreeMap<String, Json>, seed: u64) -> String {
    swept
        .iter()
        .map(|(k, v)| format!("{k}={}", param_text(v)))
        .chain(std::iter::once(format!("seed={seed}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What running the trials of a sweep needs beyond each trial's row, written to
/// `results/<sweep>/manifest.json` by `sweep run` so that workers on other
/// machines (`sweep worker --db URL --sweep NAME`) can run them without the spec
/// file or decoding anything: the data-set caches by decode settings and the
/// trials of the current spec.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub sweep: String,
    pub objective: String,
    pub logging: Logging,
    /// The swept parameters' dotted paths, in spec order.
    pub grid: Vec<String>,
    /// Decode settings (see `decode_key`) → data-set cache file, relative to the
    /// sweep's folder.
    pub caches: BTreeMap<String, String>,
    /// Trial key → its swept parameters and seed as text, for every trial of the
    /// current spec (others in the database, from an older spec, are left alone).
    /// Empty for a search, whose trials are proposed as it goes.
    pub trials: BTreeMap<String, String>,
    /// A search (random, TPE): what proposing needs.
    #[serde(default)]
    pub search: Option<crate::search::driver::SearchPlan>,
    /// When trials are stopped early for losing.
    #[serde(default)]
    pub pruner: crate::search::PrunerSettings,
    /// The spec's `trial_timeout` in seconds (`--trial-timeout` overrides).
    #[serde(default)]
    pub trial_timeout: Option<f64>,
    /// `model.init_from` → the weights file it names (see [`crate::pretrain`]).
    #[serde(default)]
    pub init_weights: BTreeMap<String, PathBuf>,
}

pub const MANIFEST: &str = "manifest.json";

impl Manifest {
    /// `keys`: the keys of `prep.plans`, in order.
    pub fn new(spec: &SweepSpec, prep: &Prepared, keys: &[String], results: &Path) -> Manifest {
        let sweep_dir = results.join(&spec.name);
        let caches = prep
            .caches
            .iter()
            .map(|(k, (path, _))| {
                let rel = path.strip_prefix(&sweep_dir).unwrap_or(path);
                (k.clone(), rel.display().to_string())
            })
            .collect();
        let trials = prep
            .plans
            .iter()
            .zip(keys)
            .map(|(p, k)| (k.clone(), params_line(&p.swept, p.seed)))
            .collect();
        Manifest {
            sweep: spec.name.clone(),
            objective: spec.objective.clone(),
            logging: spec.logging.clone(),
            grid: spec.swept_keys(),
            caches,
            trials,
            search: search_plan(spec, prep),
            pruner: spec.pruner.clone(),
            trial_timeout: spec.trial_timeout,
            init_weights: BTreeMap::new(),
        }
    }

    /// Whether a waiting trial with this key is one this sweep runs: every
    /// trial of a search (a rerun with another space is refused when
    /// recording), the current spec's trials of a grid.
    pub(crate) fn runs(&self, key: &str) -> bool {
        self.search.is_some() || self.trials.contains_key(key)
    }

    /// A trial's swept values and seed as text, for progress lines.
    pub(crate) fn params_of(&self, key: &str, config_json: &str) -> String {
        if let Some(t) = self.trials.get(key) {
            return t.clone();
        }
        let Ok(c) = serde_json::from_str::<Json>(config_json) else {
            return String::new();
        };
        let swept = self
            .grid
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    crate::spec::get_path(&c, p).cloned().unwrap_or(Json::Null),
                )
            })
            .collect();
        let seed = crate::spec::get_path(&c, "train.seed")
            .and_then(Json::as_u64)
            .unwrap_or(0);
        params_line(&swept, seed)
    }

    /// Writes the manifest atomically (temporary file, then rename).
    pub fn write(&self, results: &Path) -> Result<PathBuf> {
        let dir = results.join(&self.sweep);
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
            path: dir.clone(),
            source: e,
        })?;
        let path = dir.join(MANIFEST);
        let tmp = dir.join(format!(".{MANIFEST}.{}", std::process::id()));
        let text = serde_json::to_vec(self).expect("manifest serializes");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::Io {
                path: path.clone(),
                source: e,
            })?;
        Ok(path)
    }

    /// Reads the manifest a `sweep run` wrote; the error says which path this
    /// host could not see (the results folder must be shared by every node).
    pub fn read(results: &Path, sweep: &str) -> Result<Manifest> {
        let dir = results.join(sweep);
        let path = dir.join(MANIFEST);
        let abs = std::path::absolute(&path).unwrap_or(path.clone());
        let text = std::fs::read(&path).map_err(|e| {
            Error::Other(format!(
                "this worker (host {}) cannot read the sweep's folder: {}: {e}. The results folder (--results) must be on a file system shared by every machine that runs workers, at the same path, and `sweep run` must have recorded the sweep there first",
                hostname(),
                abs.display()
            ))
        })?;
        let m: Manifest = serde_json::from_slice(&text)
            .map_err(|e| Error::Other(format!("{}: not a sweep manifest: {e}", abs.display())))?;
        for file in m.caches.values() {
            let p = dir.join(file);
            if !p.is_file() {
                return Err(Error::Other(format!(
                    "this worker (host {}) cannot see the decoded data set {}; the results folder must be on a shared file system",
                    hostname(),
                    std::path::absolute(&p).unwrap_or(p.clone()).display()
                )));
            }
        }
        Ok(m)
    }

    /// The data-set cache a trial's configuration decodes to.
    pub(crate) fn cache_for(&self, config_json: &str, results: &Path) -> Option<PathBuf> {
        let c: TrialConfig = serde_json::from_str(config_json).ok()?;
        self.caches
            .get(&decode_key(&c))
            .map(|f| results.join(&self.sweep).join(f))
    }
}

/// What a search's workers need to propose (None for a grid).
fn search_plan(spec: &SweepSpec, prep: &Prepared) -> Option<crate::search::driver::SearchPlan> {
    spec.is_search().then(|| crate::search::driver::SearchPlan {
        settings: spec.search.clone(),
        space: spec.space.clone(),
        base: spec.base.clone(),
        seeds: spec.seeds.clone(),
        objective: spec.objective.clone(),
        maximize: spec.direction == crate::spec::Direction::Maximize,
        space_hash: space_hash(spec),
        fingerprints: prep.fingerprints(),
    })
}

/// Identifies what a search's proposals depend on: the space, the base trial
/// and the seeds (not the budget, the sampler or its seed: raising `trials`
/// or switching from random to TPE continues the same search).
pub fn space_hash(spec: &SweepSpec) -> String {
    content_hash(
        format!(
            "{}\n{}\n{:?}",
            spec.space.canonical(),
            serde_json::to_string(&spec.base).expect("config serializes"),
            spec.seeds
        )
        .as_bytes(),
    )
}

/// Expands the spec (a grid's trials; a search's data sets) and decodes each
/// distinct data set once.
pub fn prepare(spec: &SweepSpec, results: &Path) -> Result<Prepared> {
    let variants = spec.decode_variants()?;
    let mut caches = HashMap::new();
    let mut classes = Vec::new();
    let mut base_fp = None;
    let mut data_warnings = Vec::new();
    let base_key = decode_key(&spec.base);
    let mut previous: Option<&sweep_train::config::DataConfig> = None;
    for p in &variants {
        // (a grid's trials mostly share their data settings: compared, not
        // written out as a decode key 50,000 times)
        if previous == Some(&p.config.data) {
            continue;
        }
        previous = Some(&p.config.data);
        let k = decode_key(&p.config);
        if caches.contains_key(&k) {
            continue;
        }
        let ds = Dataset::load(&p.config.data)?;
        if classes.is_empty() {
            classes = ds.classes.iter().cloned().zip(ds.class_counts()).collect();
        }
        check_against_data(spec, &variants, &ds)?;
        let fp = format!("{:016x}", ds.fingerprint());
        let path = results
            .join(&spec.name)
            .join("cache")
            .join(format!("{fp}.dataset"));
        if cache::read(&path).is_err() {
            cache::write(&ds, &path)?;
        }
        if k == base_key || base_fp.is_none() {
            base_fp = Some(fp.clone());
            let seed = spec.seeds.first().copied().unwrap_or(spec.base.train.seed);
            data_warnings = sweep_train::data::inspect::inspect(&p.config.data, &ds, seed).warnings;
        }
        caches.insert(k, (path, fp));
    }
    let d = &spec.base.data;
    let dataset = match (&d.root, &d.synthetic) {
        (Some(r), _) => r.display().to_string(),
        (None, Some(s)) => format!(
            "synthetic(classes={}, per_class={}, image_size={}, seed={})",
            s.classes, s.per_class, s.image_size, s.seed
        ),
        _ => String::new(),
    };
    // The sweep is bound to its base data set; grid candidates such as another
    // image size decode the same source differently and do not change it.
    // A grid's variants are its trials (moved, not copied: 50,000 configs).
    let plans = if spec.is_search() {
        Vec::new()
    } else {
        variants
    };
    Ok(Prepared {
        plans,
        caches,
        classes,
        dataset,
        fingerprint: base_fp.unwrap_or_default(),
        data_warnings,
    })
}

/// Settings that can only be checked against the data (class counts) are checked
/// once, before any trial runs, and reported against the spec's line.
fn check_against_data(spec: &SweepSpec, plans: &[TrialPlan], ds: &Dataset) -> Result<()> {
    let origin = spec.path.display().to_string();
    let at = |key: &str, msg: String| {
        let k = if spec.swept_keys().iter().any(|p| p == key) {
            format!("{}.{key}", if spec.is_search() { "space" } else { "grid" })
        } else {
            key.to_string()
        };
        let location = match sweep_train::config::find_key_line(&spec.text, &k) {
            Some(l) => format!("{origin}:{l}"),
            None => origin.clone(),
        };
        Error::Spec {
            location,
            message: format!("`{k}` {msg}"),
        }
    };
    for p in plans {
        if let sweep_train::config::ClassWeights::List(w) = &p.config.train.class_weights {
            if w.len() != ds.num_classes() {
                return Err(at(
                    "train.class_weights",
                    format!(
                        "has {} weights, but the data has {} classes ({})",
                        w.len(),
                        ds.num_classes(),
                        ds.classes.join(", ")
                    ),
                ));
            }
        }
    }
    for p in plans {
        let counts = ds.class_counts();
        let keep = |n: usize| p.config.data.max_per_class.map_or(n, |m| n.min(m));
        if let Some((i, n)) = counts.iter().enumerate().find(|(_, n)| keep(**n) < 2) {
            return Err(at("data.root", format!("class `{}` has {} image(s); a train/validation split needs at least 2 per class", ds.classes[i], n)));
        }
    }
    Ok(())
}

/// How the recording run holds the sweep.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// A local run: refuse when another live run holds the sweep.
    Exclusive,
    /// A submitter of workers that share the sweep (Slurm): no exclusivity.
    Shared,
}

/// Records the sweep and its trials without running anything; returns the store,
/// sweep id, how many trials were new and this run's session.
/// What recording a sweep leaves: the open store, the sweep, how many trials
/// were added, the session, the planned trials' keys (in plan order) and the
/// weights files `model.init_from` names.
pub(crate) struct Recorded {
    pub store: Store,
    pub sweep_id: i64,
    pub added: usize,
    pub session: i64,
    pub keys: Vec<String>,
    pub init_weights: BTreeMap<String, PathBuf>,
}

pub(crate) async fn record(
    spec: &SweepSpec,
    settings: &RunSettings,
    prep: &Prepared,
    hold: Hold,
) -> Result<Recorded> {
    let store = Store::open(&settings.db)
        .await?
        .with_lease(settings.lease_seconds);
    // before anything is recorded: a sweep that starts from another's trial
    // refuses to start until that trial is complete
    let init_weights = crate::pretrain::resolve(
        &store,
        spec,
        &crate::pretrain::sources(spec, &prep.plans),
        &settings.results,
    )
    .await?;
    let sweep_id = store
        .upsert_sweep(&NewSweep {
            name: spec.name.clone(),
            description: spec.description.clone(),
            spec_path: spec.path.display().to_string(),
            spec_text: spec.text.clone(),
            spec_hash: content_hash(spec.text.as_bytes()),
            objective: spec.objective.clone(),
            direction: spec.direction.as_str().into(),
            dataset: prep.dataset.clone(),
            dataset_fingerprint: prep.fingerprint.clone(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: spec.path.parent().and_then(|d| {
                git_commit(if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                })
            }),
            host: hostname(),
            results_dir: recorded_results_dir(&settings.results)?,
        })
        .await?;
    store.set_classes(sweep_id, &prep.classes).await?;
    check_search_continues(&store, sweep_id, spec).await?;
    let swept = spec.swept_keys();
    let base = grid_base(spec);
    // Keys and differences on every core (50,000 configs serialized and
    // hashed: the larger part of recording a large grid).
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let per = prep.plans.len().div_ceil(threads).max(1024);
    let trials: Vec<NewTrial> = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let parts: Vec<_> = prep
                .plans
                .chunks(per)
                .map(|chunk| {
                    let (swept, base) = (&swept, &base);
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|p| grid_trial(p, prep.fingerprint_of(p), swept, base))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|h| h.join().expect("a recording thread panicked"))
                .collect()
        })
    });
    let pid = std::process::id() as i64;
    let session = match hold {
        // Refuse before inserting anything when another run of this sweep is
        // alive; the check and the registration are one locked transaction.
        Hold::Exclusive => match store
            .begin_session(
                sweep_id,
                pid,
                &hostname(),
                settings.lease_seconds,
                pid_alive,
            )
            .await?
        {
            Ok(id) => id,
            Err((pid, h)) => {
                return Err(Error::Other(format!("sweep `{}` is already being run by process {pid} on {h}; wait for it or stop it first", spec.name)));
            }
        },
        Hold::Shared => store.start_session(sweep_id, pid, &hostname()).await?,
    };
    let added = store.add_trials(sweep_id, &trials).await?;
    let keys = trials.into_iter().map(|t| t.key).collect();
    Ok(Recorded {
        store,
        sweep_id,
        added,
        session,
        keys,
        init_weights,
    })
}

/// A sweep is one kind of study for good: a grid's rerun finds no proposals,
/// a search's rerun finds only proposals of the same space. Anything else is
/// refused before it writes, with what to do instead.
async fn check_search_continues(store: &Store, sweep_id: i64, spec: &SweepSpec) -> Result<()> {
    let (grid_trials, other, _) = store.search_mismatch(sweep_id, &space_hash(spec)).await?;
    let hint = "give the sweep another `name` (or use another --db) to keep both";
    if spec.is_search() && grid_trials > 0 {
        return Err(Error::Other(format!(
            "sweep `{}` holds {grid_trials} grid trials; a search ([search] method = \"{}\") cannot continue it: {hint}",
            spec.name,
            spec.search.method.as_str()
        )));
    }
    if spec.is_search() && other > 0 {
        return Err(Error::Other(format!(
            "sweep `{}` was searched over another space (or other base settings or seeds): {other} of its proposals were drawn for that one, and mixing them would make its history meaningless; {hint}. Raising [search] trials, or changing method, seed or [pruner], continues a search",
            spec.name
        )));
    }
    if !spec.is_search() {
        let (_, proposals, _) = store.search_mismatch(sweep_id, "").await?;
        if proposals > 0 {
            return Err(Error::Other(format!(
                "sweep `{}` is a search ({proposals} proposals); a grid cannot continue it: {hint}",
                spec.name
            )));
        }
    }
    Ok(())
}

/// The results folder as the database records it: absolute and canonical (the
/// folder is created). None for a path that is not UTF-8: later commands then
/// need `--results`, as for sweeps recorded before the column existed.
fn recorded_results_dir(results: &Path) -> Result<Option<String>> {
    let io = |e| Error::Io {
        path: results.to_path_buf(),
        source: e,
    };
    std::fs::create_dir_all(results).map_err(io)?;
    let dir = std::fs::canonicalize(results).map_err(io)?;
    Ok(dir.to_str().map(str::to_string))
}

/// Decodes, records and writes the manifest and the TensorBoard experiment: what
/// every executor does before trials run.
pub(crate) async fn plan(
    spec: &SweepSpec,
    settings: &RunSettings,
    hold: Hold,
) -> Result<(Store, i64, usize, i64, Manifest, usize, Vec<String>)> {
    let results = &settings.results;
    let prep = tokio::task::block_in_place(|| prepare(spec, results))?;
    if settings.strict_data && !prep.data_warnings.is_empty() {
        return Err(Error::Other(format!(
            "--strict-data: the data of {} failed its checks (nothing was recorded):\n  {}\n`sweep data inspect {}` shows the details",
            spec.path.display(),
            prep.data_warnings.join("\n  "),
            spec.path.display()
        )));
    }
    let Recorded {
        store,
        sweep_id,
        added,
        session,
        keys,
        init_weights,
    } = record(spec, settings, &prep, hold).await?;
    // Written only once the database has accepted this run (a refused run must
    // not change what workers of the running one read).
    let mut manifest = Manifest::new(spec, &prep, &keys, results);
    manifest.init_weights = init_weights;
    manifest.write(results)?;
    if spec.logging.tensorboard {
        crate::tb::write_experiment(
            &results.join(&spec.name).join("tensorboard"),
            &spec.name,
            spec.description.as_deref().unwrap_or(""),
            &spec.swept_domains(),
            &spec.seeds,
        )?;
    }
    let planned = if spec.is_search() {
        spec.search.trials * spec.seeds.len()
    } else {
        prep.plans.len()
    };
    Ok((
        store,
        sweep_id,
        added,
        session,
        manifest,
        planned,
        prep.data_warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config that sets none of the settings added later is keyed by the JSON
    /// it had before they existed: a sweep recorded then resumes without re-running.
    #[test]
    fn settings_added_later_leave_old_keys_alone() {
        let mut c = TrialConfig::default();
        c.data.augment = vec![sweep_train::config::Augmentation::Hflip];
        c.model.dropout = 0.25;
        let mut json = serde_json::to_value(&c).unwrap();
        for path in ADDED_SETTINGS {
            let (parent, leaf) = path.rsplit_once('/').unwrap();
            let table = json.pointer_mut(parent).unwrap().as_object_mut().unwrap();
            assert!(table.remove(leaf).is_some(), "{path} is a setting");
        }
        // what the augmentation table held before #19
        let keys: Vec<&String> = json["data"]["augmentation"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(
            keys,
            [
                "brightness_limit",
                "contrast_limit",
                "probability",
                "rotate_limit",
                "scale_limit",
                "shift_limit"
            ]
        );
        let old = content_hash(format!("{json}\nfp").as_bytes());
        assert_eq!(trial_key(&c, "fp"), old);
        // the keys Sweep made before these settings existed (commit 18f067c, run
        // there); a change here re-runs every recorded sweep
        assert_eq!(old, "53a8e96c569db38429fe14d09c0cfc1d");
        assert_eq!(
            trial_key(&TrialConfig::default(), "fp"),
            "b0bed1950bdd7642ea5b376914091c27"
        );
        // a setting that is not its default is part of the key
        let mut e = c.clone();
        e.data.augmentation.elastic_alpha = 30.0;
        assert_ne!(trial_key(&e, "fp"), old);
    }
}
