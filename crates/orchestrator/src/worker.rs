//! The worker side of the protocol: one trial from a [`Job`], events as JSON lines.
//! Runs in its own process (`sweep worker`), so a panic, an out-of-memory kill or a
//! device fault takes down one trial, not the sweep.

use std::io::Write;

use sweep_train::config::Monitor;
use sweep_train::{run_trial, Device, EpochMetrics, Observer, StopFlag, TrialOptions, TrialStart};

use crate::cache;
use crate::error::{Error, Result};
use crate::protocol::{Event, Job, Reply};

struct Lines<'a> {
    out: &'a mut dyn Write,
    /// The orchestrator's replies after each epoch, when it judges this trial.
    replies: Option<&'a mut dyn std::io::BufRead>,
    tb: Option<crate::tb::TrialLog>,
    /// The first TensorBoard write error (the trial goes on; the error is reported).
    tb_error: Option<String>,
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
        if let Some(Err(e)) = self.tb.as_mut().map(|t| t.epoch(metrics)) {
            self.tb_error.get_or_insert(e.to_string());
        }
    }
    fn on_histograms(&mut self, epoch: usize, hs: &[sweep_train::Histogram]) {
        if let Some(Err(e)) = self.tb.as_mut().map(|t| t.histograms(epoch, hs)) {
            self.tb_error.get_or_insert(e.to_string());
        }
    }
    fn on_probe(&mut self, probe: &sweep_train::Probe) {
        if let Some(Err(e)) = self.tb.as_mut().map(|t| t.probe(probe)) {
            self.tb_error.get_or_insert(e.to_string());
        }
    }
    fn stop_after_epoch(&mut self, _metrics: &EpochMetrics) -> Option<String> {
        let replies = self.replies.as_mut()?;
        let mut line = String::new();
        // End of input or an unreadable line: go on (the orchestrator is
        // stopping, and its Ctrl-C or its death stops the trial anyway).
        replies.read_line(&mut line).ok()?;
        match serde_json::from_str::<Reply>(line.trim_end()).ok()? {
            Reply::Continue => None,
            Reply::Prune { rule } => Some(rule),
        }
    }
}

/// The first validation images with the checkpoint's predictions, framed green or
/// red, and a legend naming true and predicted classes.
fn image_grid(
    job: &Job,
    ds: &sweep_train::Dataset,
    o: &sweep_train::TrialOutcome,
    dev: &Device,
) -> Option<(Vec<u8>, u32, u32, String)> {
    let ckpt = o.checkpoint.as_ref()?;
    if job.logging.image_grid == 0 {
        return None;
    }
    let split = sweep_train::trainer::split_for(&job.config, ds).ok()?;
    let idx: Vec<usize> = split
        .val
        .iter()
        .take(job.logging.image_grid)
        .copied()
        .collect();
    let pred = sweep_train::trainer::predict_checkpoint(&job.config, ckpt, ds, &idx, dev).ok()?;
    let images: Vec<&[u8]> = idx.iter().map(|i| ds.image(*i)).collect();
    let correct: Vec<bool> = idx
        .iter()
        .zip(&pred)
        .map(|(i, p)| ds.label(*i) == *p)
        .collect();
    let (png, w, h) = crate::tb::grid_png(&images, ds.image_size, ds.channels, &correct);
    let legend = idx
        .iter()
        .zip(&pred)
        .enumerate()
        .map(|(n, (i, p))| {
            format!(
                "{}. true {} · predicted {}{}",
                n + 1,
                ds.classes[ds.label(*i) as usize],
                ds.classes[*p as usize],
                if ds.label(*i) == *p { "" } else { " ✗" }
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    Some((png, w, h, format!("best checkpoint on the first validation images (row by row; green frame: right, red: wrong)\n\n{legend}")))
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
        #[cfg(feature = "cuda")]
        other if other.starts_with("cuda:") => {
            let n: usize = other[5..]
                .parse()
                .map_err(|_| Error::Worker(format!("device `{other}` is not cuda:N")))?;
            Device::new_cuda(n)
                .map_err(|e| Error::Worker(format!("device `{other}`: {e}")))
        }
        other => Err(Error::Worker(format!("device `{other}` is not available in this build (CPU only; the `cuda` feature adds cuda:N)"))),
    }
}

/// Runs one job, writing events to `out` and, when the job asks after each
/// epoch, reading the orchestrator's replies from `replies`. Errors are
/// reported as an `error` event and also returned.
pub fn run_job(
    job: &Job,
    out: &mut dyn Write,
    replies: &mut dyn std::io::BufRead,
    stop: &StopFlag,
) -> Result<()> {
    let mut lines = Lines {
        out,
        replies: job.ask_after_epoch.then_some(replies),
        tb: None,
        tb_error: None,
    };
    let result = (|| -> Result<Box<sweep_train::TrialOutcome>> {
        // The decoded pixels are a read-only map shared by every worker;
        // SWEEP_WORKER_DATA=copy reads a private copy instead (for
        // scripts/bench-sweep, which measures the difference).
        let ds = if std::env::var_os("SWEEP_WORKER_DATA").is_some_and(|v| v == "copy") {
            cache::read(&job.cache)?
        } else {
            cache::map(&job.cache)?
        };
        let dev = device(&job.device)?;
        // Fault injection for the fault tests: a real panic in a real worker process.
        if std::env::var("SWEEP_FAULT_PANIC_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            == Some(job.config.train.seed)
        {
            panic!(
                "injected fault (SWEEP_FAULT_PANIC_SEED={})",
                job.config.train.seed
            );
        }
        if let Some(dir) = &job.tensorboard_dir {
            let hp: Vec<(String, sweep_tensorboard::HValue)> = job
                .hparams
                .iter()
                .map(|(k, v)| (k.clone(), crate::tb::hvalue(v)))
                .collect();
            let group = job
                .hparams
                .iter()
                .filter(|(k, _)| k != "seed")
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            lines.tb = Some(crate::tb::TrialLog::start(dir, &job.config, &hp, &group)?);
        }
        let opts = TrialOptions {
            checkpoint_dir: Some(job.trial_dir.clone()),
            best_metric: monitor_for(&job.objective),
            histogram_every: (job.tensorboard_dir.is_some() && job.logging.histogram_every > 0)
                .then_some(job.logging.histogram_every),
            gradient_histograms: job.logging.gradient_histograms,
            init_weights: job.init_weights.clone(),
            ..TrialOptions::default()
        };
        let outcome = run_trial(&job.config, &ds, &dev, &opts, &mut lines, stop)?;
        if lines.tb.is_some()
            && !matches!(outcome.stop, sweep_train::StopReason::Interrupted { .. })
        {
            let grid = image_grid(job, &ds, &outcome, &dev);
            let step = outcome.report_epoch.unwrap_or(outcome.epochs.len()) as i64;
            let ok = outcome.report.is_some();
            if let Some(Err(e)) = lines
                .tb
                .as_mut()
                .map(|t| t.finish(step, outcome.report.as_ref(), grid, ok))
            {
                lines.tb_error.get_or_insert(e.to_string());
            }
        }
        if let Some(e) = &lines.tb_error {
            // A full disk or an unwritable folder under the log is the
            // machine's fault: the trial is rerun once it is fixed, so that its
            // log is whole.
            if crate::fault::of_message(e).is_some() {
                return Err(Error::Fault(format!("TensorBoard log: {e}")));
            }
            eprintln!("warning: TensorBoard log incomplete: {e}");
        }
        Ok(Box::new(outcome))
    })();
    match result {
        Ok(outcome) => {
            lines.send(&Event::Done { outcome });
            Ok(())
        }
        Err(e) => {
            let message = e.to_string();
            if e.is_fault() || crate::fault::of_message(&message).is_some() {
                lines.send(&Event::Fault { message });
            } else {
                lines.send(&Event::Error { message });
            }
            Err(e)
        }
    }
}
