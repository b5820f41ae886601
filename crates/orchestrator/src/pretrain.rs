//! `model.init_from` in a sweep: the file each source names, found before any
//! trial runs. A weights file is taken relative to the spec; `SWEEP/N` is the
//! best checkpoint of trial N of a sweep in the same database, which must be
//! complete: a sweep that depends on an unfinished trial refuses to start.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sweep_train::config::{init_from_trial, is_weights_file};

use crate::error::{Error, Result};
use crate::query;
use crate::spec::{SweepSpec, TrialPlan};
use crate::store::Store;

/// Every `model.init_from` the sweep's trials can have: the planned trials',
/// the base's, and a search space's choices.
pub fn sources(spec: &SweepSpec, plans: &[TrialPlan]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = plans
        .iter()
        .filter_map(|p| p.config.model.init_from.clone())
        .collect();
    let domains = spec.swept_domains();
    // the base's value only counts when nothing sweeps it away
    if !domains.iter().any(|(k, _)| k == "model.init_from") {
        out.extend(spec.base.model.init_from.clone());
    }
    for (key, values) in domains {
        if key == "model.init_from" {
            out.extend(
                values
                    .iter()
                    .filter_map(|v| v.as_str())
                    .filter(|s| !s.is_empty() && *s != "none")
                    .map(str::to_string),
            );
        }
    }
    out
}

/// The file behind each source, or the first source that cannot be used, named
/// with the spec and what to do.
pub async fn resolve(
    store: &Store,
    spec: &SweepSpec,
    sources: &BTreeSet<String>,
    results: &Path,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let refuse =
        |why: String| Error::Other(format!("{}: model.init_from = {why}", spec.path.display()));
    for src in sources {
        if is_weights_file(src) {
            // (the spec made it absolute; a relative one is taken from here)
            let p = PathBuf::from(src);
            let p = std::path::absolute(&p).unwrap_or(p);
            if !p.is_file() {
                return Err(refuse(format!("{src:?}: no such file ({})", p.display())));
            }
            out.insert(src.clone(), p);
            continue;
        }
        let Some((sweep, number)) = init_from_trial(src) else {
            return Err(refuse(format!(
                "{src:?}: neither a .safetensors file nor SWEEP/N"
            )));
        };
        if sweep == spec.name {
            return Err(refuse(format!(
                "{src:?}: a sweep cannot start from one of its own trials (they are planned together); put the pretraining in a sweep of its own"
            )));
        }
        let info = query::sweep(store, sweep)
            .await
            .map_err(|e| refuse(format!("{src:?}: {e}")))?;
        let Some(t) = query::trial(store, info.id, number).await? else {
            return Err(refuse(format!(
                "{src:?}: sweep `{sweep}` has no trial {number}"
            )));
        };
        if t.state == "pruned" {
            return Err(refuse(format!(
                "{src:?}: trial {number} of sweep `{sweep}` was pruned and will not complete: name a complete trial (`sweep compare {sweep}` ranks them)"
            )));
        }
        if t.state != "complete" {
            return Err(refuse(format!(
                "{src:?}: trial {number} of sweep `{sweep}` is {}, not complete; this sweep starts from its weights, so it waits: finish `{sweep}` first (`sweep run` on its spec{})",
                t.state,
                if t.state == "failed" { ", with --retry-failed" } else { "" }
            )));
        }
        let Some(ck) = t.artifacts.get("checkpoint") else {
            return Err(refuse(format!(
                "{src:?}: trial {number} of sweep `{sweep}` kept no checkpoint"
            )));
        };
        let path = info
            .locate(ck, Some(results))
            .map_err(|e| refuse(format!("{src:?}: {e}")))?;
        // absolute: workers run in other folders (Slurm's is the results folder)
        out.insert(src.clone(), std::path::absolute(&path).unwrap_or(path));
    }
    Ok(out)
}
