//! Starting a model from pretrained weights (`model.init_from`): every tensor
//! whose name and shape match is loaded, the rest keep their initialization,
//! and the report says which is which. The input layers must match: a model
//! for other image sizes or channels is refused, naming both shapes.

use std::path::Path;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Model;

/// What a model took from its pretrained weights.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InitReport {
    /// `model.init_from` as given (a file, or `SWEEP/N`).
    pub source: String,
    /// The file read.
    pub file: String,
    /// Tensors loaded, in the model's order.
    pub loaded: Vec<String>,
    /// Tensors left as `model.init` made them, with why.
    pub initialized: Vec<InitSkip>,
    /// Tensors of the file the model has no place for.
    pub unused: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitSkip {
    pub name: String,
    pub reason: String,
}

impl InitReport {
    /// One line: "loaded 8 of 10 tensors from SOURCE; initialized: output.weight (shape …), …".
    pub fn summary(&self) -> String {
        let total = self.loaded.len() + self.initialized.len();
        let mut s = format!(
            "loaded {} of {total} tensors from {}",
            self.loaded.len(),
            self.source
        );
        if !self.initialized.is_empty() {
            let list: Vec<String> = self
                .initialized
                .iter()
                .map(|k| format!("{} ({})", k.name, k.reason))
                .collect();
            s += &format!("; initialized by model.init: {}", list.join(", "));
        }
        if !self.unused.is_empty() {
            s += &format!("; not used: {}", self.unused.join(", "));
        }
        s
    }
}

/// The layers whose weight shapes follow the image: the first layer, and for a
/// CNN the first dense layer (its input is the flattened last feature map).
fn input_layers(model: &Model) -> Vec<String> {
    let names: Vec<String> = model.layers().map(|l| l.name.clone()).collect();
    let mut out = vec![names[0].clone()];
    if let Some(first_dense) = names.iter().find(|n| !n.starts_with("conv")) {
        if first_dense != &names[0] {
            out.push(first_dense.clone());
        }
    }
    out
}

/// Loads into `model` every tensor of `file` (a safetensors checkpoint) whose
/// name and shape match. `source` is `model.init_from` as the config gives it.
pub fn load_matching(model: &mut Model, file: &Path, source: &str) -> Result<InitReport> {
    let tensors = candle_core::safetensors::load(file, &Device::Cpu).map_err(|e| match e {
        candle_core::Error::Io(io) => Error::io(file, io),
        other => Error::Invalid(format!(
            "model.init_from = {source:?}: {} is not a readable safetensors file: {other}",
            file.display()
        )),
    })?;
    let inputs = input_layers(model);
    let mut report = InitReport {
        source: source.to_string(),
        file: file.display().to_string(),
        ..InitReport::default()
    };
    let mut snap = model.snapshot()?;
    let state = model.state();
    for (k, (name, t)) in state.iter().enumerate() {
        let Some(loaded) = tensors.get(name) else {
            report.initialized.push(InitSkip {
                name: name.clone(),
                reason: "not in the file".into(),
            });
            continue;
        };
        if loaded.dims() != t.dims() {
            let layer = name.split('.').next().unwrap_or(name);
            let is_input = inputs.iter().any(|l| l == layer)
                && name.ends_with(".weight")
                && !name.contains(".bn.");
            // an input layer's inputs (all but its first dimension) follow the
            // images; its outputs may differ (a new head of other classes)
            if is_input && loaded.dims().get(1..) != t.dims().get(1..) {
                return Err(Error::Invalid(format!(
                    "model.init_from = {source:?}: the input layer `{name}` has shape {:?} in {} and {:?} in this model: its inputs differ, so the weights were made for other images (data.image_size, data.channels) or other layers before it",
                    loaded.dims(),
                    file.display(),
                    t.dims()
                )));
            }
            report.initialized.push(InitSkip {
                name: name.clone(),
                reason: format!("shape {:?} there, {:?} here", loaded.dims(), t.dims()),
            });
            continue;
        }
        snap[k] = loaded
            .flatten_all()
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| {
                Error::Invalid(format!(
                    "model.init_from = {source:?}: `{name}` of {}: {e}",
                    file.display()
                ))
            })?;
        report.loaded.push(name.clone());
    }
    let mut unused: Vec<String> = tensors
        .keys()
        .filter(|n| !state.iter().any(|(m, _)| m == *n))
        .cloned()
        .collect();
    unused.sort();
    report.unused = unused;
    model.restore(&snap)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Arch, ModelConfig};

    fn cnn(classes: usize, channels: usize, seed: u64) -> Model {
        let cfg = ModelConfig {
            arch: Arch::Cnn,
            conv_channels: vec![4, 8],
            hidden: Some(vec![16]),
            batch_norm: true,
            ..ModelConfig::default()
        };
        Model::new(&cfg, channels, 16, classes, seed, &Device::Cpu).unwrap()
    }

    fn save(model: &Model, dir: &Path) -> std::path::PathBuf {
        let state = model.state();
        let names: Vec<String> = state.iter().map(|(n, _)| n.clone()).collect();
        let shapes: Vec<Vec<usize>> = state.iter().map(|(_, t)| t.dims().to_vec()).collect();
        crate::trainer::write_checkpoint(
            dir,
            "best.safetensors",
            &names,
            &model.snapshot().unwrap(),
            &shapes,
            &crate::TrialConfig::default(),
        )
        .unwrap()
    }

    /// A 100-class model's weights into a 7-class one: everything but the
    /// output layer is loaded, bit for bit; the output layer keeps its own init.
    #[test]
    fn matching_tensors_load_and_the_rest_keep_their_init() {
        let dir = tempfile::tempdir().unwrap();
        let source = cnn(100, 3, 1);
        let file = save(&source, dir.path());
        let mut target = cnn(7, 3, 2);
        let fresh = cnn(7, 3, 2).snapshot().unwrap();
        let report = load_matching(&mut target, &file, "caltech/3").unwrap();
        let names: Vec<String> = target.state().into_iter().map(|(n, _)| n).collect();
        let (src, got) = (source.snapshot().unwrap(), target.snapshot().unwrap());
        for (k, name) in names.iter().enumerate() {
            if name.starts_with("output.") {
                assert_eq!(got[k], fresh[k], "{name} keeps model.init");
                assert!(!report.loaded.contains(name));
            } else {
                assert_eq!(got[k], src[k], "{name} loaded");
                assert!(report.loaded.contains(name), "{name}");
            }
        }
        assert_eq!(report.loaded.len(), names.len() - 2);
        let skipped: Vec<&str> = report.initialized.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(skipped, ["output.weight", "output.bias"]);
        assert_eq!(
            report.initialized[0].reason,
            "shape [100, 16] there, [7, 16] here"
        );
        assert!(report.unused.is_empty());
        assert!(
            report
                .summary()
                .starts_with("loaded 18 of 20 tensors from caltech/3"),
            "{}",
            report.summary()
        );
    }

    /// Other channels (or image size) in the input layer: refused, both shapes named.
    #[test]
    fn an_input_layer_of_another_shape_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = save(&cnn(7, 3, 1), dir.path());
        let err = load_matching(&mut cnn(7, 1, 1), &file, "rgb.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("conv0.weight")
                && err.contains("[4, 3, 3, 3]")
                && err.contains("[4, 1, 3, 3]"),
            "{err}"
        );
        // an MLP for 16-pixel images into one for 8-pixel images: its first layer
        let mlp = |size| Model::new(&ModelConfig::default(), 3, size, 4, 0, &Device::Cpu).unwrap();
        let file = save(&mlp(16), dir.path());
        let err = load_matching(&mut mlp(8), &file, "x.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hidden0.weight")
                && err.contains("[512, 768]")
                && err.contains("[512, 192]"),
            "{err}"
        );
        // a model whose only layer is its output (no hidden layers): other
        // classes are a new head, not other images
        let bare = |classes| {
            let cfg = ModelConfig {
                hidden: Some(vec![]),
                ..ModelConfig::default()
            };
            Model::new(&cfg, 3, 8, classes, 0, &Device::Cpu).unwrap()
        };
        let file = save(&bare(100), dir.path());
        let r = load_matching(&mut bare(7), &file, "x.safetensors").unwrap();
        assert_eq!(r.initialized.len(), 2, "{r:?}");
        // not a safetensors file at all
        std::fs::write(dir.path().join("bad.safetensors"), b"not weights").unwrap();
        let err = load_matching(
            &mut mlp(8),
            &dir.path().join("bad.safetensors"),
            "bad.safetensors",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("bad.safetensors") && err.contains("model.init_from"),
            "{err}"
        );
    }
}
