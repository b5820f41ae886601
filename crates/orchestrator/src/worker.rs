//! The worker side of the protocol: one trial from a [`Job`], events as JSON lines.
//! Runs in its own process (`sweep worker`), so a panic, an out-of-memory kill or a
//! device fault takes down one trial, not the sweep.

use std::io::Write;

use sweep_train::config::Monitor;
use sweep_train::{run_trial, Device, EpochMetrics, Observer, StopFlag, TrialOptions, TrialStart};

use crate::cache;
use crate::error::{Error, Result};
use crate::protocol::{Event, Job};

struct Lines<'a> {
    out: &'a mut dyn Write,
}

impl Lines<'_> {
    fn send(&mut self, ev: &Event) {
        // A closed pipe means the orchestrator is gone; the trial's result would be
        // lost anyway, so write errors are ignored here and the run ends normally.
        let _ = serde_json::to_writer(&mut *self.out, ev);
        let _ = self.out.write_all(b"\n");
        let _ = self.out.flush();
    }
}

impl Observer for Lines<'_> {
    fn on_start(&mut self, start: &TrialStart) {
        self.send(&Event::Start {
            start: start.clone(),
        });
    }
    fn on_epoch(&mut self, metrics: &EpochMetrics) {
        self.send(&Event::Epoch {
            metrics: metrics.clone(),
        });
    }
}

/// The metric that picks the best epoch for an objective.
pub fn monitor_for(objective: &str) -> Monitor {
    match objective {
        "val.macro_f1" => Monitor::ValMacroF1,
        "val.accuracy" => Monitor::ValAccuracy,
        "val.balanced_accuracy" => Monitor::ValBalancedAccuracy,
        "train.loss" => Monitor::TrainLoss,
        _ => Monitor::ValLoss,
    }
}

pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        other => Err(Error::Worker(format!("device `{other}` is not available in this build (CPU only; the `cuda` feature adds cuda:N)"))),
    }
}

/// Runs one job, writing events to `out`. Errors are reported as an `error` event
/// and also returned.
pub fn run_job(job: &Job, out: &mut dyn Write, stop: &StopFlag) -> Result<()> {
    let mut lines = Lines { out };
    let result = (|| -> Result<Box<sweep_train::TrialOutcome>> {
        let ds = cache::read(&job.cache)?;
        let dev = device(&job.device)?;
        let opts = TrialOptions {
            checkpoint_dir: Some(job.trial_dir.clone()),
            best_metric: monitor_for(&job.objective),
            ..TrialOptions::default()
        };
        Ok(Box::new(run_trial(
            &job.config,
            &ds,
            &dev,
            &opts,
            &mut lines,
            stop,
        )?))
    })();
    match result {
        Ok(outcome) => {
            lines.send(&Event::Done { outcome });
            Ok(())
        }
        Err(e) => {
            lines.send(&Event::Error {
                message: e.to_string(),
            });
            Err(e)
        }
    }
}
