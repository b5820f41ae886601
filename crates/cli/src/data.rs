//! `sweep data inspect`: look at a data set before a sweep spends hours on it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use sweep_train::config::{DataConfig, OnBadImage};
use sweep_train::data::inspect::{
    self, Inspection, NEAR_DUPLICATE_BITS, NEAR_DUPLICATE_CORRELATION,
};
use sweep_train::{Dataset, TrialConfig};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum InspectFormat {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A trial config or a sweep spec (its `[data]` table, with `image_size`,
    /// `channels`, `max_per_class`, `val_fraction` and `split_seed` applied as
    /// a trial would), or an image folder (`DIR/<class>/*.png`) with defaults.
    pub path: PathBuf,
    /// Split with this seed when `data.split_seed` is unset (default: the
    /// config's `train.seed`, or a spec's first seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// For an image folder: resize to this size (default 64).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// For an image folder: 1 (grayscale) or 3 (default).
    #[arg(long)]
    pub channels: Option<usize>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: InspectFormat,
    /// Also write a self-contained page with the pictures: samples and the
    /// mean image per class, the augmentations applied, duplicate pairs.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AugmentArgs {
    /// A trial config or a sweep spec whose `[data]` lists `augment`.
    pub path: PathBuf,
    /// The PNG to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// The image to show: its index in the data set (classes in order, files
    /// sorted), or a file name as the data set lists it.
    #[arg(long, default_value = "0")]
    pub image: String,
    /// Augmented copies per row.
    #[arg(long, default_value_t = 6)]
    pub draws: usize,
    /// Seed of the draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `sweep data augment`: the preview grid.
pub fn augment(a: AugmentArgs) -> Result<()> {
    let args = InspectArgs {
        path: a.path.clone(),
        seed: None,
        image_size: None,
        channels: None,
        format: InspectFormat::Table,
        html: None,
    };
    anyhow::ensure!(
        !a.path.is_dir(),
        "{} is a folder: give a trial config or sweep spec that lists data.augment",
        a.path.display()
    );
    let (cfg, _) = data_config(&args)?;
    anyhow::ensure!(
        !cfg.augment.is_empty(),
        "{}: data.augment is empty, nothing to preview",
        a.path.display()
    );
    anyhow::ensure!(
        (1..=32).contains(&a.draws),
        "--draws must be in [1, 32], got {}",
        a.draws
    );
    let ds =
        Dataset::load(&cfg).with_context(|| format!("loading the data of {}", a.path.display()))?;
    let index = match a.image.parse::<usize>() {
        Ok(i) if i < ds.len() => i,
        Ok(i) => anyhow::bail!(
            "--image {i}: the data set has {} images (0 to {})",
            ds.len(),
            ds.len() - 1
        ),
        Err(_) => ds
            .sources
            .iter()
            .position(|s| s == &a.image || s.ends_with(&format!("/{}", a.image)))
            .with_context(|| {
                format!(
                    "--image {}: no image of that name in {}",
                    a.image,
                    a.path.display()
                )
            })?,
    };
    let rows = sweep_train::data::preview::augmentation_rows(&ds, &cfg, index, a.draws, a.seed);
    let png = sweep_train::data::preview::grid_png(&rows, ds.image_size, ds.channels);
    std::fs::write(&a.output, png).with_context(|| format!("writing {}", a.output.display()))?;
    println!(
        "{} ({}, class {}): rows, top to bottom:",
        a.output.display(),
        ds.sources[index],
        ds.classes[ds.label(index) as usize]
    );
    for (k, r) in rows.iter().enumerate() {
        println!(
            "  {:>2}. {}: the image, then {} draws",
            k + 1,
            r.label,
            r.tiles.len() - 1
        );
    }
    Ok(())
}

/// The `[data]` table and the seed a trial would split with.
fn data_config(a: &InspectArgs) -> Result<(DataConfig, u64)> {
    if a.path.is_dir() {
        let mut cfg = DataConfig {
            root: Some(a.path.clone()),
            ..DataConfig::default()
        };
        if let Some(s) = a.image_size {
            cfg.image_size = s;
        }
        if let Some(c) = a.channels {
            cfg.channels = c;
        }
        cfg.on_bad_image = OnBadImage::Skip;
        return Ok((cfg, a.seed.unwrap_or(0)));
    }
    let text = std::fs::read_to_string(&a.path)
        .with_context(|| format!("reading {}", a.path.display()))?;
    let doc: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not TOML", a.path.display()))?;
    let spec_keys = ["name", "seeds", "grid", "search", "objective"];
    let (mut cfg, seed) = if spec_keys.iter().any(|k| doc.contains_key(*k)) {
        let spec = sweep_orchestrator::spec::SweepSpec::from_file(&a.path)?;
        let seed = spec.seeds.first().copied().unwrap_or(spec.base.train.seed);
        (spec.base.data, seed)
    } else {
        let cfg = TrialConfig::from_file(&a.path)?;
        (cfg.data, cfg.train.seed)
    };
    anyhow::ensure!(
        a.image_size.is_none() && a.channels.is_none(),
        "--image-size and --channels are for an image folder; {} sets data.image_size and data.channels",
        a.path.display()
    );
    // every unreadable file listed, not the first one fatal
    cfg.on_bad_image = OnBadImage::Skip;
    Ok((cfg, a.seed.unwrap_or(seed)))
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let (cfg, seed) = data_config(&a)?;
    let t0 = std::time::Instant::now();
    let ds =
        Dataset::load(&cfg).with_context(|| format!("loading the data of {}", a.path.display()))?;
    let loaded = t0.elapsed().as_secs_f64();
    let report = inspect::inspect(&cfg, &ds, seed);
    let seconds = t0.elapsed().as_secs_f64();
    if let Some(path) = &a.html {
        let page = sweep_train::data::inspect_html::html(
            &report,
            &ds,
            &cfg,
            &a.path.display().to_string(),
        );
        std::fs::write(path, page).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("page: {}", path.display());
    }
    match a.format {
        InspectFormat::Json => {
            let mut v = serde_json::to_value(&report)?;
            v["seconds"] = serde_json::json!({"load": loaded, "total": seconds});
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        InspectFormat::Table => print!("{}", text(&report, &cfg, loaded, seconds)),
    }
    Ok(())
}

fn root_of(cfg: &DataConfig) -> String {
    match (&cfg.synthetic, &cfg.root) {
        (Some(_), _) => "generated data ([data.synthetic])".into(),
        (None, Some(r)) => r.display().to_string(),
        (None, None) => "-".into(),
    }
}

/// The terminal summary.
fn text(r: &Inspection, cfg: &DataConfig, loaded: f64, seconds: f64) -> String {
    let mut s = format!(
        "{}: {} images, {} classes, decoded at {}×{}×{} ({:.1} s to load, {:.1} s in all)\n\n",
        root_of(cfg),
        r.images,
        r.classes.len(),
        r.image_size,
        r.image_size,
        r.channels,
        loaded,
        seconds
    );
    s += &format!(
        "classes (split seed {}, val_fraction {}{}; imbalance {:.1}:1)\n",
        r.split_seed,
        cfg.val_fraction,
        cfg.max_per_class
            .map(|m| format!(", max_per_class {m}"))
            .unwrap_or_default(),
        r.imbalance_ratio
    );
    s += &format!(
        "  {:<16} {:>7} {:>7} {:>7} {:>7} {:>9} {:>11}\n",
        "class", "images", "share", "train", "val", "balanced", "brightness"
    );
    for c in &r.classes {
        s += &format!(
            "  {:<16} {:>7} {:>6.1}% {:>7} {:>7} {:>9.3} {:>11.3}\n",
            c.name,
            c.images,
            100.0 * c.share,
            c.train,
            c.val,
            c.balanced_weight,
            c.mean_brightness
        );
    }
    s += "  (balanced: the weight class_weights = \"balanced\" gives; brightness: mean pixel value 0–1)\n\n";
    if !r.sizes.is_empty() {
        let shown: Vec<String> = r
            .sizes
            .iter()
            .take(5)
            .map(|((w, h), n)| format!("{w}×{h} ({n})"))
            .collect();
        let more = if r.sizes.len() > 5 {
            format!(", … {} sizes in all", r.sizes.len())
        } else {
            String::new()
        };
        s += &format!("original sizes: {}{more}\n", shown.join(", "));
        s += &format!(
            "aspect ratios (width ÷ height): {}\n",
            r.aspect_ratios
                .iter()
                .map(|(b, n)| format!("{b}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        s += &format!(
            "colour modes: {}\n",
            r.colour_modes
                .iter()
                .map(|(m, n)| format!("{m} ({n})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (p, m) in r.odd_colour.iter().take(10) {
            s += &format!("  {p}: {m}\n");
        }
    }
    s += &format!(
        "\npixel statistics of the training split (paste into [data]):\n{}\n",
        r.normalize_lines()
    );
    if !r.near_constant.is_empty() {
        s += &format!(
            "almost constant images ({}): {}\n",
            r.near_constant.len(),
            r.near_constant
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !r.unreadable.is_empty() {
        s += &format!("\nunreadable files ({}):\n", r.unreadable.len());
        for (p, why) in &r.unreadable {
            s += &format!("  {p}: {why}\n");
        }
    }
    let across = r.across_split().count();
    s += &format!(
        "\nduplicates: {} exact, {} near (difference hashes within {NEAR_DUPLICATE_BITS} of 64 bits and thumbnails correlated ≥ {NEAR_DUPLICATE_CORRELATION}); {across} across the train/validation split\n",
        r.duplicates.iter().filter(|d| d.kind == "exact").count(),
        r.duplicates.iter().filter(|d| d.kind == "near").count(),
    );
    for d in r.duplicates.iter().take(20) {
        s += &format!(
            "  {:<5} {} ↔ {} (r = {:.3}){}{}\n",
            d.kind,
            d.a,
            d.b,
            d.correlation,
            if d.across_split {
                "  [train ↔ val]"
            } else {
                ""
            },
            if d.same_class {
                ""
            } else {
                "  [different classes]"
            }
        );
    }
    if r.duplicates.len() > 20 {
        s += &format!(
            "  … {} more (--format json lists them all)\n",
            r.duplicates.len() - 20
        );
    }
    for n in &r.notes {
        s += &format!("note: {n}\n");
    }
    if !r.warnings.is_empty() {
        s += "\n";
        for w in &r.warnings {
            s += &format!("warning: {w}\n");
        }
    }
    s
}
