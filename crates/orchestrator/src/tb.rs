//! A trial's TensorBoard log, written by its worker: per-epoch scalars, weight and
//! gradient histograms, the resolved config and the classification report as
//! text, the confusion matrix as a heat map, a grid of validation images, and the
//! trial's hparams session. The sweep's hparams experiment is written once by the
//! scheduler.

use std::path::Path;

use sweep_tensorboard::{EventWriter, HValue, Histo};
use sweep_train::{EpochMetrics, Histogram, Probe, Report, TrialConfig};

use crate::error::{Error, Result};

fn tb_err(e: sweep_tensorboard::Error) -> Error {
    Error::Other(format!("tensorboard: {e}"))
}

/// The scalar tags, and the ones the hparams dashboard shows as metrics.
pub const METRIC_TAGS: &[(&str, &str)] = &[
    ("val/macro_f1", "validation macro-F1"),
    ("val/balanced_accuracy", "validation balanced accuracy"),
    ("accuracy/val", "validation accuracy"),
    ("loss/val", "validation loss"),
    ("loss/train", "training loss"),
];

/// A swept value as an hparams value.
pub fn hvalue(v: &serde_json::Value) -> HValue {
    match v {
        serde_json::Value::Bool(b) => HValue::Bool(*b),
        serde_json::Value::Number(n) => HValue::Number(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => HValue::Text(s.clone()),
        other => HValue::Text(other.to_string()),
    }
}

/// Writes the sweep-level hparams experiment into `dir` (the sweep's tensorboard root).
pub fn write_experiment(
    dir: &Path,
    name: &str,
    description: &str,
    grid: &[(String, Vec<serde_json::Value>)],
    seeds: &[u64],
) -> Result<()> {
    let exp_dir = dir.join("_experiment");
    let _ = std::fs::remove_dir_all(&exp_dir);
    let mut w = EventWriter::create(&exp_dir, "sweep").map_err(tb_err)?;
    let mut hp: Vec<(String, Vec<HValue>)> = grid
        .iter()
        .map(|(p, vals)| (p.clone(), vals.iter().map(hvalue).collect()))
        .collect();
    hp.push((
        "seed".into(),
        seeds.iter().map(|s| HValue::Number(*s as f64)).collect(),
    ));
    let metrics: Vec<(String, String)> = METRIC_TAGS
        .iter()
        .map(|(t, d)| (t.to_string(), d.to_string()))
        .collect();
    w.hparams_experiment(name, description, &hp, &metrics)
        .map_err(tb_err)?;
    w.flush().map_err(tb_err)
}

pub struct TrialLog {
    w: EventWriter,
}

fn png(width: u32, height: u32, rgb: Vec<u8>) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_raw(width, height, rgb)
        .expect("buffer matches size")
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("PNG encodes in memory");
    out.into_inner()
}

/// A confusion-matrix heat map: cell shade by the row-normalized count (recall),
/// white to dark blue; one pixel of grid between cells.
pub fn confusion_png(counts: &[Vec<u64>]) -> (Vec<u8>, u32) {
    let k = counts.len().max(1);
    let cell = (384 / k).clamp(3, 48) as u32;
    let side = cell * k as u32 + 1;
    let mut rgb = vec![200u8; (side * side * 3) as usize];
    for (i, row) in counts.iter().enumerate() {
        let total: u64 = row.iter().sum();
        for (j, c) in row.iter().enumerate() {
            let f = if total == 0 {
                0.0
            } else {
                *c as f64 / total as f64
            };
            let color = [
                (255.0 - 247.0 * f) as u8,
                (255.0 - 207.0 * f) as u8,
                (255.0 - 148.0 * f) as u8,
            ];
            for y in 1..cell {
                for x in 1..cell {
                    let (px, py) = (j as u32 * cell + x, i as u32 * cell + y);
                    let o = ((py * side + px) * 3) as usize;
                    rgb[o..o + 3].copy_from_slice(&color);
                }
            }
        }
    }
    (png(side, side, rgb), side)
}

/// Validation images in a grid, each framed green (right) or red (wrong).
pub fn grid_png(
    images: &[&[u8]],
    size: usize,
    channels: usize,
    correct: &[bool],
) -> (Vec<u8>, u32, u32) {
    let scale = (64 / size.max(1)).max(1);
    let tile = (size * scale + 4) as u32;
    let cols = (images.len() as f64).sqrt().ceil().max(1.0) as u32;
    let rows = (images.len() as u32).div_ceil(cols).max(1);
    let (w, h) = (cols * tile, rows * tile);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    for (n, img) in images.iter().enumerate() {
        let (tx, ty) = ((n as u32 % cols) * tile, (n as u32 / cols) * tile);
        let frame = if correct[n] {
            [40u8, 170, 60]
        } else {
            [210u8, 40, 40]
        };
        for y in 0..tile {
            for x in 0..tile {
                let o = (((ty + y) * w + tx + x) * 3) as usize;
                let inner = x >= 2 && y >= 2 && x < tile - 2 && y < tile - 2;
                if !inner {
                    rgb[o..o + 3].copy_from_slice(&frame);
                    continue;
                }
                let (sx, sy) = (((x - 2) as usize) / scale, ((y - 2) as usize) / scale);
                let p = (sy * size + sx) * channels;
                let px = if channels == 1 {
                    [img[p]; 3]
                } else {
                    [img[p], img[p + 1], img[p + 2]]
                };
                rgb[o..o + 3].copy_from_slice(&px);
            }
        }
    }
    (png(w, h, rgb), w, h)
}

/// The classification report as a Markdown table.
pub fn report_markdown(r: &Report) -> String {
    let mut s =
        String::from("| class | precision | recall | f1 | support |\n|---|---|---|---|---|\n");
    for c in &r.classes {
        s += &format!(
            "| {} | {:.4} | {:.4} | {:.4} | {} |\n",
            c.name, c.precision, c.recall, c.f1, c.support
        );
    }
    s += &format!(
        "\naccuracy {:.4} · balanced accuracy {:.4} · macro F1 {:.4} · weighted F1 {:.4}",
        r.accuracy, r.balanced_accuracy, r.macro_f1, r.weighted_f1
    );
    if let Some(a) = r.macro_auc {
        s += &format!(" · macro AUC {a:.4}");
    }
    s
}

impl TrialLog {
    /// Starts a fresh log in `dir` (an earlier attempt's files are removed) with the
    /// trial's hparams and its resolved config.
    pub fn start(
        dir: &Path,
        cfg: &TrialConfig,
        hparams: &[(String, HValue)],
        group: &str,
    ) -> Result<TrialLog> {
        let _ = std::fs::remove_dir_all(dir);
        let mut w = EventWriter::create(dir, "trial").map_err(tb_err)?;
        w.hparams_session_start(hparams, group).map_err(tb_err)?;
        w.text("config", 0, &format!("```\n{}\n```", cfg.to_json()))
            .map_err(tb_err)?;
        w.flush().map_err(tb_err)?;
        Ok(TrialLog { w })
    }

    pub fn epoch(&mut self, m: &EpochMetrics) -> Result<()> {
        let s = m.epoch as i64;
        for (tag, v) in [
            ("loss/train", m.train_loss),
            ("loss/val", m.val_loss),
            ("accuracy/train", m.train_accuracy),
            ("accuracy/val", m.val_accuracy),
            ("val/macro_f1", m.val_macro_f1),
            ("val/balanced_accuracy", m.val_balanced_accuracy),
            ("learning_rate", m.learning_rate),
            ("time/epoch_seconds", m.seconds),
            ("stability/batch_loss_std", m.train_loss_std),
            ("stability/batch_loss_step_std", m.train_loss_step_std),
        ] {
            self.w.scalar(tag, s, v as f32).map_err(tb_err)?;
        }
        self.w.flush().map_err(tb_err)
    }

    /// Initialization health as per-layer scalars (`health/hidden0/dead_share`, ...)
    /// at step 0 (before the first update) and step 1 (after the first epoch),
    /// beside the weight histograms.
    pub fn probe(&mut self, p: &Probe) -> Result<()> {
        let s = p.epoch as i64;
        self.w
            .scalar("health/loss", s, p.loss as f32)
            .map_err(tb_err)?;
        self.w
            .scalar(
                "health/loss_over_chance",
                s,
                (p.loss / p.chance_loss) as f32,
            )
            .map_err(tb_err)?;
        for l in &p.layers {
            for (stat, v) in crate::diagnostics::layer_stats(l) {
                if v.is_finite() {
                    self.w
                        .scalar(&format!("health/{}/{stat}", l.layer), s, v as f32)
                        .map_err(tb_err)?;
                }
            }
        }
        self.w.flush().map_err(tb_err)
    }

    pub fn histograms(&mut self, epoch: usize, hs: &[Histogram]) -> Result<()> {
        for h in hs {
            let tag = match h.name.strip_suffix(".grad") {
                Some(n) => format!("gradients/{n}"),
                None => format!("weights/{}", h.name),
            };
            let histo = Histo {
                min: h.min,
                max: h.max,
                num: h.count as f64,
                sum: h.sum,
                sum_squares: h.sum_squares,
                bucket_limit: h.bucket_limits.clone(),
                bucket: h.bucket_counts.iter().map(|c| *c as f64).collect(),
            };
            self.w
                .histogram(&tag, epoch as i64, &histo)
                .map_err(tb_err)?;
        }
        self.w.flush().map_err(tb_err)
    }

    /// The end: report text, confusion heat map and the validation grid at the
    /// report epoch, and the session's status.
    pub fn finish(
        &mut self,
        step: i64,
        report: Option<&Report>,
        grid: Option<(Vec<u8>, u32, u32, String)>,
        success: bool,
    ) -> Result<()> {
        if let Some(r) = report {
            self.w
                .text("classification_report", step, &report_markdown(r))
                .map_err(tb_err)?;
            let (p, side) = confusion_png(&r.confusion.counts);
            self.w
                .image_png("confusion_matrix", step, &p, side, side, 3)
                .map_err(tb_err)?;
            let names: Vec<String> = r
                .classes
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{i}: {}", c.name))
                .collect();
            self.w
                .text(
                    "confusion_matrix_classes",
                    step,
                    &format!(
                        "rows: true class, columns: predicted; shade: share of the row\n\n{}",
                        names.join(" · ")
                    ),
                )
                .map_err(tb_err)?;
        }
        if let Some((p, w, h, legend)) = grid {
            self.w
                .image_png("validation_images", step, &p, w, h, 3)
                .map_err(tb_err)?;
            self.w
                .text("validation_images_labels", step, &legend)
                .map_err(tb_err)?;
        }
        self.w.hparams_session_end(success).map_err(tb_err)?;
        self.w.flush().map_err(tb_err)
    }
}
