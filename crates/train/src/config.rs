//! The trial configuration: the `[data]`, `[model]` and `[train]` TOML tables, their
//! defaults, and validation. Owns parsing and range checks; knows nothing of sweeps.
//!
//! Every error names the file, the line where the key stands (when it can be found)
//! and the full dotted key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One fully specified training run (a trial without its sweep).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrialConfig {
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub train: TrainConfig,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Augmentation {
    RandomResizedCrop,
    Hflip,
    Vflip,
    BrightnessContrast,
    HueSaturationValue,
    ShiftScaleRotate,
    GridDistortion,
    ElasticTransform,
    GaussNoise,
    CoarseDropout,
}

impl Augmentation {
    /// Every augmentation, in the order in which they apply (whatever the order
    /// of `data.augment`): crop, flips, colour, warps, noise, occlusion.
    pub const ORDER: [Augmentation; 10] = [
        Augmentation::RandomResizedCrop,
        Augmentation::Hflip,
        Augmentation::Vflip,
        Augmentation::BrightnessContrast,
        Augmentation::HueSaturationValue,
        Augmentation::ShiftScaleRotate,
        Augmentation::GridDistortion,
        Augmentation::ElasticTransform,
        Augmentation::GaussNoise,
        Augmentation::CoarseDropout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Augmentation::RandomResizedCrop => "random_resized_crop",
            Augmentation::Hflip => "hflip",
            Augmentation::Vflip => "vflip",
            Augmentation::BrightnessContrast => "brightness_contrast",
            Augmentation::HueSaturationValue => "hue_saturation_value",
            Augmentation::ShiftScaleRotate => "shift_scale_rotate",
            Augmentation::GridDistortion => "grid_distortion",
            Augmentation::ElasticTransform => "elastic_transform",
            Augmentation::GaussNoise => "gauss_noise",
            Augmentation::CoarseDropout => "coarse_dropout",
        }
    }
}

/// Limits of the augmentations; defaults are Albumentations' defaults.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentationSettings {
    /// Probability with which each listed augmentation is applied to an image.
    pub probability: f64,
    pub brightness_limit: f64,
    pub contrast_limit: f64,
    /// Shift as a fraction of the image side.
    pub shift_limit: f64,
    pub scale_limit: f64,
    /// Degrees.
    pub rotate_limit: f64,
    /// `random_resized_crop`: area of the crop as a fraction of the image (Albumentations' `scale`).
    pub crop_scale: [f64; 2],
    /// `random_resized_crop`: aspect ratio width / height of the crop (Albumentations' `ratio`).
    pub crop_ratio: [f64; 2],
    /// `hue_saturation_value`: shifts in OpenCV's 8-bit HSV units (hue 0–179).
    pub hue_shift_limit: f64,
    pub sat_shift_limit: f64,
    pub val_shift_limit: f64,
    /// `grid_distortion`: cells per side, and the step factor's range 1 ± limit.
    pub grid_num_steps: usize,
    pub grid_distort_limit: f64,
    /// `elastic_transform`: displacement scale and Gaussian smoothing (pixels).
    pub elastic_alpha: f64,
    pub elastic_sigma: f64,
    /// `gauss_noise`: standard deviation and mean as fractions of 255.
    pub noise_std_range: [f64; 2],
    pub noise_mean_range: [f64; 2],
    /// `gauss_noise`: one noise value per channel (`true`) or one per pixel shared by its channels.
    pub noise_per_channel: bool,
    /// `coarse_dropout`: number of holes, inclusive range.
    pub num_holes_range: [usize; 2],
    /// `coarse_dropout`: hole sides as fractions of the image side.
    pub hole_height_range: [f64; 2],
    pub hole_width_range: [f64; 2],
    /// `coarse_dropout`: the value holes are filled with (0–255).
    pub hole_fill: u8,
}

impl Default for AugmentationSettings {
    fn default() -> Self {
        AugmentationSettings {
            probability: 0.5,
            brightness_limit: 0.2,
            contrast_limit: 0.2,
            shift_limit: 0.0625,
            scale_limit: 0.1,
            rotate_limit: 45.0,
            crop_scale: [0.08, 1.0],
            crop_ratio: [0.75, 4.0 / 3.0],
            hue_shift_limit: 20.0,
            sat_shift_limit: 30.0,
            val_shift_limit: 20.0,
            grid_num_steps: 5,
            grid_distort_limit: 0.3,
            elastic_alpha: 1.0,
            elastic_sigma: 50.0,
            noise_std_range: [0.2, 0.44],
            noise_mean_range: [0.0, 0.0],
            noise_per_channel: true,
            num_holes_range: [1, 2],
            hole_height_range: [0.1, 0.2],
            hole_width_range: [0.1, 0.2],
            hole_fill: 0,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    pub classes: usize,
    pub per_class: usize,
    /// Side of the generated images (they are then resized to `data.image_size`).
    pub image_size: usize,
    /// Seed of the generated images; fixed so the data set does not change with the trial seed.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            classes: 4,
            per_class: 60,
            image_size: 32,
            seed: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnBadImage {
    #[default]
    Error,
    Skip,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Image folder: `root/<class>/*.png|jpg|jpeg|bmp`, or the base of `labels`.
    pub root: Option<PathBuf>,
    /// A CSV of file name and label, relative to `root` (HAM10000's metadata layout).
    pub labels: Option<PathBuf>,
    pub file_column: String,
    pub label_column: String,
    /// Folders (relative to `root`) in which files named by `labels` are looked up.
    pub image_dirs: Vec<PathBuf>,
    /// A generated data set instead of `root`.
    pub synthetic: Option<SyntheticConfig>,
    pub image_size: usize,
    pub channels: usize,
    /// One value, or one per channel.
    pub normalize_mean: Vec<f64>,
    pub normalize_std: Vec<f64>,
    pub val_fraction: f64,
    /// Keep at most this many images per class (undersampling), chosen by the split seed.
    pub max_per_class: Option<usize>,
    /// Seed of the train/validation split; defaults to `train.seed`.
    pub split_seed: Option<u64>,
    pub augment: Vec<Augmentation>,
    pub augmentation: AugmentationSettings,
    pub on_bad_image: OnBadImage,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            root: None,
            labels: None,
            file_column: "filename".into(),
            label_column: "label".into(),
            image_dirs: vec![PathBuf::from(".")],
            synthetic: None,
            image_size: 64,
            channels: 3,
            normalize_mean: vec![0.5],
            normalize_std: vec![0.5],
            val_fraction: 0.2,
            max_per_class: None,
            split_seed: None,
            augment: Vec::new(),
            augmentation: AugmentationSettings::default(),
            on_bad_image: OnBadImage::Error,
        }
    }
}

impl DataConfig {
    pub fn mean_for(&self, channel: usize) -> f32 {
        pick(&self.normalize_mean, channel) as f32
    }
    pub fn std_for(&self, channel: usize) -> f32 {
        pick(&self.normalize_std, channel) as f32
    }
}

fn pick(v: &[f64], channel: usize) -> f64 {
    if v.len() == 1 {
        v[0]
    } else {
        v[channel]
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    #[default]
    Mlp,
    Cnn,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Relu,
    Tanh,
    Sigmoid,
    Gelu,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    KaimingNormal,
    KaimingUniform,
    XavierNormal,
    XavierUniform,
    Uniform,
    Normal,
    Constant,
    #[default]
    PytorchDefault,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Hidden linear layer sizes. Default `[512, 128]` for `mlp`, `[128]` for `cnn`.
    pub hidden: Option<Vec<usize>>,
    /// Output channels of the 3×3 conv blocks of `cnn` (each followed by a 2×2 max-pool).
    pub conv_channels: Vec<usize>,
    pub activation: Activation,
    pub dropout: f64,
    pub batch_norm: bool,
    pub init: InitScheme,
    /// Bounds of `init = "uniform"`.
    pub init_low: f64,
    pub init_high: f64,
    /// Standard deviation of `init = "normal"`.
    pub init_std: f64,
    /// Value of `init = "constant"` (every weight the same).
    pub init_value: f64,
    /// Pretrained weights to start from: a `.safetensors` file (a Sweep
    /// checkpoint, relative to the config file), or `"SWEEP/N"`, trial N of a
    /// sweep in the same results database (found by `sweep run`). Tensors whose
    /// name and shape match are loaded; the rest keep `init`. `"none"` or
    /// absent: no pretraining.
    #[serde(deserialize_with = "none_or_string")]
    pub init_from: Option<String>,
}

/// Whether `model.init_from` names a weights file (else a sweep's trial, `SWEEP/N`).
pub fn is_weights_file(init_from: &str) -> bool {
    init_from.ends_with(".safetensors")
}

/// `model.init_from = "SWEEP/N"` as (sweep, trial number).
pub fn init_from_trial(init_from: &str) -> Option<(&str, i64)> {
    let (sweep, n) = init_from.rsplit_once('/')?;
    let n: i64 = n.parse().ok().filter(|n| *n >= 0)?;
    (!sweep.is_empty() && !sweep.contains('/')).then_some((sweep, n))
}

/// `"none"` and `""` read as no value (a grid can then sweep "none" against a source).
fn none_or_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(v.filter(|s| !s.is_empty() && s != "none"))
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            arch: Arch::Mlp,
            hidden: None,
            conv_channels: vec![16, 32],
            activation: Activation::Relu,
            dropout: 0.0,
            batch_norm: false,
            init: InitScheme::PytorchDefault,
            init_low: -0.05,
            init_high: 0.05,
            init_std: 0.01,
            init_value: 0.01,
            init_from: None,
        }
    }
}

impl ModelConfig {
    /// The model's layer names, input first: `conv0`…, `hidden0`…, `output`
    /// (a parameter is `LAYER.weight`, `LAYER.bias`, `LAYER.bn.*`).
    pub fn layer_names(&self) -> Vec<String> {
        let convs = if self.arch == Arch::Cnn {
            self.conv_channels.len()
        } else {
            0
        };
        (0..convs)
            .map(|i| format!("conv{i}"))
            .chain((0..self.hidden_sizes().len()).map(|i| format!("hidden{i}")))
            .chain(std::iter::once("output".to_string()))
            .collect()
    }

    /// Whether `train.freeze` entry `pattern` names `layer`: the layer's name,
    /// or its kind (`conv`, `hidden`) for every layer of that kind.
    pub fn freeze_matches(pattern: &str, layer: &str) -> bool {
        layer == pattern
            || (matches!(pattern, "conv" | "hidden")
                && layer.strip_prefix(pattern).is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                }))
    }

    pub fn hidden_sizes(&self) -> Vec<usize> {
        match (&self.hidden, self.arch) {
            (Some(h), _) => h.clone(),
            (None, Arch::Mlp) => vec![512, 128],
            (None, Arch::Cnn) => vec![128],
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    #[default]
    Adam,
    Adamw,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    #[default]
    Constant,
    Step,
    Cosine,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ClassWeights {
    /// `"none"` or `"balanced"` (n_samples / (n_classes × count), as scikit-learn).
    Named(ClassWeightsName),
    List(Vec<f64>),
}

impl Default for ClassWeights {
    fn default() -> Self {
        ClassWeights::Named(ClassWeightsName::None)
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClassWeightsName {
    None,
    Balanced,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    ValLoss,
    ValAccuracy,
    ValMacroF1,
    ValBalancedAccuracy,
    TrainLoss,
}

impl Monitor {
    pub fn name(self) -> &'static str {
        match self {
            Monitor::ValLoss => "val_loss",
            Monitor::ValAccuracy => "val_accuracy",
            Monitor::ValMacroF1 => "val_macro_f1",
            Monitor::ValBalancedAccuracy => "val_balanced_accuracy",
            Monitor::TrainLoss => "train_loss",
        }
    }
    pub fn default_mode(self) -> Mode {
        match self {
            Monitor::ValLoss | Monitor::TrainLoss => Mode::Min,
            _ => Mode::Max,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Min,
    Max,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStoppingConfig {
    pub enabled: bool,
    pub monitor: Monitor,
    /// Defaults to `min` for losses, `max` for everything else.
    pub mode: Option<Mode>,
    pub patience: usize,
    pub min_delta: f64,
    pub restore_best: bool,
}

impl Default for EarlyStoppingConfig {
    fn default() -> Self {
        EarlyStoppingConfig {
            enabled: true,
            monitor: Monitor::ValLoss,
            mode: None,
            patience: 5,
            min_delta: 0.0,
            restore_best: true,
        }
    }
}

impl EarlyStoppingConfig {
    pub fn resolved_mode(&self) -> Mode {
        self.mode.unwrap_or(self.monitor.default_mode())
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub optimizer: OptimizerKind,
    pub learning_rate: f64,
    /// SGD only.
    pub momentum: f64,
    pub nesterov: bool,
    /// Adam and AdamW only.
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    /// `sgd` and `adam`: L2 added to the gradient; `adamw`: decoupled decay.
    pub weight_decay: f64,
    /// When false, biases and batch-norm parameters get no weight decay.
    pub decay_bias_and_norm: bool,
    pub lr_schedule: LrSchedule,
    /// `step` schedule: multiply the rate by `lr_step_gamma` every `lr_step_epochs`.
    pub lr_step_epochs: usize,
    pub lr_step_gamma: f64,
    /// `cosine` schedule: the rate reached at the last epoch.
    pub lr_min: f64,
    pub class_weights: ClassWeights,
    pub label_smoothing: f64,
    pub early_stopping: Option<EarlyStoppingConfig>,
    pub seed: u64,
    /// Layers that get no update and no weight decay: `"conv"` (every conv
    /// block), `"hidden"` (every hidden layer) or layer names (`"conv0"`,
    /// `"hidden1"`, `"output"`). Batch-norm running statistics still update.
    pub freeze: Vec<String>,
    /// Frozen for the first N epochs only, then every layer trains, with a
    /// fresh optimizer (no moments, step count from 0). Absent: the whole run.
    pub freeze_epochs: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 64,
            eval_batch_size: 256,
            optimizer: OptimizerKind::Adam,
            learning_rate: 1e-3,
            momentum: 0.0,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
            decay_bias_and_norm: true,
            lr_schedule: LrSchedule::Constant,
            lr_step_epochs: 10,
            lr_step_gamma: 0.1,
            lr_min: 0.0,
            class_weights: ClassWeights::default(),
            label_smoothing: 0.0,
            early_stopping: None,
            seed: 42,
            freeze: Vec::new(),
            freeze_epochs: None,
        }
    }
}

impl TrainConfig {
    /// The early-stopping settings when early stopping is on.
    pub fn early_stopping_active(&self) -> Option<&EarlyStoppingConfig> {
        self.early_stopping.as_ref().filter(|e| e.enabled)
    }
}

/// A validation failure before any line is known: the dotted key and the message.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

fn issue(key: &str, message: impl Into<String>) -> ConfigIssue {
    ConfigIssue {
        key: key.to_string(),
        message: message.into(),
    }
}

impl TrialConfig {
    /// Reads, parses and validates a TOML file. Relative data paths are resolved
    /// against the file's folder.
    pub fn from_file(path: &Path) -> Result<TrialConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut cfg = TrialConfig::from_toml_str(&text, &path.display().to_string())?;
        if let Some(dir) = path.parent() {
            cfg.resolve_paths(dir);
        }
        Ok(cfg)
    }

    /// Parses and validates TOML text; `origin` names the source in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<TrialConfig> {
        let cfg: TrialConfig = toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        cfg.validate().map_err(|i| located(origin, text, &i))?;
        Ok(cfg)
    }

    /// Makes a relative `data.root`, and a relative `model.init_from` file,
    /// relative to `dir`.
    pub fn resolve_paths(&mut self, dir: &Path) {
        if let Some(f) = &self.model.init_from {
            let p = Path::new(f);
            if is_weights_file(f) && p.is_relative() {
                self.model.init_from = Some(dir.join(p).display().to_string());
            }
        }
        if let Some(root) = &self.data.root {
            if root.is_relative() {
                self.data.root = Some(dir.join(root));
            }
        }
    }

    /// Range and consistency checks; the first problem found, with its dotted key.
    pub fn validate(&self) -> std::result::Result<(), ConfigIssue> {
        let d = &self.data;
        match (&d.root, &d.synthetic) {
            (None, None) => {
                return Err(issue(
                    "data.root",
                    "missing: set `data.root` to an image folder or add a `[data.synthetic]` table",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(issue(
                    "data.synthetic",
                    "`data.root` and `[data.synthetic]` are exclusive: choose one",
                ))
            }
            _ => {}
        }
        if d.labels.is_some() && d.synthetic.is_some() {
            return Err(issue(
                "data.labels",
                "a labels CSV needs `data.root`, not synthetic data",
            ));
        }
        if d.image_dirs.is_empty() {
            return Err(issue("data.image_dirs", "must name at least one folder"));
        }
        if d.image_size == 0 {
            return Err(issue("data.image_size", "must be at least 1"));
        }
        if d.image_size > 1024 {
            return Err(issue(
                "data.image_size",
                format!("{} is larger than 1024", d.image_size),
            ));
        }
        if d.channels != 1 && d.channels != 3 {
            return Err(issue(
                "data.channels",
                format!("must be 1 (grayscale) or 3 (RGB), got {}", d.channels),
            ));
        }
        for (key, v) in [
            ("data.normalize_mean", &d.normalize_mean),
            ("data.normalize_std", &d.normalize_std),
        ] {
            if v.len() != 1 && v.len() != d.channels {
                return Err(issue(
                    key,
                    format!(
                        "needs 1 value or one per channel ({}), got {}",
                        d.channels,
                        v.len()
                    ),
                ));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(issue(key, "values must be finite"));
            }
        }
        if d.normalize_std.iter().any(|s| *s <= 0.0) {
            return Err(issue("data.normalize_std", "values must be greater than 0"));
        }
        if !(d.val_fraction > 0.0 && d.val_fraction < 1.0) {
            return Err(issue(
                "data.val_fraction",
                format!("must be in (0, 1), got {}", d.val_fraction),
            ));
        }
        if d.max_per_class == Some(0) {
            return Err(issue(
                "data.max_per_class",
                "must be at least 2 (one for training, one for validation)",
            ));
        }
        if d.max_per_class == Some(1) {
            return Err(issue(
                "data.max_per_class",
                "must be at least 2 (one for training, one for validation)",
            ));
        }
        let mut seen = Vec::new();
        for a in &d.augment {
            if seen.contains(a) {
                return Err(issue(
                    "data.augment",
                    format!("`{}` is listed twice", a.name()),
                ));
            }
            seen.push(*a);
        }
        let a = &d.augmentation;
        if !(0.0..=1.0).contains(&a.probability) {
            return Err(issue(
                "data.augmentation.probability",
                format!("must be in [0, 1], got {}", a.probability),
            ));
        }
        for (key, v, max) in [
            (
                "data.augmentation.brightness_limit",
                a.brightness_limit,
                1.0,
            ),
            ("data.augmentation.contrast_limit", a.contrast_limit, 1.0),
            ("data.augmentation.shift_limit", a.shift_limit, 1.0),
            ("data.augmentation.scale_limit", a.scale_limit, 0.99),
            ("data.augmentation.rotate_limit", a.rotate_limit, 180.0),
        ] {
            if !(0.0..=max).contains(&v) {
                return Err(issue(key, format!("must be in [0, {max}], got {v}")));
            }
        }
        for (key, v, max) in [
            (
                "data.augmentation.hue_shift_limit",
                a.hue_shift_limit,
                180.0,
            ),
            (
                "data.augmentation.sat_shift_limit",
                a.sat_shift_limit,
                255.0,
            ),
            (
                "data.augmentation.val_shift_limit",
                a.val_shift_limit,
                255.0,
            ),
            (
                "data.augmentation.grid_distort_limit",
                a.grid_distort_limit,
                1.0,
            ),
            ("data.augmentation.elastic_alpha", a.elastic_alpha, 10_000.0),
            ("data.augmentation.elastic_sigma", a.elastic_sigma, 10_000.0),
        ] {
            if !(0.0..=max).contains(&v) {
                return Err(issue(key, format!("must be in [0, {max}], got {v}")));
            }
        }
        if a.elastic_sigma < 0.01 {
            return Err(issue(
                "data.augmentation.elastic_sigma",
                format!("must be at least 0.01 (pixels), got {}", a.elastic_sigma),
            ));
        }
        if !(1..=64).contains(&a.grid_num_steps) {
            return Err(issue(
                "data.augmentation.grid_num_steps",
                format!("must be in [1, 64], got {}", a.grid_num_steps),
            ));
        }
        if d.augment.contains(&Augmentation::GridDistortion) {
            // Albumentations' grid has cells of ⌊size / n⌋ pixels and one more
            // cell for the rest: past that, pixels map to row or column 0
            let (size, n) = (d.image_size, a.grid_num_steps);
            if n > size || size % n > size / n {
                return Err(issue(
                    "data.augmentation.grid_num_steps",
                    format!(
                        "{n} steps do not tile {size}-pixel images (cells of {} pixels, {} left over): choose n with image_size % n ≤ image_size / n",
                        size / n,
                        size % n
                    ),
                ));
            }
        }
        let range = |key: &str, r: [f64; 2], lo: f64, hi: f64, open_low: bool| {
            let ok_low = if open_low { r[0] > lo } else { r[0] >= lo };
            if !(ok_low && r[0] <= r[1] && r[1] <= hi) {
                let open = if open_low { "(" } else { "[" };
                return Err(issue(
                    key,
                    format!(
                        "must be [low, high] with {open}{lo} ≤ low ≤ high ≤ {hi}], got [{}, {}]",
                        r[0], r[1]
                    ),
                ));
            }
            Ok(())
        };
        range("data.augmentation.crop_scale", a.crop_scale, 0.0, 1.0, true)?;
        range(
            "data.augmentation.crop_ratio",
            a.crop_ratio,
            0.0,
            100.0,
            true,
        )?;
        range(
            "data.augmentation.noise_std_range",
            a.noise_std_range,
            0.0,
            1.0,
            false,
        )?;
        range(
            "data.augmentation.noise_mean_range",
            a.noise_mean_range,
            -1.0,
            1.0,
            false,
        )?;
        range(
            "data.augmentation.hole_height_range",
            a.hole_height_range,
            0.0,
            1.0,
            true,
        )?;
        range(
            "data.augmentation.hole_width_range",
            a.hole_width_range,
            0.0,
            1.0,
            true,
        )?;
        let h = a.num_holes_range;
        if !(h[0] >= 1 && h[0] <= h[1] && h[1] <= 1000) {
            return Err(issue(
                "data.augmentation.num_holes_range",
                format!(
                    "must be [low, high] with 1 ≤ low ≤ high ≤ 1000, got [{}, {}]",
                    h[0], h[1]
                ),
            ));
        }
        if let Some(s) = &d.synthetic {
            if s.classes < 2 {
                return Err(issue(
                    "data.synthetic.classes",
                    format!("must be at least 2, got {}", s.classes),
                ));
            }
            if s.classes > 64 {
                return Err(issue(
                    "data.synthetic.classes",
                    format!("at most 64 are generated, got {}", s.classes),
                ));
            }
            if s.per_class < 2 {
                return Err(issue(
                    "data.synthetic.per_class",
                    format!("must be at least 2, got {}", s.per_class),
                ));
            }
            if !(8..=512).contains(&s.image_size) {
                return Err(issue(
                    "data.synthetic.image_size",
                    format!("must be in [8, 512], got {}", s.image_size),
                ));
            }
        }

        let m = &self.model;
        if let Some(f) = &m.init_from {
            if !is_weights_file(f) && init_from_trial(f).is_none() {
                return Err(issue(
                    "model.init_from",
                    format!("`{f}` is neither a .safetensors file nor SWEEP/N (trial N of a sweep); \"none\" for no pretraining"),
                ));
            }
        }
        let layers = m.layer_names();
        for f in &self.train.freeze {
            if !layers.iter().any(|l| ModelConfig::freeze_matches(f, l)) {
                return Err(issue(
                    "train.freeze",
                    format!(
                        "`{f}` names no layer of this model (its layers: {}; or \"conv\", \"hidden\" for every layer of a kind)",
                        layers.join(", ")
                    ),
                ));
            }
        }
        if let Some(h) = &m.hidden {
            if h.contains(&0) {
                return Err(issue("model.hidden", "layer sizes must be at least 1"));
            }
        }
        if m.arch == Arch::Cnn {
            if m.conv_channels.is_empty() {
                return Err(issue(
                    "model.conv_channels",
                    "a cnn needs at least one conv block",
                ));
            }
            if m.conv_channels.contains(&0) {
                return Err(issue(
                    "model.conv_channels",
                    "channel counts must be at least 1",
                ));
            }
            let pools = m.conv_channels.len() as u32;
            if d.image_size >> pools == 0 {
                return Err(issue(
                    "model.conv_channels",
                    format!(
                        "{} 2×2 max-pools shrink a {}-pixel image to nothing; use fewer conv blocks or a larger data.image_size",
                        pools, d.image_size
                    ),
                ));
            }
        }
        if !(0.0..1.0).contains(&m.dropout) {
            return Err(issue(
                "model.dropout",
                format!("must be in [0, 1), got {}", m.dropout),
            ));
        }
        if m.init == InitScheme::Uniform
            && m.init_low.partial_cmp(&m.init_high) != Some(std::cmp::Ordering::Less)
        {
            return Err(issue(
                "model.init_low",
                format!(
                    "must be below model.init_high ({} ≥ {})",
                    m.init_low, m.init_high
                ),
            ));
        }
        if !(m.init_std >= 0.0 && m.init_std.is_finite()) {
            return Err(issue(
                "model.init_std",
                format!("must be finite and ≥ 0, got {}", m.init_std),
            ));
        }
        if !m.init_value.is_finite() || !m.init_low.is_finite() || !m.init_high.is_finite() {
            return Err(issue("model.init_value", "init values must be finite"));
        }

        let t = &self.train;
        if t.epochs == 0 {
            return Err(issue("train.epochs", "must be at least 1"));
        }
        if t.batch_size == 0 {
            return Err(issue("train.batch_size", "must be at least 1"));
        }
        if t.eval_batch_size == 0 {
            return Err(issue("train.eval_batch_size", "must be at least 1"));
        }
        if !(t.learning_rate > 0.0 && t.learning_rate.is_finite()) {
            return Err(issue(
                "train.learning_rate",
                format!("must be greater than 0, got {}", t.learning_rate),
            ));
        }
        if !(0.0..1.0).contains(&t.momentum) {
            return Err(issue(
                "train.momentum",
                format!("must be in [0, 1), got {}", t.momentum),
            ));
        }
        if t.nesterov && t.momentum == 0.0 && t.optimizer == OptimizerKind::Sgd {
            return Err(issue(
                "train.nesterov",
                "needs train.momentum > 0 (as in PyTorch)",
            ));
        }
        for (key, v) in [("train.beta1", t.beta1), ("train.beta2", t.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(issue(key, format!("must be in [0, 1), got {v}")));
            }
        }
        if t.epsilon.is_nan() || t.epsilon <= 0.0 {
            return Err(issue(
                "train.epsilon",
                format!("must be greater than 0, got {}", t.epsilon),
            ));
        }
        if !(t.weight_decay >= 0.0 && t.weight_decay.is_finite()) {
            return Err(issue(
                "train.weight_decay",
                format!("must be ≥ 0, got {}", t.weight_decay),
            ));
        }
        if t.lr_step_epochs == 0 {
            return Err(issue("train.lr_step_epochs", "must be at least 1"));
        }
        if !(t.lr_step_gamma > 0.0 && t.lr_step_gamma <= 1.0) {
            return Err(issue(
                "train.lr_step_gamma",
                format!("must be in (0, 1], got {}", t.lr_step_gamma),
            ));
        }
        if !(t.lr_min >= 0.0 && t.lr_min <= t.learning_rate) {
            return Err(issue(
                "train.lr_min",
                format!("must be in [0, learning_rate], got {}", t.lr_min),
            ));
        }
        if let ClassWeights::List(w) = &t.class_weights {
            if w.iter().any(|x| !(x.is_finite() && *x >= 0.0)) || w.iter().all(|x| *x == 0.0) {
                return Err(issue(
                    "train.class_weights",
                    "weights must be finite, ≥ 0 and not all 0",
                ));
            }
            if let Some(s) = &d.synthetic {
                if w.len() != s.classes {
                    return Err(issue(
                        "train.class_weights",
                        format!("{} weights for {} classes", w.len(), s.classes),
                    ));
                }
            }
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return Err(issue(
                "train.label_smoothing",
                format!("must be in [0, 1), got {}", t.label_smoothing),
            ));
        }
        if let Some(es) = &t.early_stopping {
            if !(es.min_delta >= 0.0 && es.min_delta.is_finite()) {
                return Err(issue(
                    "train.early_stopping.min_delta",
                    format!("must be ≥ 0, got {}", es.min_delta),
                ));
            }
        }
        Ok(())
    }

    /// The resolved configuration as canonical JSON (every default filled in).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes")
    }
}

/// The 1-based line on which a dotted key is set in TOML text, found by following
/// table headers; `None` when the key is not written (a default).
pub fn find_key_line(text: &str, dotted: &str) -> Option<usize> {
    let mut table = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            table = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            continue;
        }
        if let Some((k, _)) = line.split_once('=') {
            let k = k.trim().trim_matches('"');
            let full = if table.is_empty() {
                k.to_string()
            } else {
                format!("{table}.{k}")
            };
            if full == dotted {
                return Some(i + 1);
            }
        }
    }
    // A table header alone (`[data.synthetic]`) also locates its key.
    text.lines()
        .position(|l| l.trim() == format!("[{dotted}]"))
        .map(|i| i + 1)
}

fn located(origin: &str, text: &str, i: &ConfigIssue) -> Error {
    let location = match find_key_line(text, &i.key) {
        Some(line) => format!("{origin}:{line}"),
        None => origin.to_string(),
    };
    Error::Config {
        location,
        message: format!("`{}` {}", i.key, i.message),
    }
}

const KNOWN_KEYS: &[&str] = &[
    "root",
    "labels",
    "file_column",
    "label_column",
    "image_dirs",
    "synthetic",
    "image_size",
    "channels",
    "normalize_mean",
    "normalize_std",
    "val_fraction",
    "max_per_class",
    "split_seed",
    "augment",
    "augmentation",
    "on_bad_image",
    "classes",
    "per_class",
    "seed",
    "probability",
    "brightness_limit",
    "contrast_limit",
    "shift_limit",
    "scale_limit",
    "rotate_limit",
    "arch",
    "hidden",
    "conv_channels",
    "activation",
    "dropout",
    "batch_norm",
    "init",
    "init_low",
    "init_high",
    "init_std",
    "init_value",
    "epochs",
    "batch_size",
    "eval_batch_size",
    "optimizer",
    "learning_rate",
    "momentum",
    "nesterov",
    "beta1",
    "beta2",
    "epsilon",
    "weight_decay",
    "decay_bias_and_norm",
    "lr_schedule",
    "lr_step_epochs",
    "lr_step_gamma",
    "lr_min",
    "class_weights",
    "label_smoothing",
    "early_stopping",
    "enabled",
    "monitor",
    "mode",
    "patience",
    "min_delta",
    "restore_best",
    "data",
    "model",
    "train",
];

/// The known key closest to `word` (edit distance ≤ 2), for "did you mean" hints.
pub fn suggest_key(word: &str) -> Option<&'static str> {
    KNOWN_KEYS
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A TOML parse error as a config error: file and line, the message, a "did you
/// mean" for unknown keys, and the offending line.
pub fn toml_error(origin: &str, text: &str, e: &toml::de::Error) -> Error {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let mut message = e.message().trim().to_string();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some(word) = rest.split('`').next() {
            if let Some(s) = suggest_key(word) {
                message.push_str(&format!(" (did you mean `{s}`?)"));
            }
        }
    }
    let location = match line {
        Some(l) => format!("{origin}:{l}"),
        None => origin.to_string(),
    };
    let key = line
        .and_then(|l| text.lines().nth(l - 1))
        .map(str::trim)
        .unwrap_or("");
    Error::Config {
        location,
        message: if key.is_empty() {
            message
        } else {
            format!("{message}\n    {key}")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        TrialConfig::from_toml_str(text, "t.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_follow_the_reference_pipeline() {
        let c = TrialConfig::from_toml_str("[data]\nroot = \"x\"\n", "t.toml").unwrap();
        assert_eq!(c.model.hidden_sizes(), vec![512, 128]);
        assert_eq!(c.data.normalize_mean, vec![0.5]);
        assert_eq!(c.train.optimizer, OptimizerKind::Adam);
        assert_eq!(c.train.learning_rate, 1e-3);
        assert_eq!(c.data.augmentation.rotate_limit, 45.0);
    }

    #[test]
    fn unknown_key_names_line_and_suggests() {
        let e = err("[data]\nroot = \"x\"\n[model]\ndropot = 0.5\n");
        assert!(e.starts_with("t.toml:4:"), "{e}");
        assert!(
            e.contains("dropot") && e.contains("did you mean `dropout`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_line() {
        let e = err("[data]\nroot = \"x\"\n[train]\nbatch_size = \"big\"\n");
        assert!(e.starts_with("t.toml:4:"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_key_and_line() {
        for (text, key, line) in [
            (
                "[data]\nroot=\"x\"\n[model]\ndropout = 1.0\n",
                "model.dropout",
                4,
            ),
            (
                "[data]\nroot=\"x\"\n[train]\nbatch_size = 0\n",
                "train.batch_size",
                4,
            ),
            (
                "[data]\nroot=\"x\"\n[train]\nlearning_rate = -0.1\n",
                "train.learning_rate",
                4,
            ),
            ("[data]\nroot=\"x\"\nimage_size = 0\n", "data.image_size", 3),
            ("[data]\nroot=\"x\"\nchannels = 2\n", "data.channels", 3),
            (
                "[data]\nroot=\"x\"\nval_fraction = 1.5\n",
                "data.val_fraction",
                3,
            ),
            (
                "[data]\nroot=\"x\"\nnormalize_std = [0.5, 0.5]\n",
                "data.normalize_std",
                3,
            ),
            (
                "[data]\n[data.synthetic]\nclasses = 1\n",
                "data.synthetic.classes",
                3,
            ),
            (
                "[data]\nroot=\"x\"\n[train.early_stopping]\nmin_delta = -1\n",
                "train.early_stopping.min_delta",
                4,
            ),
        ] {
            let e = err(text);
            assert!(
                e.starts_with(&format!("t.toml:{line}: `{key}`")),
                "{text:?} -> {e}"
            );
        }
    }

    #[test]
    fn missing_data_source_is_an_error() {
        assert!(err("[model]\narch = \"mlp\"\n").contains("`data.root` missing"));
    }

    #[test]
    fn class_weights_accept_names_and_lists() {
        let c = TrialConfig::from_toml_str(
            "[data]\nroot=\"x\"\n[train]\nclass_weights = \"balanced\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.train.class_weights,
            ClassWeights::Named(ClassWeightsName::Balanced)
        );
        let c = TrialConfig::from_toml_str(
            "[data]\nroot=\"x\"\n[train]\nclass_weights = [1.0, 2.5]\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.train.class_weights, ClassWeights::List(vec![1.0, 2.5]));
    }

    #[test]
    fn resolved_config_round_trips_through_json() {
        let c = TrialConfig::from_toml_str(
            "[data]\n[data.synthetic]\nclasses = 3\n[train.early_stopping]\npatience = 2\n",
            "t",
        )
        .unwrap();
        let back: TrialConfig = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(back, c);
    }
}
