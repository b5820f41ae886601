//! The sweep spec: a TOML file with a name, seeds, an objective, the base
//! `[data]`/`[model]`/`[train]` tables, a `[grid]` of candidate lists and
//! `[[exclude]]` rules. Owns parsing, validation (file, line and key in every
//! error) and grid expansion into canonical, content-addressed trial configs.
//! Never touches tensors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use sweep_train::config::Augmentation;
use sweep_train::config::{
    find_key_line, suggest_key, Arch, InitScheme, LrSchedule, OptimizerKind, TrialConfig,
};

use crate::error::{Error, Result};
use crate::search::space::parse_distribution;
use crate::search::{
    Distribution, Method, Point, PrunerMethod, PrunerSettings, SearchSettings, Space,
};

/// Metric names an objective may use.
pub const OBJECTIVE_METRICS: &[&str] = &[
    "val.macro_f1",
    "val.accuracy",
    "val.balanced_accuracy",
    "val.loss",
    "train.loss",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Maximize,
    Minimize,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Maximize => "maximize",
            Direction::Minimize => "minimize",
        }
    }
    /// True when `a` is better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Maximize => a > b,
            Direction::Minimize => a < b,
        }
    }
}

/// A parsed and validated sweep spec.
#[derive(Clone, Debug)]
pub struct SweepSpec {
    pub name: String,
    pub description: Option<String>,
    pub seeds: Vec<u64>,
    pub objective: String,
    pub direction: Direction,
    /// The base trial (validated), relative paths resolved against the spec's folder.
    pub base: TrialConfig,
    /// Swept parameters: dotted path and candidate values, in file order.
    pub grid: Vec<(String, Vec<Json>)>,
    /// Each rule: dotted path → value; a combination matching every entry is dropped.
    pub exclude: Vec<Vec<(String, Json)>>,
    pub logging: Logging,
    /// `[slurm]`: how `--executor slurm` submits workers (flags override).
    pub slurm: crate::slurm::SlurmOptions,
    /// `[search]`: the grid (default), or a sampler with a budget.
    pub search: SearchSettings,
    /// `[space]`: the distributions a sampler draws from (empty for a grid).
    pub space: Space,
    /// `[pruner]`: when trials that are clearly losing are stopped.
    pub pruner: PrunerSettings,
    /// `trial_timeout`: seconds after which a trial is stopped and failed
    /// (`--trial-timeout` overrides).
    pub trial_timeout: Option<f64>,
    /// The spec file's text and path, for provenance.
    pub text: String,
    pub path: PathBuf,
}

/// The spec file as typed tables (the top-level keys are checked above).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SpecTables {
    #[serde(default)]
    data: sweep_train::config::DataConfig,
    #[serde(default)]
    model: sweep_train::config::ModelConfig,
    #[serde(default)]
    train: sweep_train::config::TrainConfig,
    name: Option<toml::Value>,
    description: Option<toml::Value>,
    seeds: Option<toml::Value>,
    objective: Option<toml::Value>,
    direction: Option<toml::Value>,
    grid: Option<toml::Value>,
    exclude: Option<toml::Value>,
    #[serde(default)]
    logging: Logging,
    #[serde(default)]
    slurm: crate::slurm::SlurmOptions,
    search: Option<toml::Value>,
    space: Option<toml::Value>,
    pruner: Option<toml::Value>,
    trial_timeout: Option<toml::Value>,
}

/// One trial of the expanded grid.
#[derive(Clone, Debug)]
pub struct TrialPlan {
    /// Canonical resolved configuration (inactive settings reset to defaults).
    pub config: TrialConfig,
    /// Values of the swept parameters (canonical), by dotted path.
    pub swept: BTreeMap<String, Json>,
    pub seed: u64,
}

const TOP_KEYS: &[&str] = &[
    "name",
    "description",
    "seeds",
    "objective",
    "direction",
    "data",
    "model",
    "train",
    "grid",
    "exclude",
    "logging",
    "slurm",
    "search",
    "space",
    "pruner",
    "trial_timeout",
];

/// The `[logging]` table: what each trial writes to TensorBoard.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    /// Write TensorBoard event files (`results/<sweep>/tensorboard/<trial>/`).
    pub tensorboard: bool,
    /// Weight histograms every N epochs (and at the last); 0: never.
    pub histogram_every: usize,
    /// Also histograms of the gradients of each logged epoch's last batch.
    pub gradient_histograms: bool,
    /// Validation images in the image grid (0: none).
    pub image_grid: usize,
    /// The MLflow tracking server every trial is logged to as the sweep runs
    /// (`--mlflow` takes precedence; `MLFLOW_TRACKING_URI` is used when
    /// neither names one). Credentials
    /// never go here (the spec is stored in the database): MLflow's variables
    /// `MLFLOW_TRACKING_TOKEN`, `MLFLOW_TRACKING_USERNAME`/`PASSWORD`.
    pub mlflow: Option<String>,
    /// The MLflow experiment (default: the sweep's name).
    pub mlflow_experiment: Option<String>,
    /// Upload each finished trial's best checkpoint to MLflow.
    pub mlflow_checkpoints: bool,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            tensorboard: true,
            histogram_every: 1,
            gradient_histograms: false,
            image_grid: 16,
            mlflow: None,
            mlflow_experiment: None,
            mlflow_checkpoints: true,
        }
    }
}

fn err_at(origin: &str, text: &str, key: &str, message: impl Into<String>) -> Error {
    let location = match find_key_line(text, key) {
        Some(l) => format!("{origin}:{l}"),
        None => origin.to_string(),
    };
    Error::Spec {
        location,
        message: format!("`{key}` {}", message.into()),
    }
}

/// Every dotted path a trial config accepts (leaves only).
pub fn known_paths() -> BTreeSet<String> {
    let mut full = TrialConfig::default();
    full.data.root = Some(PathBuf::new());
    full.data.labels = Some(PathBuf::new());
    full.data.synthetic = Some(Default::default());
    full.data.max_per_class = Some(0);
    full.data.split_seed = Some(0);
    full.model.hidden = Some(vec![]);
    full.train.early_stopping = Some(Default::default());
    let mut out = BTreeSet::new();
    fn walk(prefix: &str, v: &Json, out: &mut BTreeSet<String>) {
        if let Json::Object(m) = v {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if child.is_object() {
                    walk(&p, child, out);
                } else {
                    out.insert(p);
                }
            }
        }
    }
    let mut v = serde_json::to_value(&full).expect("config serializes");
    // early_stopping.mode is optional; give it a value so the path is listed
    v["train"]["early_stopping"]["mode"] = Json::String("min".into());
    walk("", &v, &mut out);
    out
}

fn suggest_path(path: &str, known: &BTreeSet<String>) -> String {
    let last = path.rsplit('.').next().unwrap_or(path);
    let by_leaf: Vec<&String> = known
        .iter()
        .filter(|k| k.rsplit('.').next() == Some(last))
        .collect();
    if let Some(k) = by_leaf.first() {
        return format!(" (did you mean `{k}`?)");
    }
    if let Some(s) = suggest_key(last) {
        if let Some(k) = known.iter().find(|k| k.rsplit('.').next() == Some(s)) {
            return format!(" (did you mean `{k}`?)");
        }
    }
    String::new()
}

/// Flattens a TOML table of candidate lists into dotted paths (arrays are leaves).
fn flatten_grid(prefix: &str, t: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in t {
        let p = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(inner) => flatten_grid(&p, inner, out),
            other => out.push((p, other.clone())),
        }
    }
}

fn to_json(v: &toml::Value) -> Json {
    serde_json::to_value(v).expect("toml values convert to JSON")
}

/// Sets a dotted path in a JSON object, creating tables on the way.
pub(crate) fn set_path(root: &mut Json, path: &str, value: Json) {
    let mut cur = root;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        if !cur.get(*p).map(|v| v.is_object()).unwrap_or(false) {
            cur[*p] = Json::Object(Default::default());
        }
        cur = cur.get_mut(*p).expect("just inserted");
    }
    cur[parts[parts.len() - 1]] = value;
}

/// A duration as people write it: `90s`, `30m`, `2h`, `1h30m`, `1.5h`, or a
/// plain number of seconds. Positive, at most 30 days.
pub fn parse_duration(text: &str) -> std::result::Result<f64, String> {
    let t = text.trim();
    let bad = || {
        format!("{text:?} is not a duration: write e.g. \"90s\", \"30m\", \"2h\", \"1h30m\" (or seconds as a number)")
    };
    let mut total = 0.0;
    if let Ok(secs) = t.parse::<f64>() {
        total = secs;
    } else {
        let mut rest = t;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let n = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let value: f64 = rest[..n].parse().map_err(|_| bad())?;
            rest = &rest[n..];
            let u = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = match rest[..u].trim() {
                "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
                "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
                "h" | "hour" | "hours" => 3600.0,
                "d" | "day" | "days" => 86_400.0,
                _ => return Err(bad()),
            };
            total += value * unit;
            rest = &rest[u..];
        }
    }
    if !(total > 0.0 && total <= 30.0 * 86_400.0) {
        return Err(format!(
            "{text:?}: a duration must be positive and at most 30 days"
        ));
    }
    Ok(total)
}

/// A duration in seconds as people read it: `45s`, `30m`, `1h30m`.
pub fn duration_text(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// Grids of at most this many trials are expanded whole when a spec is read.
const VALIDATE_WHOLE: u64 = 20_000;

/// The value at a dotted path of a JSON object.
pub fn get_path<'a>(root: &'a Json, path: &str) -> Option<&'a Json> {
    path.split('.').try_fold(root, |cur, p| cur.get(p))
}

impl SweepSpec {
    pub fn from_file(path: &Path) -> Result<SweepSpec> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        SweepSpec::from_toml_str(&text, path)
    }

    /// Parses and validates a spec; `path` names it in errors and anchors relative paths.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<SweepSpec> {
        let origin = path.display().to_string();
        let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            Error::Spec {
                location: line
                    .map(|l| format!("{origin}:{l}"))
                    .unwrap_or(origin.clone()),
                message: e.message().trim().to_string(),
            }
        })?;
        for k in doc.keys() {
            if !TOP_KEYS.contains(&k.as_str()) {
                let hint = TOP_KEYS
                    .iter()
                    .find(|t| edit1(k, t))
                    .map(|t| format!(" (did you mean `{t}`?)"))
                    .unwrap_or_default();
                return Err(err_at(
                    &origin,
                    text,
                    k,
                    format!(
                        "is not a sweep spec key; expected one of {}{hint}",
                        TOP_KEYS.join(", ")
                    ),
                ));
            }
        }
        let name = match doc.get("name") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(_) => return Err(err_at(&origin, text, "name", "must be a string")),
            None => return Err(Error::Spec {
                location: origin,
                message:
                    "`name` is missing: every sweep needs a name (it is also its results folder)"
                        .into(),
            }),
        };
        if !is_safe_name(&name) {
            return Err(err_at(&origin, text, "name", format!("{name:?} is not a safe folder name: use letters, digits, `-`, `_` and `.` (not starting with `.`), at most 100 characters")));
        }
        let description = match doc.get("description") {
            None => None,
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(err_at(&origin, text, "description", "must be a string")),
        };
        let trial_timeout = match doc.get("trial_timeout") {
            None => None,
            Some(toml::Value::String(s)) => Some(
                parse_duration(s).map_err(|m| err_at(&origin, text, "trial_timeout", m))?,
            ),
            Some(toml::Value::Integer(i)) if *i > 0 => Some(*i as f64),
            Some(toml::Value::Float(f)) if *f > 0.0 && f.is_finite() => Some(*f),
            Some(_) => {
                return Err(err_at(
                    &origin,
                    text,
                    "trial_timeout",
                    "must be a duration such as \"90s\", \"30m\", \"2h\" or \"1h30m\" (or a positive number of seconds)",
                ))
            }
        };
        let seeds = match doc.get("seeds") {
            None => vec![42],
            Some(toml::Value::Array(a)) => {
                let mut seeds = Vec::new();
                for v in a {
                    match v {
                        toml::Value::Integer(i) if *i >= 0 => seeds.push(*i as u64),
                        _ => {
                            return Err(err_at(
                                &origin,
                                text,
                                "seeds",
                                format!("must be non-negative integers, found {v}"),
                            ))
                        }
                    }
                }
                if seeds.is_empty() {
                    return Err(err_at(
                        &origin,
                        text,
                        "seeds",
                        "is empty: list at least one seed",
                    ));
                }
                let mut uniq = seeds.clone();
                uniq.sort();
                uniq.dedup();
                if uniq.len() != seeds.len() {
                    return Err(err_at(&origin, text, "seeds", "lists a seed twice"));
                }
                seeds
            }
            Some(_) => {
                return Err(err_at(
                    &origin,
                    text,
                    "seeds",
                    "must be a list of integers, e.g. seeds = [1, 2, 3]",
                ))
            }
        };
        let objective = match doc.get("objective") {
            None => "val.macro_f1".to_string(),
            Some(toml::Value::String(s)) if OBJECTIVE_METRICS.contains(&s.as_str()) => s.clone(),
            Some(v) => {
                return Err(err_at(
                    &origin,
                    text,
                    "objective",
                    format!(
                        "{v} is not a metric; choose one of {}",
                        OBJECTIVE_METRICS.join(", ")
                    ),
                ))
            }
        };
        let direction = match doc.get("direction") {
            None if objective.ends_with("loss") => Direction::Minimize,
            None => Direction::Maximize,
            Some(toml::Value::String(s)) if s == "maximize" => Direction::Maximize,
            Some(toml::Value::String(s)) if s == "minimize" => Direction::Minimize,
            Some(v) => {
                return Err(err_at(
                    &origin,
                    text,
                    "direction",
                    format!("must be \"maximize\" or \"minimize\", got {v}"),
                ))
            }
        };

        // The base trial, parsed from the original text so that errors keep their line.
        let tables: SpecTables = toml::from_str(text).map_err(|e| {
            match sweep_train::config::toml_error(&origin, text, &e) {
                sweep_train::Error::Config { location, message } => {
                    Error::Spec { location, message }
                }
                other => Error::Other(other.to_string()),
            }
        })?;
        let logging = tables.logging.clone();
        if logging.image_grid > 256 {
            return Err(err_at(
                &origin,
                text,
                "logging.image_grid",
                format!("at most 256 images, got {}", logging.image_grid),
            ));
        }
        if let Some(uri) = &logging.mlflow {
            match sweep_mlflow::split_credentials(uri) {
                Ok((_, None)) => {}
                Ok((_, Some(_))) => {
                    return Err(err_at(
                        &origin,
                        text,
                        "logging.mlflow",
                        "holds a user name and password: the spec is stored in the results database, so credentials go in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead",
                    ))
                }
                Err(e) => return Err(err_at(&origin, text, "logging.mlflow", e.to_string())),
            }
        }
        if logging
            .mlflow_experiment
            .as_deref()
            .is_some_and(|e| e.trim().is_empty())
        {
            return Err(err_at(
                &origin,
                text,
                "logging.mlflow_experiment",
                "is empty: name an experiment or leave the key out (the sweep's name)",
            ));
        }
        let slurm = tables.slurm.clone();
        for (key, v) in [
            ("slurm.array_parallelism", slurm.array_parallelism),
            ("slurm.array_size", slurm.array_size),
            ("slurm.cpus_per_task", slurm.cpus_per_task),
        ] {
            if v == Some(0) {
                return Err(err_at(&origin, text, key, "must be at least 1"));
            }
        }
        let mut base = TrialConfig {
            data: tables.data,
            model: tables.model,
            train: tables.train,
        };
        if let Some(dir) = path.parent() {
            base.resolve_paths(dir);
        }
        // One spelling of the data root whatever the spec path looked like
        // (`sweeps/x.toml`, `./sweeps/x.toml`, absolute), so trial keys are stable.
        if let Some(root) = &base.data.root {
            if let Ok(abs) = std::fs::canonicalize(root) {
                base.data.root = Some(abs);
            }
        }
        // The same for a weights file (resolve_paths made it relative to the
        // spec): absolute, so workers anywhere read the same file.
        if let Some(f) = &base.model.init_from {
            if sweep_train::config::is_weights_file(f) {
                base.model.init_from = Some(absolute_path(None, f));
            }
        }

        // The grid.
        let known = known_paths();
        let mut grid = Vec::new();
        if let Some(g) = doc.get("grid") {
            let toml::Value::Table(gt) = g else {
                return Err(err_at(
                    &origin,
                    text,
                    "grid",
                    "must be a table of candidate lists",
                ));
            };
            let mut flat = Vec::new();
            flatten_grid("", gt, &mut flat);
            for (p, v) in flat {
                let key = format!("grid.{p}");
                if !known.contains(&p) {
                    return Err(err_at(
                        &origin,
                        text,
                        &key,
                        format!("`{p}` is not a trial setting{}", suggest_path(&p, &known)),
                    ));
                }
                if p == "train.seed" {
                    return Err(err_at(
                        &origin,
                        text,
                        &key,
                        "seeds are swept with the top-level `seeds` list",
                    ));
                }
                let toml::Value::Array(cands) = v else {
                    return Err(err_at(
                        &origin,
                        text,
                        &key,
                        format!("must be a list of candidates, e.g. {p} = [{v}]"),
                    ));
                };
                if cands.is_empty() {
                    return Err(err_at(
                        &origin,
                        text,
                        &key,
                        "has no candidates: list at least one value",
                    ));
                }
                let mut cands: Vec<Json> = cands.iter().map(to_json).collect();
                if p == "model.init_from" {
                    absolute_weights(path.parent(), &mut cands);
                }
                for (i, c) in cands.iter().enumerate() {
                    if cands[..i].contains(c) {
                        return Err(err_at(&origin, text, &key, format!("lists {c} twice")));
                    }
                }
                grid.push((p, cands));
            }
        }

        // Exclusion rules.
        let mut exclude = Vec::new();
        if let Some(x) = doc.get("exclude") {
            let toml::Value::Array(rules) = x else {
                return Err(err_at(
                    &origin,
                    text,
                    "exclude",
                    "must be an array of tables: [[exclude]]",
                ));
            };
            for r in rules {
                let toml::Value::Table(t) = r else {
                    return Err(err_at(
                        &origin,
                        text,
                        "exclude",
                        "entries must be tables: [[exclude]]",
                    ));
                };
                let mut flat = Vec::new();
                flatten_grid("", t, &mut flat);
                let mut rule = Vec::new();
                for (p, v) in flat {
                    if !grid.iter().any(|(g, _)| *g == p) {
                        return Err(err_at(
                            &origin,
                            text,
                            &format!("exclude.{p}"),
                            format!(
                                "`{p}` is not swept in [grid], so excluding on it matches nothing"
                            ),
                        ));
                    }
                    rule.push((p, to_json(&v)));
                }
                if rule.is_empty() {
                    return Err(err_at(
                        &origin,
                        text,
                        "exclude",
                        "an empty [[exclude]] would drop every trial",
                    ));
                }
                exclude.push(rule);
            }
        }

        let search = parse_search(&doc, &origin, text)?;
        let mut space = parse_space(&doc, &origin, text, &known)?;
        for (p, d) in &mut space.params {
            if let (true, Distribution::Choice { values }) = (p == "model.init_from", d) {
                absolute_weights(path.parent(), values);
            }
        }
        let pruner = parse_pruner(&doc, &origin, text)?;
        match search.method {
            Method::Grid if !space.is_empty() => {
                return Err(err_at(&origin, text, "space", "is a search space, but [search] method is \"grid\" (the default): set method = \"random\" or \"tpe\", or list candidates in [grid]"));
            }
            Method::Random | Method::Tpe if space.is_empty() => {
                return Err(err_at(
                    &origin,
                    text,
                    "search.method",
                    format!(
                        "\"{}\" needs a [space] of distributions to draw from",
                        search.method.as_str()
                    ),
                ));
            }
            Method::Random | Method::Tpe if !grid.is_empty() => {
                return Err(err_at(&origin, text, "grid", format!("cannot be combined with method = \"{}\": write each list as {{ choice = [...] }} in [space]", search.method.as_str())));
            }
            Method::Random | Method::Tpe if !exclude.is_empty() => {
                return Err(err_at(
                    &origin,
                    text,
                    "exclude",
                    "applies to a grid; a sampled search has no [[exclude]]",
                ));
            }
            _ => {}
        }
        let spec = SweepSpec {
            name,
            description,
            seeds,
            objective,
            direction,
            base,
            grid,
            exclude,
            logging,
            slurm,
            search,
            space,
            pruner,
            trial_timeout,
            text: text.to_string(),
            path: path.to_path_buf(),
        };
        spec.check_space()?;
        // Validate the base and every candidate value now, before any work.
        spec.base
            .validate()
            .map_err(|i| err_at(&origin, text, &i.key, i.message))?;
        // A grid small enough is expanded whole (every combination checked);
        // a larger one is checked value by value, so that reading a spec with
        // a runaway grid costs milliseconds (it is refused by --max-trials).
        let whole = spec.is_search() || spec.grid_size().is_some_and(|n| n <= VALIDATE_WHOLE);
        let plans = if whole {
            spec.decode_variants()?
        } else {
            spec.candidate_plans()?
        };
        let mut roots: Vec<&Path> = plans
            .iter()
            .filter_map(|p| p.config.data.root.as_deref())
            .collect();
        roots.dedup();
        for root in roots {
            if !root.is_dir() {
                let key = if spec.grid.iter().any(|(p, _)| p == "data.root") {
                    "grid.data.root"
                } else {
                    "data.root"
                };
                return Err(err_at(&origin, text, key, format!("{} is not a folder (image folder root/<class>/*.png, or the base of data.labels)", root.display())));
            }
        }
        if whole && plans.is_empty() {
            return Err(Error::Spec {
                location: origin,
                message: "the [[exclude]] rules drop every combination: nothing to run".into(),
            });
        }
        Ok(spec)
    }

    /// One trial per candidate value of the grid (the base with that one
    /// value), for checking a grid too large to expand when read.
    fn candidate_plans(&self) -> Result<Vec<TrialPlan>> {
        let base_json = serde_json::to_value(&self.base).expect("config serializes");
        let mut out = self.plans_for(&[], "grid", &base_json)?;
        for (p, cands) in &self.grid {
            for c in cands {
                out.extend(self.plans_for(&[(p.clone(), c.clone())], "grid", &base_json)?);
            }
        }
        Ok(out)
    }

    /// The grid's trials before exclusions and de-duplication: the product of
    /// the candidate counts times the seeds, computed without expanding
    /// anything (`None` past `u64`). The count `--max-trials` is held to.
    pub fn grid_size(&self) -> Option<u64> {
        self.grid
            .iter()
            .try_fold(1u64, |n, (_, c)| n.checked_mul(c.len() as u64))?
            .checked_mul(self.seeds.len().max(1) as u64)
    }

    /// Refuses a grid of more than `max` trials (after exclusions and
    /// de-duplication, counted by [`SweepSpec::trial_count`]), before it is
    /// expanded: a typo in a grid must not take the machine down. Searches have
    /// their own budget (`[search] trials`).
    pub fn check_size(&self, max: u64) -> Result<()> {
        if self.is_search() || self.grid_size().is_some_and(|n| n <= max) {
            return Ok(());
        }
        let count = self.trial_count()?;
        if count.is_some_and(|c| c.exact && c.trials <= max) {
            return Ok(());
        }
        let sizes: Vec<String> = self
            .grid
            .iter()
            .map(|(p, c)| format!("{p} {}", c.len()))
            .collect();
        Err(Error::Spec {
            location: self.path.display().to_string(),
            message: format!(
                "the grid has {} trials ({} × {} seed(s){}), more than --max-trials {max}: narrow the grid, raise --max-trials on purpose, or sample it with a budget ([search] method = \"random\" or \"tpe\", trials = N)",
                match count {
                    Some(c) if c.exact => c.trials.to_string(),
                    Some(c) => format!("up to {}", c.trials),
                    None => "more than 18446744073709551615".into(),
                },
                if sizes.is_empty() { "1 configuration".to_string() } else { sizes.join(" × ") },
                self.seeds.len(),
                match count {
                    Some(c) if c.exact && Some(c.trials) != self.grid_size() => ", after exclusions and de-duplication",
                    _ => "",
                }
            ),
        })
    }

    /// Every trial of the sweep: the grid's cartesian product minus exclusions, times
    /// the seeds, canonicalized and de-duplicated (configurations that differ only in
    /// inactive settings run once).
    pub fn expand(&self) -> Result<Vec<TrialPlan>> {
        let n = self.combinations()?;
        let threads = std::thread::available_parallelism()
            .map_or(1, |t| t.get())
            .min(8);
        if n < 4096 || threads < 2 {
            return self.expand_first(usize::MAX);
        }
        // Large grids on every core: each thread configures its range of
        // combinations in order; de-duplication then runs in grid order, so
        // the trials and the first error are those of one thread's pass.
        let base_json = serde_json::to_value(&self.base).expect("config serializes");
        let per = n.div_ceil(threads);
        type Part = Result<Vec<((u128, usize), Vec<TrialPlan>)>>;
        let parts: Vec<Part> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    let base_json = &base_json;
                    scope.spawn(move || -> Part {
                        let mut out = Vec::new();
                        for combo in i * per..((i + 1) * per).min(n) {
                            if let Some(c) = self.configuration(combo, base_json)? {
                                out.push(c);
                            }
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("an expanding thread panicked"))
                .collect()
        });
        let mut seen = BTreeSet::new();
        let mut plans = Vec::new();
        for part in parts {
            for (hash, seeded) in part? {
                if seen.insert(hash) {
                    plans.extend(seeded);
                }
            }
        }
        Ok(plans)
    }

    /// The number of combinations of the grid's values.
    fn combinations(&self) -> Result<usize> {
        self.grid
            .iter()
            .try_fold(1usize, |n, (_, c)| n.checked_mul(c.len()))
            .ok_or_else(|| Error::Spec {
                location: self.path.display().to_string(),
                message: "the grid has more combinations than this machine can count".into(),
            })
    }

    /// Combination number `combo`'s trials (one per seed) and the hash of its
    /// config that de-duplicates it, or None when an exclusion drops it. (A
    /// configuration's trials differ only in their seed: the first one's config
    /// stands for all. A 128-bit hash of it, not its 2 KB of text: 50,000
    /// trials' texts alone took 100 MB.)
    #[allow(clippy::type_complexity)]
    fn configuration(
        &self,
        combo: usize,
        base_json: &Json,
    ) -> Result<Option<((u128, usize), Vec<TrialPlan>)>> {
        let point = self.point(combo);
        if self.excluded(&point) {
            return Ok(None);
        }
        let seeded = self.plans_for(&point, "grid", base_json)?;
        let Some(first) = seeded.first() else {
            return Ok(None);
        };
        let text = serde_json::to_vec(&first.config).expect("config serializes");
        Ok(Some(((fnv128(&text), text.len()), seeded)))
    }

    /// The sweep's first `limit` trials in order (as [`SweepSpec::expand`]
    /// gives them), expanding no further than needed: what `--dry-run` shows
    /// of a grid too large to list.
    pub fn expand_first(&self, limit: usize) -> Result<Vec<TrialPlan>> {
        let base_json = serde_json::to_value(&self.base).expect("config serializes");
        let mut plans: Vec<TrialPlan> = Vec::new();
        let mut seen = BTreeSet::new();
        for combo in 0..self.combinations()? {
            if plans.len() >= limit {
                break;
            }
            if let Some((hash, seeded)) = self.configuration(combo, &base_json)? {
                if seen.insert(hash) {
                    plans.extend(seeded);
                }
            }
        }
        plans.truncate(limit);
        Ok(plans)
    }

    /// The grid's combination number `combo` (the last setting varies fastest).
    fn point(&self, combo: usize) -> Vec<(String, Json)> {
        let all: Vec<usize> = (0..self.grid.len()).collect();
        self.point_of(&all, combo)
    }

    /// Combination number `combo` of the grid settings numbered `settings`
    /// (the last varies fastest).
    fn point_of(&self, settings: &[usize], combo: usize) -> Vec<(String, Json)> {
        let mut rest = combo;
        let mut point = Vec::with_capacity(settings.len());
        for i in settings.iter().rev() {
            let (p, cands) = &self.grid[*i];
            point.push((p.clone(), cands[rest % cands.len()].clone()));
            rest /= cands.len();
        }
        point.reverse();
        point
    }

    /// Whether an `[[exclude]]` rule drops this combination.
    fn excluded(&self, point: &[(String, Json)]) -> bool {
        self.exclude.iter().any(|rule| {
            rule.iter()
                .all(|(p, v)| point.iter().any(|(q, w)| q == p && json_eq(w, v)))
        })
    }

    /// The grid's number of trials after exclusions and de-duplication,
    /// counted without expanding the grid: settings that exclusion rules name
    /// or that the canonical form reads or resets ([`CANONICAL_KEYS`]) are
    /// enumerated together (their product is usually small); every other
    /// setting multiplies the count by its number of distinct values. `exact`
    /// is false when that enumeration would pass `COUNT_ENUMERATION` (the
    /// count is then the grid's size minus nothing: an upper bound). `None`
    /// past `u64`.
    pub fn trial_count(&self) -> Result<Option<TrialCount>> {
        let seeds = self.seeds.len().max(1) as u64;
        if self.is_search() {
            return Ok(Some(TrialCount {
                trials: (self.search.trials as u64).saturating_mul(seeds),
                exact: true,
            }));
        }
        let base_json = serde_json::to_value(&self.base).expect("config serializes");
        let ruled: BTreeSet<&str> = self
            .exclude
            .iter()
            .flatten()
            .map(|(p, _)| p.as_str())
            .collect();
        let coupled = |p: &str| {
            ruled.contains(p)
                || CANONICAL_KEYS.iter().any(|k| {
                    p == *k || p.starts_with(&format!("{k}.")) || k.starts_with(&format!("{p}."))
                })
        };
        // Free settings: their distinct values as the canonical config holds them.
        let mut free: u64 = 1;
        let mut together: Vec<usize> = Vec::new();
        for (i, (p, cands)) in self.grid.iter().enumerate() {
            if coupled(p) {
                together.push(i);
                continue;
            }
            let mut values = BTreeSet::new();
            for c in cands {
                let plans = self.plans_for(&[(p.clone(), c.clone())], "grid", &base_json)?;
                let canon = serde_json::to_value(&plans[0].config).expect("config serializes");
                values.insert(get_path(&canon, p).map(Json::to_string).unwrap_or_default());
            }
            free = match free.checked_mul(values.len() as u64) {
                Some(n) => n,
                None => return Ok(None),
            };
        }
        let sizes: Vec<usize> = together.iter().map(|i| self.grid[*i].1.len()).collect();
        let combos = sizes.iter().try_fold(1usize, |n, s| n.checked_mul(*s));
        let (configs, exact) = match combos {
            Some(n) if n <= COUNT_ENUMERATION => {
                let mut seen = BTreeSet::new();
                for combo in 0..n {
                    let point = self.point_of(&together, combo);
                    if self.excluded(&point) {
                        continue;
                    }
                    let plans = self.plans_for(&point, "grid", &base_json)?;
                    let text = serde_json::to_vec(&plans[0].config).expect("config serializes");
                    seen.insert((fnv128(&text), text.len()));
                }
                (seen.len() as u64, true)
            }
            _ => match sizes.iter().try_fold(1u64, |n, s| n.checked_mul(*s as u64)) {
                Some(n) => (n, false),
                None => return Ok(None),
            },
        };
        Ok(configs
            .checked_mul(free)
            .and_then(|n| n.checked_mul(seeds))
            .map(|trials| TrialCount { trials, exact }))
    }
}

/// How many trials a sweep has, counted without expanding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrialCount {
    pub trials: u64,
    /// False: an upper bound (exclusions and de-duplication not applied).
    pub exact: bool,
}

/// The settings that [`canonicalize`] reads or resets (with everything
/// under them): grid settings among them are counted together, not
/// multiplied. Keep in step with `canonicalize` (the counting test expands
/// grids over each of them and compares).
const CANONICAL_KEYS: &[&str] = &[
    "model.init",
    "model.init_low",
    "model.init_high",
    "model.init_std",
    "model.init_value",
    "model.arch",
    "model.conv_channels",
    "model.hidden",
    "train.optimizer",
    "train.momentum",
    "train.nesterov",
    "train.beta1",
    "train.beta2",
    "train.epsilon",
    "train.weight_decay",
    "train.decay_bias_and_norm",
    "train.lr_schedule",
    "train.lr_step_epochs",
    "train.lr_step_gamma",
    "train.lr_min",
    "train.early_stopping",
    "data.augment",
    "data.augmentation",
    "train.freeze",
    "train.freeze_epochs",
];

/// Combinations of the settings counted together past which the count is
/// an upper bound rather than enumerated (about a second).
const COUNT_ENUMERATION: usize = 100_000;

/// A 128-bit FNV-1a hash: de-duplicates configurations by content.
fn fnv128(bytes: &[u8]) -> u128 {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in bytes {
        h ^= u128::from(*b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    h
}

impl SweepSpec {
    /// The swept settings' dotted paths: the grid's, or the search space's.
    pub fn swept_keys(&self) -> Vec<String> {
        if self.search.method == Method::Grid {
            self.grid.iter().map(|(p, _)| p.clone()).collect()
        } else {
            self.space.params.iter().map(|(p, _)| p.clone()).collect()
        }
    }

    /// The swept settings with their finite candidate values (empty for a
    /// continuous distribution): TensorBoard's HParams domains.
    pub fn swept_domains(&self) -> Vec<(String, Vec<Json>)> {
        if self.search.method == Method::Grid {
            return self.grid.clone();
        }
        self.space
            .params
            .iter()
            .map(|(p, d)| match d {
                Distribution::Choice { values } => (p.clone(), values.clone()),
                _ => (p.clone(), Vec::new()),
            })
            .collect()
    }

    /// Whether configurations come from a sampler (random, TPE) rather than the grid.
    pub fn is_search(&self) -> bool {
        self.search.method != Method::Grid
    }

    /// The trials of one configuration (`point`: swept setting → value), one per
    /// seed, canonical. `section` names the spec table in errors (`grid`, `space`).
    pub fn plans_for(
        &self,
        point: &[(String, Json)],
        section: &str,
        base_json: &Json,
    ) -> Result<Vec<TrialPlan>> {
        let origin = self.path.display().to_string();
        let mut j = base_json.clone();
        for (p, v) in point {
            set_path(&mut j, p, v.clone());
        }
        let which = || {
            point
                .iter()
                .map(|(p, v)| format!("{p} = {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let cfg: TrialConfig = serde_json::from_value(j).map_err(|e| {
            // Find the value that does not fit by trying each one alone.
            let culprit = point.iter().find(|(p, v)| {
                let mut alone = base_json.clone();
                set_path(&mut alone, p, v.clone());
                serde_json::from_value::<TrialConfig>(alone).is_err()
            });
            match culprit {
                Some((p, v)) => err_at(
                    &origin,
                    &self.text,
                    &format!("{section}.{p}"),
                    format!(
                        "has a {} of the wrong type: {v}: {e}",
                        if section == "grid" {
                            "candidate"
                        } else {
                            "value"
                        }
                    ),
                ),
                None => Error::Spec {
                    location: origin.clone(),
                    message: format!("the combination {} is not a valid trial: {e}", which()),
                },
            }
        })?;
        if let Err(i) = cfg.validate() {
            let key = if point.iter().any(|(p, _)| *p == i.key) {
                format!("{section}.{}", i.key)
            } else {
                i.key.clone()
            };
            return Err(err_at(
                &origin,
                &self.text,
                &key,
                format!("{} (in the combination {})", i.message, which()),
            ));
        }
        Ok(seed_plans(&cfg, &self.seeds, &self.swept_keys()))
    }

    /// The trials of a sampled configuration.
    pub fn plans_for_point(&self, point: &Point) -> Result<Vec<TrialPlan>> {
        let base_json = serde_json::to_value(&self.base).expect("config serializes");
        let pairs: Vec<(String, Json)> =
            point.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.plans_for(&pairs, "space", &base_json)
    }

    /// One trial for every distinct data set the sweep can decode: the grid's
    /// trials, or for a search the base with every combination of the `data.*`
    /// choices (those are the only data settings a space may sample, so every
    /// data set is decoded before the first trial).
    pub fn decode_variants(&self) -> Result<Vec<TrialPlan>> {
        if !self.is_search() {
            return self.expand();
        }
        let base_json = serde_json::to_value(&self.base).expect("config serializes");
        let data: Vec<(&String, &Vec<Json>)> = self
            .space
            .params
            .iter()
            .filter_map(|(p, d)| match d {
                Distribution::Choice { values } if p.starts_with("data.") => Some((p, values)),
                _ => None,
            })
            .collect();
        let n: usize = data.iter().map(|(_, v)| v.len()).product();
        let mut out = Vec::new();
        for combo in 0..n {
            let mut rest = combo;
            let mut point = Vec::new();
            for (p, vals) in data.iter().rev() {
                point.push(((*p).clone(), vals[rest % vals.len()].clone()));
                rest /= vals.len();
            }
            let mut j = base_json.clone();
            for (p, v) in &point {
                set_path(&mut j, p, v.clone());
            }
            let Ok(cfg) = serde_json::from_value::<TrialConfig>(j) else {
                continue;
            };
            out.push(TrialPlan {
                config: canonicalize(cfg),
                swept: BTreeMap::new(),
                seed: self.seeds[0],
            });
        }
        Ok(out)
    }

    /// Every value a distribution can take at its ends (and every choice) must
    /// make a valid trial with the base settings: checked before anything runs.
    fn check_space(&self) -> Result<()> {
        let base_json = serde_json::to_value(&self.base).expect("config serializes");
        for (p, d) in &self.space.params {
            let probes: Vec<Json> = match d {
                Distribution::Choice { values } => values.clone(),
                numeric => {
                    let (lo, hi) = numeric.internal_bounds().expect("numeric");
                    vec![numeric.value_at(lo), numeric.value_at(hi)]
                }
            };
            for v in probes {
                self.plans_for(&[(p.clone(), v)], "space", &base_json)?;
            }
        }
        Ok(())
    }
}

/// One canonical trial of a valid configuration per seed, with the values of
/// the `swept` settings as the canonical config has them.
pub fn seed_plans(cfg: &TrialConfig, seeds: &[u64], swept: &[String]) -> Vec<TrialPlan> {
    // Canonical once: the canonical form does not depend on the seed.
    let canon = canonicalize(cfg.clone());
    let json = serde_json::to_value(&canon).expect("config serializes");
    let values: BTreeMap<String, Json> = swept
        .iter()
        .map(|p| (p.clone(), get_path(&json, p).cloned().unwrap_or(Json::Null)))
        .collect();
    seeds
        .iter()
        .map(|&seed| {
            let mut c = canon.clone();
            c.train.seed = seed;
            let mut swept = values.clone();
            if let Some(v) = swept.get_mut("train.seed") {
                *v = Json::from(seed);
            }
            TrialPlan {
                config: c,
                swept,
                seed,
            }
        })
        .collect()
}

/// The settings that decide how images are decoded: a search may only choose
/// among listed values for them, so that each data set is decoded up front.
const DECODE_KEYS: &[&str] = &[
    "data.root",
    "data.labels",
    "data.file_column",
    "data.label_column",
    "data.image_dirs",
    "data.image_size",
    "data.channels",
    "data.on_bad_image",
];

fn table_of<'a>(
    doc: &'a toml::Table,
    key: &str,
    origin: &str,
    text: &str,
) -> Result<Option<&'a toml::Table>> {
    match doc.get(key) {
        None => Ok(None),
        Some(toml::Value::Table(t)) => Ok(Some(t)),
        Some(_) => Err(err_at(origin, text, key, "must be a table")),
    }
}

/// One key of a small spec table (`[search]`, `[pruner]`): its value, and the
/// file, line and key its errors name.
struct Entry<'a> {
    origin: &'a str,
    text: &'a str,
    key: String,
    v: &'a toml::Value,
}

impl Entry<'_> {
    fn err(&self, message: impl Into<String>) -> Error {
        err_at(self.origin, self.text, &self.key, message)
    }

    fn count(&self, min: i64) -> Result<usize> {
        match self.v {
            toml::Value::Integer(i) if *i >= min => Ok(*i as usize),
            v => Err(self.err(format!("must be an integer of at least {min}, got {v}"))),
        }
    }

    fn one_of<T: Copy>(&self, options: &[(&str, T)]) -> Result<T> {
        let found = self
            .v
            .as_str()
            .and_then(|s| options.iter().find(|(name, _)| *name == s));
        found.map(|(_, t)| *t).ok_or_else(|| {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            let (last, first) = names.split_last().expect("options");
            self.err(format!(
                "must be {} or {last}, got {}",
                first.join(", "),
                self.v
            ))
        })
    }

    fn unknown(&self, table: &str, keys: &[&str]) -> Error {
        self.err(format!(
            "is not a [{table}] key; expected one of {}",
            keys.join(", ")
        ))
    }
}

fn parse_search(doc: &toml::Table, origin: &str, text: &str) -> Result<SearchSettings> {
    let mut s = SearchSettings {
        method: Method::Grid,
        trials: 0,
        seed: 0,
        startup_trials: 10,
        ei_candidates: 24,
        multivariate: true,
    };
    let Some(t) = table_of(doc, "search", origin, text)? else {
        return Ok(s);
    };
    const KEYS: &[&str] = &[
        "method",
        "trials",
        "seed",
        "startup_trials",
        "ei_candidates",
        "multivariate",
    ];
    for (k, v) in t {
        let e = Entry {
            origin,
            text,
            key: format!("search.{k}"),
            v,
        };
        match k.as_str() {
            "method" => {
                s.method = e.one_of(&[
                    ("grid", Method::Grid),
                    ("random", Method::Random),
                    ("tpe", Method::Tpe),
                ])?
            }
            "trials" => s.trials = e.count(1)?,
            "seed" => s.seed = e.count(0)? as u64,
            "startup_trials" => s.startup_trials = e.count(1)?,
            "ei_candidates" => s.ei_candidates = e.count(1)?,
            "multivariate" => {
                s.multivariate = v
                    .as_bool()
                    .ok_or_else(|| e.err(format!("must be true or false, got {v}")))?
            }
            _ => return Err(e.unknown("search", KEYS)),
        }
    }
    match s.method {
        Method::Grid if t.contains_key("trials") || t.contains_key("startup_trials") => {
            Err(err_at(origin, text, if t.contains_key("trials") { "search.trials" } else { "search.startup_trials" }, "applies to random and tpe; the grid runs every combination"))
        }
        Method::Random | Method::Tpe if s.trials == 0 => Err(err_at(origin, text, "search", format!("method = \"{}\" needs a budget: trials = N (configurations to try, each once per seed)", s.method.as_str()))),
        _ => Ok(s),
    }
}

fn parse_space(
    doc: &toml::Table,
    origin: &str,
    text: &str,
    known: &BTreeSet<String>,
) -> Result<Space> {
    let mut space = Space::default();
    let Some(t) = table_of(doc, "space", origin, text)? else {
        return Ok(space);
    };
    // Keys are dotted paths (`train.learning_rate = {...}`): a nested table is
    // a distribution when it has a distribution's key, else more path.
    fn walk(prefix: &str, t: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
        for (k, v) in t {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(inner)
                    if !["uniform", "log_uniform", "int", "choice"]
                        .iter()
                        .any(|d| inner.contains_key(*d)) =>
                {
                    walk(&p, inner, out)
                }
                other => out.push((p, other.clone())),
            }
        }
    }
    let mut flat = Vec::new();
    walk("", t, &mut flat);
    for (p, v) in flat {
        let key = format!("space.{p}");
        if !known.contains(&p) {
            return Err(err_at(
                origin,
                text,
                &key,
                format!("`{p}` is not a trial setting{}", suggest_path(&p, known)),
            ));
        }
        if p == "train.seed" {
            return Err(err_at(
                origin,
                text,
                &key,
                "seeds are swept with the top-level `seeds` list",
            ));
        }
        let d = parse_distribution(&v).map_err(|m| err_at(origin, text, &key, m))?;
        if DECODE_KEYS.contains(&p.as_str()) && !matches!(d, Distribution::Choice { .. }) {
            return Err(err_at(origin, text, &key, format!("changes how images are decoded, so it must be a {{ choice = [...] }} (each data set is decoded once, before the first trial); got {}", d.describe())));
        }
        space.params.push((p, d));
    }
    Ok(space)
}

fn parse_pruner(doc: &toml::Table, origin: &str, text: &str) -> Result<PrunerSettings> {
    let mut s = PrunerSettings::default();
    let Some(t) = table_of(doc, "pruner", origin, text)? else {
        return Ok(s);
    };
    const KEYS: &[&str] = &["method", "min_epochs", "reduction_factor", "startup_trials"];
    for (k, v) in t {
        let e = Entry {
            origin,
            text,
            key: format!("pruner.{k}"),
            v,
        };
        match k.as_str() {
            "method" => {
                s.method = e.one_of(&[
                    ("none", PrunerMethod::None),
                    ("median", PrunerMethod::Median),
                    ("asha", PrunerMethod::Asha),
                ])?
            }
            "min_epochs" => s.min_epochs = e.count(1)?,
            "reduction_factor" => s.reduction_factor = e.count(2)?,
            "startup_trials" => s.startup_trials = e.count(1)?,
            _ => return Err(e.unknown("pruner", KEYS)),
        }
    }
    Ok(s)
}

fn json_eq(a: &Json, b: &Json) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn edit1(a: &str, b: &str) -> bool {
    a.len().abs_diff(b.len()) <= 2 && suggest_key(a).is_none() && {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        common + 2 >= a.len().max(b.len())
    }
}

/// A weights file named in a spec: relative to `dir` (the spec's folder),
/// absolute and canonical where it exists, so trial keys and workers do not
/// depend on the directory `sweep run` ran from.
fn absolute_path(dir: Option<&Path>, f: &str) -> String {
    let p = Path::new(f);
    let joined = match dir {
        Some(d) if p.is_relative() => d.join(p),
        _ => p.to_path_buf(),
    };
    std::fs::canonicalize(&joined)
        .or_else(|_| std::path::absolute(&joined))
        .unwrap_or(joined)
        .display()
        .to_string()
}

/// [`absolute_path`] for the weights files among `model.init_from` candidates
/// (`"none"` and `SWEEP/N` stay as they are).
fn absolute_weights(dir: Option<&Path>, values: &mut [Json]) {
    for v in values {
        if let Json::String(s) = v {
            if sweep_train::config::is_weights_file(s) {
                *s = absolute_path(dir, s);
            }
        }
    }
}

/// A name usable as one folder: `[A-Za-z0-9._-]`, not starting with `.`, 1–100 chars.
pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Resets settings that have no effect in this configuration to their defaults, so
/// that configurations differing only there are one trial.
pub fn canonicalize(mut c: TrialConfig) -> TrialConfig {
    let d = sweep_train::config::ModelConfig::default();
    let t = sweep_train::config::TrainConfig::default();
    if c.model.init != InitScheme::Uniform {
        c.model.init_low = d.init_low;
        c.model.init_high = d.init_high;
    }
    if c.model.init != InitScheme::Normal {
        c.model.init_std = d.init_std;
    }
    if c.model.init != InitScheme::Constant {
        c.model.init_value = d.init_value;
    }
    if c.model.arch != Arch::Cnn {
        c.model.conv_channels = d.conv_channels.clone();
    }
    if c.model.hidden.is_none() {
        c.model.hidden = Some(c.model.hidden_sizes());
    }
    if c.train.optimizer != OptimizerKind::Sgd {
        c.train.momentum = t.momentum;
        c.train.nesterov = t.nesterov;
    } else {
        c.train.beta1 = t.beta1;
        c.train.beta2 = t.beta2;
        c.train.epsilon = t.epsilon;
    }
    if c.train.optimizer == OptimizerKind::Sgd && c.train.momentum == 0.0 {
        c.train.nesterov = false;
    }
    if c.train.weight_decay == 0.0 {
        c.train.decay_bias_and_norm = t.decay_bias_and_norm;
    }
    if c.train.lr_schedule != LrSchedule::Step {
        c.train.lr_step_epochs = t.lr_step_epochs;
        c.train.lr_step_gamma = t.lr_step_gamma;
    }
    if c.train.lr_schedule != LrSchedule::Cosine {
        c.train.lr_min = t.lr_min;
    }
    if matches!(&c.train.early_stopping, Some(e) if !e.enabled) {
        c.train.early_stopping = None;
    }
    if let Some(e) = &mut c.train.early_stopping {
        e.mode = Some(e.resolved_mode());
    }
    if c.train.freeze_epochs == Some(0) {
        c.train.freeze.clear();
    }
    if c.train.freeze.is_empty() {
        c.train.freeze_epochs = None;
    } else {
        c.train.freeze.sort();
        c.train.freeze.dedup();
    }
    c.data.augment.sort_by_key(|a| a.name());
    let aug = sweep_train::config::AugmentationSettings::default();
    let listed = |a: Augmentation| c.data.augment.contains(&a);
    if c.data.augment.is_empty() {
        c.data.augmentation.probability = aug.probability;
    }
    if !listed(Augmentation::BrightnessContrast) {
        c.data.augmentation.brightness_limit = aug.brightness_limit;
        c.data.augmentation.contrast_limit = aug.contrast_limit;
    }
    let a = &mut c.data.augmentation;
    if !listed(Augmentation::ShiftScaleRotate) {
        a.shift_limit = aug.shift_limit;
        a.scale_limit = aug.scale_limit;
        a.rotate_limit = aug.rotate_limit;
    }
    if !listed(Augmentation::RandomResizedCrop) {
        a.crop_scale = aug.crop_scale;
        a.crop_ratio = aug.crop_ratio;
    }
    if !listed(Augmentation::HueSaturationValue) {
        a.hue_shift_limit = aug.hue_shift_limit;
        a.sat_shift_limit = aug.sat_shift_limit;
        a.val_shift_limit = aug.val_shift_limit;
    }
    if !listed(Augmentation::GridDistortion) {
        a.grid_num_steps = aug.grid_num_steps;
        a.grid_distort_limit = aug.grid_distort_limit;
    }
    if !listed(Augmentation::ElasticTransform) {
        a.elastic_alpha = aug.elastic_alpha;
        a.elastic_sigma = aug.elastic_sigma;
    }
    if !listed(Augmentation::GaussNoise) {
        a.noise_std_range = aug.noise_std_range;
        a.noise_mean_range = aug.noise_mean_range;
        a.noise_per_channel = aug.noise_per_channel;
    }
    if !listed(Augmentation::CoarseDropout) {
        a.num_holes_range = aug.num_holes_range;
        a.hole_height_range = aug.hole_height_range;
        a.hole_width_range = aug.hole_width_range;
        a.hole_fill = aug.hole_fill;
    }
    c
}
