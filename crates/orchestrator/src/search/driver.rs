//! The scheduler's side of search, and the only part of it that reads the
//! store: it turns the recorded proposals into a sampler's history and records
//! the sampler's answer with its trials (one per seed) before any of them runs;
//! it reads a trial's peers at an epoch for the pruner. Every process that runs
//! trials of the sweep (a local `sweep run`, each `sweep worker`) proposes from
//! the history it reads at that moment; proposal numbers are unique in the
//! database, so two workers never record the same one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sweep_train::{EpochMetrics, TrialConfig};

use super::{proposal_rng, Decision, Observation, Peer, Point, Pruner, SearchSettings, Space};
use crate::error::{Error, Result};
use crate::spec::TrialPlan;
use crate::store::{NewTrial, Recorded, Store};

/// What a process needs to propose configurations without the spec file
/// (workers read it from the sweep's manifest).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchPlan {
    pub settings: SearchSettings,
    pub space: Space,
    /// The spec's base trial (paths resolved), which every point modifies.
    pub base: TrialConfig,
    pub seeds: Vec<u64>,
    pub objective: String,
    pub maximize: bool,
    /// Identifies space, base and seeds: proposals of another space are refused.
    pub space_hash: String,
    /// Decode settings → fingerprint of the data set they decode to (trial keys).
    pub fingerprints: BTreeMap<String, String>,
}

/// What asking for the next configuration did.
#[derive(Clone, Debug, PartialEq)]
pub enum Proposed {
    /// Proposal `number` was recorded with `trials` new trials.
    Added { number: i64, trials: usize },
    /// Nothing more to propose: the budget is used (or the space has no
    /// untried configuration left); the text says which.
    Done(String),
}

/// A trial config as a JSON object with `point` applied, validated and split
/// into one canonical trial per seed. The error names what is invalid.
pub fn plans_for_point(
    plan: &SearchPlan,
    point: &Point,
) -> std::result::Result<Vec<TrialPlan>, String> {
    let mut j = serde_json::to_value(&plan.base).expect("config serializes");
    for (k, v) in point {
        crate::spec::set_path(&mut j, k, v.clone());
    }
    let cfg: TrialConfig = serde_json::from_value(j).map_err(|e| e.to_string())?;
    cfg.validate()
        .map_err(|i| format!("`{}` {}", i.key, i.message))?;
    let swept: Vec<String> = plan.space.params.iter().map(|(p, _)| p.clone()).collect();
    Ok(crate::spec::seed_plans(&cfg, &plan.seeds, &swept))
}

/// The history a sampler sees: each proposal's point, its mean objective over
/// the seeds that finished (as a loss), and whether any seed was pruned.
pub fn observations(
    rows: &[crate::store::ProposalRow],
    maximize: bool,
) -> Result<Vec<Observation>> {
    rows.iter()
        .map(|r| {
            let point: Point = serde_json::from_str(&r.params_json)
                .map_err(|e| Error::Store(format!("proposal {} is not readable: {e}", r.number)))?;
            let loss = r
                .mean_complete()
                .map(|(mean, _)| if maximize { -mean } else { mean });
            Ok(Observation {
                point,
                loss,
                pruned: r.any_pruned(),
            })
        })
        .collect()
}

/// Asks the sampler for the next configuration and records it with its
/// trials. `new_trial` turns a trial plan into the row to insert (its key
/// comes from the data set's fingerprint).
pub async fn propose_next(
    store: &Store,
    sweep_id: i64,
    plan: &SearchPlan,
    new_trial: impl Fn(&TrialPlan) -> NewTrial,
) -> Result<Proposed> {
    let Some(sampler) = super::sampler(&plan.settings) else {
        return Ok(Proposed::Done("a grid has no sampler".into()));
    };
    const DRAWS: usize = 100;
    // Another worker may record the same number first: read again and retry.
    for _ in 0..1000 {
        let rows = store.proposal_history(sweep_id, &plan.objective).await?;
        let n = rows.len();
        if n >= plan.settings.trials {
            return Ok(Proposed::Done(format!(
                "the budget of {} configurations is used",
                plan.settings.trials
            )));
        }
        let history = observations(&rows, plan.maximize)?;
        let mut rng = proposal_rng(plan.settings.seed, n);
        let mut invalid = None;
        let mut taken = false;
        for _ in 0..DRAWS {
            let point = sampler.propose(&plan.space, &history, &mut rng);
            let plans = match plans_for_point(plan, &point) {
                Ok(p) => p,
                Err(e) => {
                    invalid = Some((point, e));
                    continue;
                }
            };
            let trials: Vec<NewTrial> = plans.iter().map(&new_trial).collect();
            let params_json = serde_json::to_string(&point).expect("point serializes");
            match store
                .add_proposal(
                    sweep_id,
                    n as i64,
                    &params_json,
                    plan.settings.method.as_str(),
                    &plan.space_hash,
                    &trials,
                )
                .await?
            {
                Recorded::Added(k) => {
                    return Ok(Proposed::Added {
                        number: n as i64,
                        trials: k,
                    })
                }
                Recorded::Taken => {
                    taken = true;
                    break;
                }
                Recorded::Duplicate => continue,
            }
        }
        if taken {
            continue;
        }
        return match invalid {
            Some((point, e)) if plan.space.finite_size().is_none() => Err(Error::Other(format!(
                "the sampler drew {DRAWS} configurations in a row that are not valid trials; the last, {}, fails: {e}. Narrow the [space] so that its combinations are valid",
                serde_json::to_string(&point).unwrap_or_default()
            ))),
            _ => Ok(Proposed::Done(format!(
                "no untried configuration found in {DRAWS} draws (the space has {} configurations)",
                plan.space
                    .finite_size()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "many".into())
            ))),
        };
    }
    Err(Error::Store(
        "proposal numbers kept being taken by other workers".into(),
    ))
}

/// The objective's value in one epoch's metrics, as a loss (lower is better).
pub fn epoch_loss(m: &EpochMetrics, objective: &str, maximize: bool) -> f64 {
    let v = match objective {
        "val.macro_f1" => m.val_macro_f1,
        "val.accuracy" => m.val_accuracy,
        "val.balanced_accuracy" => m.val_balanced_accuracy,
        "train.loss" => m.train_loss,
        _ => m.val_loss,
    };
    if maximize {
        -v
    } else {
        v
    }
}

/// The pruner's decision for a trial after `epoch`, from its peers of the same
/// seed in the store. `own` holds the trial's losses for epochs 1..=epoch.
#[allow(clippy::too_many_arguments)]
pub async fn judge(
    store: &Store,
    pruner: &dyn Pruner,
    sweep_id: i64,
    trial_id: i64,
    seed: i64,
    epoch: usize,
    own: &[f64],
    objective: &str,
    maximize: bool,
) -> Result<Decision> {
    let (split, name) = objective.split_once('.').unwrap_or(("val", "loss"));
    let peers: Vec<Peer> = store
        .peer_values(sweep_id, trial_id, seed, epoch as i64, split, name)
        .await?
        .into_iter()
        .map(|(finished, v)| Peer {
            loss: if maximize { -v } else { v },
            finished,
        })
        .collect();
    Ok(pruner.decide(epoch, own, &peers, objective))
}
