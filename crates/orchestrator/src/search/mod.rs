//! Search: the two questions the scheduler asks, each behind one small trait.
//!
//! - [`Sampler`]: "what configuration runs next?", answered from the history of
//!   configurations so far (random, TPE). The grid needs no history: its
//!   configurations are all recorded when the sweep starts ([`crate::spec`]).
//! - [`Pruner`]: "should this trial go on after epoch k?", answered from the
//!   values the other configurations had at that epoch (median, ASHA).
//!
//! The scheduler asks and never knows which strategy answers; strategies never
//! see the store, a process or a tensor. Seeds are paired, not pooled: a
//! sampler sees each configuration's mean over its finished seeds, a pruner
//! judges a configuration on the mean over its seeds that reached the epoch,
//! against other configurations averaged over the same seeds (each seed draws
//! its own validation split), and prunes a configuration as a whole.

pub mod asha;
pub mod bench;
pub mod driver;
pub mod median;
pub mod random;
pub mod space;
pub mod tpe;

use serde::{Deserialize, Serialize};
use sweep_train::rng::Rng;

pub use space::{Distribution, Point, Space};

/// `[search]`: how configurations are chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchSettings {
    pub method: Method,
    /// Configurations to try (each runs once per seed).
    pub trials: usize,
    /// The sampler's own seed.
    pub seed: u64,
    /// Random configurations before TPE starts modelling.
    pub startup_trials: usize,
    /// Candidates TPE scores per proposal.
    pub ei_candidates: usize,
    /// TPE models the settings jointly (true, Optuna 5's default) or one by one.
    #[serde(default = "yes")]
    pub multivariate: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Grid,
    Random,
    Tpe,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Grid => "grid",
            Method::Random => "random",
            Method::Tpe => "tpe",
        }
    }
}

/// `[pruner]`: when a trial is stopped early for losing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrunerSettings {
    pub method: PrunerMethod,
    /// No trial is stopped before it has run this many epochs (ASHA's first rung).
    pub min_epochs: usize,
    /// ASHA keeps the top 1/`reduction_factor` at each rung.
    pub reduction_factor: usize,
    /// The median rule waits for this many finished configurations.
    pub startup_trials: usize,
}

impl Default for PrunerSettings {
    fn default() -> Self {
        PrunerSettings {
            method: PrunerMethod::None,
            min_epochs: 1,
            reduction_factor: 3,
            startup_trials: 5,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrunerMethod {
    None,
    Median,
    Asha,
}

/// One configuration tried so far, as a sampler sees it.
#[derive(Clone, Debug)]
pub struct Observation {
    pub point: Point,
    /// The objective as a loss (lower is better: a maximized metric is negated),
    /// averaged over the configuration's finished seeds. None when none finished.
    pub loss: Option<f64>,
    /// Some seed of it was pruned: it lost to its peers, whatever its other seeds did.
    pub pruned: bool,
}

/// "What configuration runs next?"
pub trait Sampler: Send + Sync {
    /// The next configuration, from the configurations proposed so far (in
    /// proposal order; the ones still running have `loss: None`) and a random
    /// stream that is a function of the sampler's seed and the proposal's number,
    /// so that a rerun proposes the same configuration from the same history.
    fn propose(&self, space: &Space, history: &[Observation], rng: &mut Rng) -> Point;
}

/// The sampler for a method (None for the grid, which records every
/// configuration up front).
pub fn sampler(s: &SearchSettings) -> Option<Box<dyn Sampler>> {
    match s.method {
        Method::Grid => None,
        Method::Random => Some(Box::new(random::RandomSampler)),
        Method::Tpe => Some(Box::new(tpe::TpeSampler {
            startup_trials: s.startup_trials,
            ei_candidates: s.ei_candidates,
            multivariate: s.multivariate,
        })),
    }
}

/// The random stream of proposal `n`: independent of every other proposal's.
pub fn proposal_rng(seed: u64, n: usize) -> Rng {
    Rng::stream(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n as u64,
        "search.proposal",
    )
}

/// Another configuration at the epoch being judged, averaged over the same seeds.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// Its objective at this epoch, as a loss (lower is better).
    pub loss: f64,
    /// It has finished (complete; the median rule counts only these).
    pub finished: bool,
}

/// A pruner's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Continue,
    /// Stop the trial; the text says which rule, at which epoch and rung,
    /// against what threshold.
    Prune(String),
}

/// "Should this trial go on after epoch k?"
pub trait Pruner: Send + Sync {
    /// Whether the rule looks at epoch `epoch` of a trial of `epochs` at all (the
    /// scheduler reads peers only then). Never the last epoch.
    fn judges(&self, epoch: usize, epochs: usize) -> bool;
    /// The decision after `epoch`, from the configuration's objective values so
    /// far (`own[i]` = epoch i+1, as losses, averaged over its seeds that reached
    /// `epoch`) and its peers' values at `epoch`.
    /// `metric` names the objective in the reason.
    fn decide(&self, epoch: usize, own: &[f64], peers: &[Peer], metric: &str) -> Decision;
}

/// The pruner for `[pruner]` (None: trials always run to their end).
pub fn pruner(p: &PrunerSettings) -> Option<Box<dyn Pruner>> {
    match p.method {
        PrunerMethod::None => None,
        PrunerMethod::Median => Some(Box::new(median::MedianPruner {
            min_epochs: p.min_epochs,
            startup_trials: p.startup_trials,
        })),
        PrunerMethod::Asha => Some(Box::new(asha::AshaPruner {
            min_epochs: p.min_epochs,
            reduction_factor: p.reduction_factor,
        })),
    }
}

/// A loss shown as the metric's own value (losses of maximized metrics are negated).
pub(crate) fn shown(loss: f64, metric: &str) -> String {
    let v = if metric.ends_with("loss") {
        loss
    } else {
        -loss
    };
    format!("{v:.4}")
}
