//! The scheduler's side of search, and the only part of it that reads the
//! store: it turns the recorded proposals into a sampler's history and records
//! the sampler's answer with its trials (one per seed) before any of them runs;
//! it reads a trial's peers at an epoch for the pruner. Every process that runs
//! trials of the sweep (a local `sweep run`, each `sweep worker`) proposes from
//! the history it reads at that moment; proposal numbers are unique in the
//! database, so two workers never record the same one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sweep_train::TrialConfig;

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

/// The pruner's decision for a trial after `epoch`, made for its whole
/// configuration. `configuration` holds the ids of the configuration's trials
/// (one per seed, this one included; [`Store::configuration_trials`]).
///
/// - A configuration is pruned as a whole: once one of its trials has been
///   pruned, its other trials stop at their next epoch and those not started
///   never start (a configuration with a pruned seed has lost, so the rest of
///   its epochs would be spent for nothing).
/// - At an epoch the rule looks at (a rung), the configuration is judged once,
///   when the first of its trials gets there (the lowest-numbered, when
///   several have): on the mean over its seeds that have reached that epoch
///   (S), against every other configuration that has reached it on all of S,
///   averaged over the same S. Seeds stay paired (each draws its own
///   validation split). Its later seeds pass that rung with it: testing every
///   seed's arrival again would make a configuration survive only if it won
///   every one of several noisy tests (measured on the skin set: 3 of 173
///   TPE configurations finished all their seeds that way).
#[allow(clippy::too_many_arguments)]
pub async fn judge(
    store: &Store,
    pruner: &dyn Pruner,
    sweep_id: i64,
    trial_id: i64,
    configuration: &[i64],
    epoch: usize,
    epochs: usize,
    objective: &str,
    maximize: bool,
) -> Result<Decision> {
    let others: Vec<i64> = configuration
        .iter()
        .copied()
        .filter(|id| *id != trial_id)
        .collect();
    if let Some((number, seed, at, _)) = store.pruned_among(&others).await? {
        return Ok(Decision::Prune(format!(
            "pruned with its configuration: trial {number} (seed {seed}) of the same configuration was pruned at epoch {at}"
        )));
    }
    if !pruner.judges(epoch, epochs) {
        return Ok(Decision::Continue);
    }
    let (split, name) = objective.split_once('.').unwrap_or(("val", "loss"));
    let as_loss = |v: f64| if maximize { -v } else { v };
    // this configuration's seeds that reached `epoch`, and their mean per epoch
    let mine = store
        .values_through(configuration, epoch as i64, split, name)
        .await?;
    // one decision per configuration and rung: by the first of its trials to
    // get there (the lowest-numbered, when several have); the others pass
    // with their configuration instead of being tested again
    if !mine.iter().any(|(id, _, _)| *id == trial_id)
        || mine.iter().any(|(id, _, _)| *id < trial_id)
    {
        return Ok(Decision::Continue);
    }
    let seeds: Vec<i64> = mine.iter().map(|(_, s, _)| *s).collect();
    let own_seed = mine
        .iter()
        .find(|(id, _, _)| *id == trial_id)
        .map_or(0, |(_, s, _)| *s);
    let own: Vec<f64> = (0..epoch)
        .map(|e| as_loss(mine.iter().map(|(_, _, v)| v[e]).sum::<f64>() / mine.len() as f64))
        .collect();
    // every other configuration's mean over the same seeds at `epoch`
    let mut by_config: BTreeMap<String, BTreeMap<i64, (bool, f64)>> = BTreeMap::new();
    for v in store
        .rung_values(sweep_id, epoch as i64, split, name)
        .await?
    {
        if !configuration.contains(&v.trial) {
            by_config
                .entry(v.configuration)
                .or_default()
                .insert(v.seed, (v.finished, v.value));
        }
    }
    let peers: Vec<Peer> = by_config
        .values()
        .filter(|vals| seeds.iter().all(|s| vals.contains_key(s)))
        .map(|vals| Peer {
            loss: as_loss(seeds.iter().map(|s| vals[s].1).sum::<f64>() / seeds.len() as f64),
            finished: seeds.iter().all(|s| vals[s].0),
        })
        .collect();
    let decision = pruner.decide(epoch, &own, &peers, objective);
    if let Decision::Prune(rule) = &decision {
        let listed = seeds
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let rule = format!(
            "{rule}; configurations compared by their mean over seed{} {listed}",
            if seeds.len() == 1 { "" } else { "s" }
        );
        store
            .prune_waiting(
                &others,
                &format!("pruned with its configuration before it started: its seed {own_seed} was pruned at epoch {epoch}"),
            )
            .await?;
        return Ok(Decision::Prune(rule));
    }
    Ok(decision)
}
