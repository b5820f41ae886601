//! Models: the MLP and the small CNN of the study, written as structs with
//! `forward_t(xs, train)` because batch-norm and dropout behave differently in
//! training. Parameters are candle `Var`s filled from our seeded stream; batch-norm
//! running statistics live beside them (in checkpoints, never in the optimizer).

pub mod init;

use candle_core::{DType, Device, Tensor, Var};

use crate::config::{Activation, Arch, ModelConfig};
use crate::error::Result;
use crate::rng::Rng;

/// What a parameter is, for weight-decay exemptions and histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    Weight,
    Bias,
    /// Batch-norm scale and shift.
    Norm,
}

/// A trainable parameter with its hierarchical name (`hidden0.weight`).
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub kind: ParamKind,
    pub var: Var,
}

pub(crate) struct BatchNorm {
    pub(crate) gamma: Var,
    pub(crate) beta: Var,
    pub(crate) running_mean: Tensor,
    pub(crate) running_var: Tensor,
    pub(crate) momentum: f64,
    pub(crate) eps: f64,
    /// 2 for `[N, C]`, 4 for `[N, C, H, W]`.
    rank: usize,
}

impl BatchNorm {
    fn new(c: usize, rank: usize, dev: &Device) -> Result<Self> {
        Ok(BatchNorm {
            gamma: Var::from_tensor(&Tensor::ones(c, DType::F32, dev)?)?,
            beta: Var::from_tensor(&Tensor::zeros(c, DType::F32, dev)?)?,
            running_mean: Tensor::zeros(c, DType::F32, dev)?,
            running_var: Tensor::ones(c, DType::F32, dev)?,
            momentum: 0.1,
            eps: 1e-5,
            rank,
        })
    }

    fn shape_c(&self, t: &Tensor) -> Result<Tensor> {
        let c = t.dim(0)?;
        Ok(if self.rank == 4 {
            t.reshape((1, c, 1, 1))?
        } else {
            t.reshape((1, c))?
        })
    }

    fn mean_over(&self, x: &Tensor) -> Result<Tensor> {
        let m = x.mean_keepdim(0)?;
        Ok(if self.rank == 4 {
            m.mean_keepdim(2)?.mean_keepdim(3)?
        } else {
            m
        })
    }

    /// PyTorch `BatchNorm1d/2d` semantics: training normalizes with the biased batch
    /// variance and updates the running variance with the unbiased one.
    fn forward_t(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (mean, var) = if train {
            let mean = self.mean_over(x)?;
            let centered = x.broadcast_sub(&mean)?;
            let var = self.mean_over(&centered.sqr()?)?;
            let n = x.elem_count() / x.dim(1)?;
            let m = self.momentum;
            let bm = mean.flatten_all()?.detach();
            let bv = (var.flatten_all()?.detach() * (n as f64 / (n.max(2) - 1) as f64))?;
            self.running_mean = ((&self.running_mean * (1.0 - m))? + (bm * m)?)?;
            self.running_var = ((&self.running_var * (1.0 - m))? + (bv * m)?)?;
            (mean, var)
        } else {
            (
                self.shape_c(&self.running_mean)?,
                self.shape_c(&self.running_var)?,
            )
        };
        let xhat = x
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(xhat
            .broadcast_mul(&self.shape_c(self.gamma.as_tensor())?)?
            .broadcast_add(&self.shape_c(self.beta.as_tensor())?)?)
    }
}

pub(crate) struct Layer {
    pub(crate) name: String,
    pub(crate) weight: Var,
    pub(crate) bias: Var,
    pub(crate) bn: Option<BatchNorm>,
}

/// The MLP or CNN of a trial.
pub struct Model {
    pub(crate) arch: Arch,
    pub(crate) activation: Activation,
    pub(crate) dropout: f64,
    pub(crate) convs: Vec<Layer>,
    pub(crate) hidden: Vec<Layer>,
    pub(crate) output: Layer,
    device: Device,
}

fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::Relu => x.relu()?,
        Activation::Tanh => x.tanh()?,
        Activation::Sigmoid => candle_nn::ops::sigmoid(x)?,
        Activation::Gelu => x.gelu_erf()?,
    })
}

impl Model {
    /// Builds and initializes a model for images of `channels × size × size` and
    /// `classes` outputs; `init_seed` drives the `init` stream.
    pub fn new(
        cfg: &ModelConfig,
        channels: usize,
        size: usize,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Model> {
        let mut rng = Rng::stream(seed, "init");
        let mut make = |name: String,
                        fan_in: usize,
                        fan_out: usize,
                        shape: Vec<usize>,
                        bn: Option<usize>|
         -> Result<Layer> {
            let numel: usize = shape.iter().product();
            let out = shape[0];
            let mut w = vec![0f32; numel];
            let mut b = vec![0f32; out];
            init::init_layer(cfg, fan_in, fan_out, &mut w, &mut b, &mut rng);
            Ok(Layer {
                name,
                weight: Var::from_tensor(&Tensor::from_vec(w, shape, device)?)?,
                bias: Var::from_tensor(&Tensor::from_vec(b, out, device)?)?,
                bn: match bn {
                    Some(rank) => Some(BatchNorm::new(out, rank, device)?),
                    None => None,
                },
            })
        };
        let bn = |rank| cfg.batch_norm.then_some(rank);
        let mut convs = Vec::new();
        let mut features = channels * size * size;
        if cfg.arch == Arch::Cnn {
            let (mut c_in, mut s) = (channels, size);
            for (i, &c_out) in cfg.conv_channels.iter().enumerate() {
                convs.push(make(
                    format!("conv{i}"),
                    c_in * 9,
                    c_out * 9,
                    vec![c_out, c_in, 3, 3],
                    bn(4),
                )?);
                c_in = c_out;
                s /= 2;
            }
            features = c_in * s * s;
        }
        let mut hidden = Vec::new();
        for (i, &h) in cfg.hidden_sizes().iter().enumerate() {
            hidden.push(make(
                format!("hidden{i}"),
                features,
                h,
                vec![h, features],
                bn(2),
            )?);
            features = h;
        }
        let output = make(
            "output".into(),
            features,
            classes,
            vec![classes, features],
            None,
        )?;
        Ok(Model {
            arch: cfg.arch,
            activation: cfg.activation,
            dropout: cfg.dropout,
            convs,
            hidden,
            output,
            device: device.clone(),
        })
    }

    pub(crate) fn layers(&self) -> impl Iterator<Item = &Layer> {
        self.convs
            .iter()
            .chain(&self.hidden)
            .chain(std::iter::once(&self.output))
    }

    /// Trainable parameters in a fixed order (the optimizer's order).
    pub fn params(&self) -> Vec<Param> {
        let mut out = Vec::new();
        for l in self.layers() {
            out.push(Param {
                name: format!("{}.weight", l.name),
                kind: ParamKind::Weight,
                var: l.weight.clone(),
            });
            out.push(Param {
                name: format!("{}.bias", l.name),
                kind: ParamKind::Bias,
                var: l.bias.clone(),
            });
            if let Some(bn) = &l.bn {
                out.push(Param {
                    name: format!("{}.bn.weight", l.name),
                    kind: ParamKind::Norm,
                    var: bn.gamma.clone(),
                });
                out.push(Param {
                    name: format!("{}.bn.bias", l.name),
                    kind: ParamKind::Norm,
                    var: bn.beta.clone(),
                });
            }
        }
        out
    }

    /// Number of trainable values (running statistics excluded).
    pub fn num_parameters(&self) -> usize {
        self.params().iter().map(|p| p.var.elem_count()).sum()
    }

    /// Every tensor of the model by name: parameters and batch-norm running statistics.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .params()
            .into_iter()
            .map(|p| (p.name, p.var.as_tensor().clone()))
            .collect();
        for l in self.layers() {
            if let Some(bn) = &l.bn {
                out.push((
                    format!("{}.bn.running_mean", l.name),
                    bn.running_mean.clone(),
                ));
                out.push((format!("{}.bn.running_var", l.name), bn.running_var.clone()));
            }
        }
        out
    }

    /// A host copy of every tensor, to restore later (restore-best-weights).
    pub fn snapshot(&self) -> Result<Vec<Vec<f32>>> {
        self.state()
            .iter()
            .map(|(_, t)| Ok(t.flatten_all()?.to_vec1::<f32>()?))
            .collect()
    }

    pub fn restore(&mut self, snap: &[Vec<f32>]) -> Result<()> {
        let params = self.params();
        let np = params.len();
        for (p, v) in params.iter().zip(snap) {
            p.var
                .set(&Tensor::from_slice(v, p.var.shape(), &self.device)?)?;
        }
        let mut k = np;
        let dev = self.device.clone();
        for l in self.convs.iter_mut().chain(self.hidden.iter_mut()) {
            if let Some(bn) = &mut l.bn {
                bn.running_mean = Tensor::from_slice(&snap[k], snap[k].len(), &dev)?;
                bn.running_var = Tensor::from_slice(&snap[k + 1], snap[k + 1].len(), &dev)?;
                k += 2;
            }
        }
        Ok(())
    }

    /// Logits for a batch `[N, C, H, W]`. In training, batch-norm uses batch
    /// statistics and dropout masks are drawn from `dropout_rng`.
    pub fn forward_t(&mut self, xs: &Tensor, train: bool, dropout_rng: &mut Rng) -> Result<Tensor> {
        self.forward_impl(xs, train, train.then_some(dropout_rng), None)
    }

    /// Every batch-norm layer's running mean and variance (`None` for a layer
    /// without), to put back with [`Model::set_running_stats`].
    pub(crate) fn running_stats(&self) -> Vec<Option<(Tensor, Tensor)>> {
        self.layers()
            .map(|l| {
                l.bn.as_ref()
                    .map(|b| (b.running_mean.clone(), b.running_var.clone()))
            })
            .collect()
    }

    pub(crate) fn set_running_stats(&mut self, saved: Vec<Option<(Tensor, Tensor)>>) {
        for (l, s) in self
            .convs
            .iter_mut()
            .chain(self.hidden.iter_mut())
            .zip(saved)
        {
            if let (Some(bn), Some((m, v))) = (&mut l.bn, s) {
                bn.running_mean = m;
                bn.running_var = v;
            }
        }
    }

    /// The training-mode forward pass without dropout and without touching the
    /// batch-norm running statistics, keeping every layer's output (after its
    /// activation and a convolution's pooling, before dropout; the logits for
    /// `output`): what
    /// [`crate::probe`] measures.
    pub(crate) fn forward_capture(
        &mut self,
        xs: &Tensor,
    ) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let saved = self.running_stats();
        let mut captured = Vec::new();
        let logits = self.forward_impl(xs, true, None, Some(&mut captured));
        self.set_running_stats(saved);
        Ok((logits?, captured))
    }

    fn forward_impl(
        &mut self,
        xs: &Tensor,
        train: bool,
        mut dropout_rng: Option<&mut Rng>,
        mut capture: Option<&mut Vec<(String, Tensor)>>,
    ) -> Result<Tensor> {
        let act = self.activation;
        let mut x = xs.clone();
        if self.arch == Arch::Cnn {
            for l in &mut self.convs {
                x = x.conv2d(l.weight.as_tensor(), 1, 1, 1, 1)?;
                x = x.broadcast_add(&l.bias.as_tensor().reshape((1, (), 1, 1))?)?;
                if let Some(bn) = &mut l.bn {
                    x = bn.forward_t(&x, train)?;
                }
                x = max_pool2(&activate(&x, act)?)?;
                if let Some(c) = capture.as_deref_mut() {
                    c.push((l.name.clone(), x.clone()));
                }
            }
        }
        x = x.flatten_from(1)?;
        for l in &mut self.hidden {
            x = x
                .matmul(&l.weight.as_tensor().t()?)?
                .broadcast_add(l.bias.as_tensor())?;
            if let Some(bn) = &mut l.bn {
                x = bn.forward_t(&x, train)?;
            }
            x = activate(&x, act)?;
            if let Some(c) = capture.as_deref_mut() {
                c.push((l.name.clone(), x.clone()));
            }
            if let Some(rng) = dropout_rng.as_deref_mut() {
                if self.dropout > 0.0 {
                    x = dropout(&x, self.dropout, rng)?;
                }
            }
        }
        let o = &self.output;
        let logits = x
            .matmul(&o.weight.as_tensor().t()?)?
            .broadcast_add(o.bias.as_tensor())?;
        if let Some(c) = capture {
            c.push((o.name.clone(), logits.clone()));
        }
        Ok(logits)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

/// 2×2 max-pooling, stride 2, odd rows and columns dropped (floor), written as a
/// reshape and two max-reductions. Candle 0.11.1's own `max_pool2d` backward
/// multiplies the gradient by the window's share of maxima (¼ for a unique
/// maximum) where PyTorch passes it whole; the reductions' backward passes it whole.
pub fn max_pool2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (h2, w2) = (h / 2, w / 2);
    let x = if h % 2 == 1 || w % 2 == 1 {
        x.narrow(2, 0, 2 * h2)?.narrow(3, 0, 2 * w2)?.contiguous()?
    } else {
        x.contiguous()?
    };
    Ok(x.reshape((n, c, h2, 2, w2, 2))?.max(5)?.max(3)?)
}

/// Inverted dropout: zero with probability `p`, scale survivors by `1/(1−p)`, as
/// `torch.nn.Dropout` in training mode; the mask comes from our seeded stream.
pub fn dropout(x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    let keep = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.bernoulli(p) { 0.0 } else { keep })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
    Ok(x.mul(&mask)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: &[Vec<f32>], want: &[&[f64]], tol: f64) {
        for (a, b) in got.iter().zip(want) {
            for (x, y) in a.iter().zip(*b) {
                assert!((*x as f64 - y).abs() < tol, "{got:?} vs {want:?}");
            }
        }
    }

    /// PyTorch 2.15.0 reference (float64):
    /// ```python
    /// bn = torch.nn.BatchNorm1d(3).double()   # momentum=0.1, eps=1e-5
    /// bn.weight.data = torch.tensor([1.5,0.5,1.0]); bn.bias.data = torch.tensor([0.1,-0.2,0.0])
    /// x = torch.tensor([[1.0,2.0,3.0],[0.5,-1.0,2.0],[2.0,0.0,-1.0],[-0.5,1.5,0.0]], requires_grad=True)
    /// c = torch.tensor([[1,2,3],[4,5,6],[7,8,9],[10,11,12]]) * 0.1
    /// bn.train(); out = bn(x); (out*c).sum().backward()       # out, x.grad, running stats
    /// bn.eval(); bn(torch.tensor([[0.0,1.0,2.0],[1.0,-1.0,0.5]]))
    /// ```
    #[test]
    fn batch_norm_1d_matches_pytorch() {
        let dev = Device::Cpu;
        let mut bn = BatchNorm::new(3, 2, &dev).unwrap();
        bn.gamma
            .set(&Tensor::new(&[1.5f32, 0.5, 1.0], &dev).unwrap())
            .unwrap();
        bn.beta
            .set(&Tensor::new(&[0.1f32, -0.2, 0.0], &dev).unwrap())
            .unwrap();
        let x = Var::new(
            &[
                [1.0f32, 2.0, 3.0],
                [0.5, -1.0, 2.0],
                [2.0, 0.0, -1.0],
                [-0.5, 1.5, 0.0],
            ],
            &dev,
        )
        .unwrap();
        let out = bn.forward_t(x.as_tensor(), true).unwrap();
        close(
            &out.to_vec2::<f32>().unwrap(),
            &[
                &[0.51602259, 0.37655463, 1.2649085],
                &[-0.31602259, -0.88138275, 0.63245427],
                &[2.1801129, -0.46207029, -1.2649085],
                &[-1.9801129, 0.1668984, -0.63245427],
            ],
            1e-5,
        );
        let c = (Tensor::new(
            &[[1f32, 2., 3.], [4., 5., 6.], [7., 8., 9.], [10., 11., 12.]],
            &dev,
        )
        .unwrap()
            * 0.1)
            .unwrap();
        let grads = (out * c).unwrap().sum_all().unwrap().backward().unwrap();
        close(
            &grads.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap(),
            &[
                &[-0.69123824, -0.18108774, -0.056921795],
                &[-0.30721597, -0.071882073, 0.018973173],
                &[0.53762564, 0.059441021, -0.13281449],
                &[0.46082856, 0.19352879, 0.17076311],
            ],
            1e-5,
        );
        close(
            &[grads
                .get(bn.gamma.as_tensor())
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()],
            &[&[-0.4992271, -0.062896869, -1.1384177]],
            1e-5,
        );
        close(
            &[bn.running_mean.to_vec1::<f32>().unwrap()],
            &[&[0.075, 0.0625, 0.1]],
            1e-6,
        );
        close(
            &[bn.running_var.to_vec1::<f32>().unwrap()],
            &[&[1.0083333, 1.0895833, 1.2333333]],
            1e-6,
        );
        let x2 = Tensor::new(&[[0.0f32, 1.0, 2.0], [1.0, -1.0, 0.5]], &dev).unwrap();
        let ev = bn.forward_t(&x2, false).unwrap();
        close(
            &ev.to_vec2::<f32>().unwrap(),
            &[
                &[-0.012033602, 0.24906485, 1.7108487],
                &[1.4817478, -0.70894017, 0.36017867],
            ],
            1e-5,
        );
    }

    /// ```python
    /// bn = torch.nn.BatchNorm2d(2).double(); x = torch.arange(16.).reshape(2,2,2,2) ** 1.5 / 10; bn(x)
    /// ```
    #[test]
    fn batch_norm_2d_matches_pytorch() {
        let dev = Device::Cpu;
        let mut bn = BatchNorm::new(2, 4, &dev).unwrap();
        let v: Vec<f32> = (0..16).map(|i| (i as f32).powf(1.5) / 10.0).collect();
        let x = Tensor::from_vec(v, (2, 2, 2, 2), &dev).unwrap();
        let out = bn
            .forward_t(&x, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = [
            -1.1205403,
            -1.0498202,
            -0.92051347,
            -0.75306753,
            -1.230435,
            -1.0633085,
            -0.87851169,
            -0.67759663,
            0.47967451,
            0.78890434,
            1.1158279,
            1.4595347,
            0.53362357,
            0.81229283,
            1.1018972,
            1.4020383,
        ];
        close(&[out], &[&want], 1e-5);
        close(
            &[bn.running_mean.to_vec1::<f32>().unwrap()],
            &[&[0.15844706, 0.3141461]],
            1e-6,
        );
        close(
            &[bn.running_var.to_vec1::<f32>().unwrap()],
            &[&[1.1285089, 1.3138541]],
            1e-5,
        );
    }

    /// `F.max_pool2d(x, 2)` on a 1×1×3×5 input keeps the 2×2 windows of the first
    /// two rows and four columns; `y.sum().backward()` puts a gradient of exactly 1
    /// on each window's maximum (candle's own max_pool2d backward gives ¼).
    #[test]
    fn max_pool_passes_the_whole_gradient_to_the_maximum() {
        let x = Var::new(
            &[[[
                [1f32, 5., 2., 2., 9.],
                [6., 0., 3., 1., 9.],
                [7., 7., 7., 7., 7.],
            ]]],
            &Device::Cpu,
        )
        .unwrap();
        let y = max_pool2(x.as_tensor()).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [6., 3.]);
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut want = [0f32; 15];
        want[5] = 1.0;
        want[7] = 1.0;
        assert_eq!(gx, want);
    }

    /// `torch.nn.Dropout(p)` in training: zeros with probability p, survivors × 1/(1−p),
    /// so the expectation is unchanged.
    #[test]
    fn dropout_scales_survivors() {
        let x = Tensor::ones((1000, 100), DType::F32, &Device::Cpu).unwrap();
        let y = dropout(&x, 0.3, &mut Rng::new(4))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let zeros = y.iter().filter(|v| **v == 0.0).count() as f64 / y.len() as f64;
        assert!((zeros - 0.3).abs() < 0.01, "{zeros}");
        assert!(y.iter().all(|v| *v == 0.0 || (*v - 1.0 / 0.7).abs() < 1e-6));
        let mean = y.iter().map(|v| *v as f64).sum::<f64>() / y.len() as f64;
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
    }

    #[test]
    fn eval_mode_is_deterministic_and_ignores_dropout() {
        let cfg = ModelConfig {
            dropout: 0.5,
            batch_norm: true,
            ..ModelConfig::default()
        };
        let mut m = Model::new(&cfg, 1, 4, 3, 1, &Device::Cpu).unwrap();
        let x = Tensor::ones((2, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let a = m
            .forward_t(&x, false, &mut Rng::new(1))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let b = m
            .forward_t(&x, false, &mut Rng::new(2))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            m.num_parameters(),
            16 * 512 + 512 + 2 * 512 + 512 * 128 + 128 + 2 * 128 + 128 * 3 + 3
        );
    }
}
