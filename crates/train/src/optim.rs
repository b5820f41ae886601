//! Optimizers with PyTorch's semantics, written out because candle's are thin:
//!
//! - `sgd`: `torch.optim.SGD(lr, momentum, nesterov, weight_decay)`, dampening 0; the
//!   weight decay is L2 added to the gradient.
//! - `adam`: `torch.optim.Adam(lr, betas, eps, weight_decay)`; weight decay is L2
//!   added to the gradient (coupled), not decoupled.
//! - `adamw`: `torch.optim.AdamW`; decoupled decay `p ← p·(1 − lr·wd)` before the
//!   Adam step.
//!
//! Each parameter is updated by one fused pass over its value, gradient and moment
//! buffers. On CPU the pass runs in place on the parameter's own storage (a candle
//! in-place custom op), so a step allocates nothing; on other devices the same
//! kernel runs on a host copy.

use std::cell::RefCell;

use candle_core::{backprop::GradStore, CpuStorage, Layout, Tensor};

use crate::config::{OptimizerKind, TrainConfig};
use crate::error::Result;
use crate::model::{Param, ParamKind};

/// Hyper-parameters of one step, shared by all parameters.
#[derive(Clone, Copy, Debug)]
pub struct Hyper {
    pub kind: OptimizerKind,
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

/// Moment buffers of one parameter: host vectors on the CPU, device tensors
/// elsewhere (where the update runs as candle ops, see [`update_tensors`]).
#[derive(Clone, Debug, Default)]
pub struct ParamState {
    /// SGD momentum buffer or Adam's first moment.
    pub m: Vec<f32>,
    /// Adam's second moment.
    pub v: Vec<f32>,
    pub m_dev: Option<Tensor>,
    pub v_dev: Option<Tensor>,
}

/// The same update as [`update`] written with candle tensor ops, for parameters
/// on a device other than the CPU (CUDA): the moments stay on the device and
/// nothing is copied to the host. Same formulas, same order of operations.
pub fn update_tensors(
    h: &Hyper,
    t: u64,
    wd: f32,
    p: &candle_core::Var,
    g: &Tensor,
    s: &mut ParamState,
) -> Result<()> {
    let pt = p.as_tensor();
    let k = Coeffs::new(h, t, wd, s.m_dev.is_none());
    let (wd, lr) = (wd as f64, h.lr as f64);
    match h.kind {
        OptimizerKind::Sgd => {
            let gi = (g + (pt * wd)?)?;
            if h.momentum == 0.0 {
                p.set(&(pt - (gi * lr)?)?)?;
                return Ok(());
            }
            let mu = h.momentum as f64;
            let b = match &s.m_dev {
                None => gi.clone(),
                Some(m) => ((m * mu)? + &gi)?,
            };
            let d = if h.nesterov {
                (&gi + (&b * mu)?)?
            } else {
                b.clone()
            };
            s.m_dev = Some(b);
            p.set(&(pt - (d * lr)?)?)?;
        }
        OptimizerKind::Adam | OptimizerKind::Adamw => {
            let (b1, b2) = (h.beta1 as f64, h.beta2 as f64);
            let pd = (pt * k.decay as f64)?;
            let gi = (g + (&pd * k.l2 as f64)?)?;
            let zeros = || Tensor::zeros_like(pt);
            let m = match &s.m_dev {
                Some(m) => m.clone(),
                None => zeros()?,
            };
            let v = match &s.v_dev {
                Some(v) => v.clone(),
                None => zeros()?,
            };
            let mn = ((m * b1)? + (&gi * (1.0 - b1))?)?;
            let vn = ((v * b2)? + (gi.sqr()? * (1.0 - b2))?)?;
            let denom = ((vn.sqrt()? / k.bc2_sqrt as f64)? + h.eps as f64)?;
            let newp = (pd - ((&mn * k.step as f64)? / denom)?)?;
            s.m_dev = Some(mn);
            s.v_dev = Some(vn);
            p.set(&newp)?;
        }
    }
    Ok(())
}

/// Values per task when an update is split over threads (large weight matrices).
const CHUNK: usize = 1 << 15;

/// The fused update of one parameter, step `t` (1-based), weight decay `wd`.
/// Large parameters are split into chunks updated on the rayon pool; the
/// result does not depend on the split (every element is independent).
pub fn update(h: &Hyper, t: u64, wd: f32, p: &mut [f32], g: &[f32], s: &mut ParamState) {
    use rayon::prelude::*;
    let n = p.len();
    let first = s.m.is_empty();
    let uses_m = h.kind != OptimizerKind::Sgd || h.momentum != 0.0;
    if first && uses_m {
        s.m.resize(n, 0.0);
    }
    if h.kind != OptimizerKind::Sgd && s.v.is_empty() {
        s.v.resize(n, 0.0);
    }
    let k = Coeffs::new(h, t, wd, first);
    let (m, v) = (&mut s.m, &mut s.v);
    if n < 2 * CHUNK || rayon::current_num_threads() < 2 {
        k.apply(p, g, m, v);
        return;
    }
    let mc: Vec<&mut [f32]> = if m.is_empty() {
        (0..n.div_ceil(CHUNK)).map(|_| &mut [][..]).collect()
    } else {
        m.chunks_mut(CHUNK).collect()
    };
    let vc: Vec<&mut [f32]> = if v.is_empty() {
        (0..n.div_ceil(CHUNK)).map(|_| &mut [][..]).collect()
    } else {
        v.chunks_mut(CHUNK).collect()
    };
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(mc.into_par_iter())
        .zip(vc.into_par_iter())
        .for_each(|(((p, g), m), v)| k.apply(p, g, m, v));
}

/// The per-step constants of an update.
struct Coeffs {
    h: Hyper,
    wd: f32,
    first: bool,
    step: f32,
    bc2_sqrt: f32,
    l2: f32,
    decay: f32,
}

impl Coeffs {
    fn new(h: &Hyper, t: u64, wd: f32, first: bool) -> Self {
        let (b1, b2) = (h.beta1 as f64, h.beta2 as f64);
        let bc1 = 1.0 - b1.powi(t as i32);
        let (l2, decay) = if h.kind == OptimizerKind::Adamw {
            (0.0, 1.0 - h.lr * wd)
        } else {
            (wd, 1.0)
        };
        Coeffs {
            h: *h,
            wd,
            first,
            step: (h.lr as f64 / bc1) as f32,
            bc2_sqrt: (1.0 - b2.powi(t as i32)).sqrt() as f32,
            l2,
            decay,
        }
    }

    /// The update of one chunk. On x86-64 with AVX2 the same code is compiled a
    /// second time for 8-wide vectors and chosen at run time; no fused
    /// multiply-add is introduced, so both give bit-identical results.
    fn apply(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was detected on this CPU at run time.
                unsafe { self.apply_avx2(p, g, m, v) };
                return;
            }
        }
        self.apply_portable(p, g, m, v)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        self.apply_portable(p, g, m, v)
    }

    #[inline(always)]
    fn apply_portable(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let h = &self.h;
        let wd = self.wd;
        match h.kind {
            OptimizerKind::Sgd => {
                if h.momentum == 0.0 {
                    for (pi, gi) in p.iter_mut().zip(g) {
                        let gi = gi + wd * *pi;
                        *pi -= h.lr * gi;
                    }
                    return;
                }
                let mu = h.momentum;
                for ((pi, gi), mi) in p.iter_mut().zip(g).zip(m.iter_mut()) {
                    let gi = gi + wd * *pi;
                    let b = if self.first { gi } else { mu * *mi + gi };
                    *mi = b;
                    let d = if h.nesterov { gi + mu * b } else { b };
                    *pi -= h.lr * d;
                }
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let (b1, b2) = (h.beta1, h.beta2);
                let (step, bc2_sqrt, l2, decay, eps) =
                    (self.step, self.bc2_sqrt, self.l2, self.decay, h.eps);
                for (((pi, gi), mi), vi) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut())
                {
                    let pd = *pi * decay;
                    let gi = gi + l2 * pd;
                    let mn = b1 * *mi + (1.0 - b1) * gi;
                    let vn = b2 * *vi + (1.0 - b2) * gi * gi;
                    *mi = mn;
                    *vi = vn;
                    *pi = pd - step * mn / (vn.sqrt() / bc2_sqrt + eps);
                }
            }
        }
    }
}

struct InPlace<'a> {
    h: Hyper,
    t: u64,
    wd: f32,
    state: RefCell<&'a mut ParamState>,
}

/// The same update with the gradient given as a host slice (the CPU engine's).
struct InPlaceSlice<'a> {
    h: Hyper,
    t: u64,
    wd: f32,
    g: &'a [f32],
    state: RefCell<&'a mut ParamState>,
}

impl candle_core::InplaceOp1 for InPlaceSlice<'_> {
    fn name(&self) -> &'static str {
        "sweep-optimizer-step"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(p) = s else {
            candle_core::bail!("optimizer: parameters must be f32");
        };
        let Some((p0, p1)) = l.contiguous_offsets() else {
            candle_core::bail!("optimizer: parameter is not contiguous");
        };
        if p1 - p0 != self.g.len() {
            candle_core::bail!(
                "optimizer: gradient has {} values for a parameter of {}",
                self.g.len(),
                p1 - p0
            );
        }
        let mut st = self.state.borrow_mut();
        update(&self.h, self.t, self.wd, &mut p[p0..p1], self.g, &mut st);
        Ok(())
    }
}

impl candle_core::InplaceOp2 for InPlace<'_> {
    fn name(&self) -> &'static str {
        "sweep-optimizer-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (s1, s2) else {
            candle_core::bail!("optimizer: parameters and gradients must be f32");
        };
        let (Some((p0, p1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("optimizer: parameter or gradient is not contiguous");
        };
        let mut st = self.state.borrow_mut();
        update(
            &self.h,
            self.t,
            self.wd,
            &mut p[p0..p1],
            &g[g0..g1],
            &mut st,
        );
        Ok(())
    }
}

/// An optimizer over a fixed list of parameters.
pub struct Optimizer {
    hyper: Hyper,
    weight_decay: Vec<f32>,
    states: Vec<ParamState>,
    t: u64,
    /// Parameters that get no update (nor weight decay): `train.freeze`.
    frozen: Vec<bool>,
}

impl Optimizer {
    pub fn new(cfg: &TrainConfig, params: &[Param]) -> Self {
        let weight_decay = params
            .iter()
            .map(|p| {
                let exempt = !cfg.decay_bias_and_norm && p.kind != ParamKind::Weight;
                if exempt {
                    0.0
                } else {
                    cfg.weight_decay as f32
                }
            })
            .collect();
        Optimizer {
            hyper: Hyper {
                kind: cfg.optimizer,
                lr: cfg.learning_rate as f32,
                momentum: cfg.momentum as f32,
                nesterov: cfg.nesterov,
                beta1: cfg.beta1 as f32,
                beta2: cfg.beta2 as f32,
                eps: cfg.epsilon as f32,
            },
            weight_decay,
            states: vec![ParamState::default(); params.len()],
            t: 0,
            frozen: vec![false; params.len()],
        }
    }

    /// The same optimizer with the parameters flagged in `frozen` left alone:
    /// no update, no weight decay, no moments.
    pub fn with_frozen(mut self, frozen: Vec<bool>) -> Self {
        assert_eq!(frozen.len(), self.frozen.len(), "one flag per parameter");
        self.frozen = frozen;
        self
    }

    /// One step at learning rate `lr` with the gradients in `grads`. Parameters
    /// without a gradient are left alone.
    pub fn step(&mut self, params: &[Param], grads: &GradStore, lr: f64) -> Result<()> {
        self.t += 1;
        let mut h = self.hyper;
        h.lr = lr as f32;
        for (i, p) in params.iter().enumerate() {
            if self.frozen[i] {
                continue;
            }
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let g = g.contiguous()?;
            let wd = self.weight_decay[i];
            if p.var.device().is_cpu() {
                let op = InPlace {
                    h,
                    t: self.t,
                    wd,
                    state: RefCell::new(&mut self.states[i]),
                };
                p.var.as_tensor().inplace_op2(&g, &op)?;
            } else {
                update_tensors(&h, self.t, wd, &p.var, &g, &mut self.states[i])?;
            }
        }
        Ok(())
    }

    /// One step with gradients given as host slices, one per parameter in the
    /// order of `params` (the CPU engine's gradients).
    pub fn step_slices(&mut self, params: &[Param], grads: &[Vec<f32>], lr: f64) -> Result<()> {
        if grads.len() != params.len() {
            return Err(crate::error::Error::Invalid(format!(
                "optimizer: {} gradients for {} parameters",
                grads.len(),
                params.len()
            )));
        }
        self.t += 1;
        let mut h = self.hyper;
        h.lr = lr as f32;
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            if self.frozen[i] {
                continue;
            }
            let wd = self.weight_decay[i];
            if p.var.device().is_cpu() {
                let op = InPlaceSlice {
                    h,
                    t: self.t,
                    wd,
                    g,
                    state: RefCell::new(&mut self.states[i]),
                };
                p.var.as_tensor().inplace_op1(&op)?;
            } else {
                let mut host = p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                update(&h, self.t, wd, &mut host, g, &mut self.states[i]);
                p.var
                    .set(&Tensor::from_vec(host, p.var.shape(), p.var.device())?)?;
            }
        }
        Ok(())
    }

    pub fn steps_taken(&self) -> u64 {
        self.t
    }
}

/// The learning rate of epoch `epoch` (0-based) under the configured schedule, as
/// PyTorch's `StepLR(step_size, gamma)` and `CosineAnnealingLR(T_max=epochs, eta_min)`
/// stepped once per epoch.
pub fn learning_rate_at(cfg: &TrainConfig, epoch: usize) -> f64 {
    use crate::config::LrSchedule;
    let lr = cfg.learning_rate;
    match cfg.lr_schedule {
        LrSchedule::Constant => lr,
        LrSchedule::Step => lr * cfg.lr_step_gamma.powi((epoch / cfg.lr_step_epochs) as i32),
        LrSchedule::Cosine => {
            let t = epoch as f64 / cfg.epochs as f64;
            cfg.lr_min + (lr - cfg.lr_min) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LrSchedule;
    use candle_core::{Device, Var};

    fn run(cfg: TrainConfig) -> Vec<Vec<f32>> {
        let var =
            Var::from_tensor(&Tensor::new(&[1.0f32, -2.0, 3.0], &Device::Cpu).unwrap()).unwrap();
        let params = vec![Param {
            name: "p".into(),
            kind: ParamKind::Weight,
            var: var.clone(),
        }];
        let mut opt = Optimizer::new(&cfg, &params);
        let grads = [[0.5f32, -0.1, 0.2], [0.3, 0.2, -0.4], [-0.2, 0.1, 0.05]];
        let mut out = Vec::new();
        for g in grads {
            // a loss whose gradient w.r.t. p is g: sum(p * g)
            let gt = Tensor::new(&g, &Device::Cpu).unwrap();
            let loss = (var.as_tensor() * gt).unwrap().sum_all().unwrap();
            let store = loss.backward().unwrap();
            opt.step(&params, &store, cfg.learning_rate).unwrap();
            out.push(var.as_tensor().to_vec1::<f32>().unwrap());
        }
        out
    }

    /// The device path (candle tensor ops, used on CUDA) computes the same
    /// updates as the fused host kernel; run here on CPU tensors.
    #[test]
    fn tensor_op_update_matches_the_fused_kernel() {
        let mut rng = crate::rng::Rng::new(4);
        let n = 257;
        for (kind, momentum, nesterov) in [
            (OptimizerKind::Sgd, 0.0, false),
            (OptimizerKind::Sgd, 0.9, false),
            (OptimizerKind::Sgd, 0.9, true),
            (OptimizerKind::Adam, 0.0, false),
            (OptimizerKind::Adamw, 0.0, false),
        ] {
            let h = Hyper {
                kind,
                lr: 1e-2,
                momentum,
                nesterov,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            };
            let p0: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
            let var = Var::from_slice(&p0, n, &Device::Cpu).unwrap();
            let mut host = p0.clone();
            let (mut sd, mut sh) = (ParamState::default(), ParamState::default());
            for t in 1..=3 {
                let g: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
                let gt = Tensor::from_slice(&g, n, &Device::Cpu).unwrap();
                update_tensors(&h, t, 1e-2, &var, &gt, &mut sd).unwrap();
                update(&h, t, 1e-2, &mut host, &g, &mut sh);
                let dev = var.as_tensor().to_vec1::<f32>().unwrap();
                for (a, b) in dev.iter().zip(&host) {
                    assert!(
                        (a - b).abs() < 1e-6 * b.abs().max(1.0),
                        "{kind:?} step {t}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// The AVX2 build of the update (chosen at run time) and the portable one
    /// agree bit for bit, for every optimizer, so results do not depend on the CPU.
    #[test]
    fn vector_and_portable_updates_are_bit_identical() {
        let mut rng = crate::rng::Rng::new(9);
        let n = 1000;
        let rand = |rng: &mut crate::rng::Rng| -> Vec<f32> {
            (0..n).map(|_| rng.normal() as f32).collect()
        };
        for kind in [
            OptimizerKind::Sgd,
            OptimizerKind::Adam,
            OptimizerKind::Adamw,
        ] {
            let h = Hyper {
                kind,
                lr: 1e-2,
                momentum: 0.9,
                nesterov: true,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            };
            let k = Coeffs::new(&h, 3, 1e-2, false);
            let (p, g, m) = (rand(&mut rng), rand(&mut rng), rand(&mut rng));
            let v: Vec<f32> = rand(&mut rng).iter().map(|x| x * x).collect();
            let (mut p1, mut m1, mut v1) = (p.clone(), m.clone(), v.clone());
            let (mut p2, mut m2, mut v2) = (p, m, v);
            k.apply(&mut p1, &g, &mut m1, &mut v1);
            k.apply_portable(&mut p2, &g, &mut m2, &mut v2);
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&p1), bits(&p2), "{kind:?}");
            assert_eq!(bits(&m1), bits(&m2), "{kind:?}");
            assert_eq!(bits(&v1), bits(&v2), "{kind:?}");
        }
    }

    fn check(got: &[Vec<f32>], want: &[[f64; 3]; 3], what: &str) {
        for (a, b) in got.iter().zip(want) {
            for (x, y) in a.iter().zip(b) {
                assert!((*x as f64 - y).abs() < 2e-6, "{what}: {got:?} vs {want:?}");
            }
        }
    }

    /// Reference values from PyTorch (float64), see REF_* below:
    /// ```python
    /// import torch
    /// def run(make):
    ///     p = torch.nn.Parameter(torch.tensor([1.0,-2.0,3.0], dtype=torch.float64)); o = make([p]); out = []
    ///     for g in ([0.5,-0.1,0.2],[0.3,0.2,-0.4],[-0.2,0.1,0.05]):
    ///         p.grad = torch.tensor(g, dtype=torch.float64); o.step(); out.append(p.detach().tolist())
    ///     return out
    /// run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1))
    /// run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True))
    /// run(lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1))
    /// run(lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1))
    /// run(lambda ps: torch.optim.SGD(ps, lr=0.1))
    /// ```
    #[test]
    fn steps_match_pytorch() {
        let sgd = TrainConfig {
            optimizer: OptimizerKind::Sgd,
            learning_rate: 0.1,
            momentum: 0.9,
            weight_decay: 0.1,
            ..Default::default()
        };
        check(&run(sgd.clone()), &REF_SGD_MOMENTUM, "sgd momentum");
        check(
            &run(TrainConfig {
                nesterov: true,
                ..sgd.clone()
            }),
            &REF_SGD_NESTEROV,
            "sgd nesterov",
        );
        check(
            &run(TrainConfig {
                momentum: 0.0,
                weight_decay: 0.0,
                ..sgd
            }),
            &REF_SGD_PLAIN,
            "sgd",
        );
        let adam = TrainConfig {
            optimizer: OptimizerKind::Adam,
            learning_rate: 0.01,
            weight_decay: 0.1,
            ..Default::default()
        };
        check(&run(adam.clone()), &REF_ADAM_L2, "adam");
        check(
            &run(TrainConfig {
                optimizer: OptimizerKind::Adamw,
                ..adam
            }),
            &REF_ADAMW,
            "adamw",
        );
    }

    #[test]
    fn bias_and_norm_can_be_exempt_from_decay() {
        let cfg = TrainConfig {
            decay_bias_and_norm: false,
            weight_decay: 0.5,
            ..Default::default()
        };
        let mk = |kind| Param {
            name: "x".into(),
            kind,
            var: Var::new(&[1.0f32], &Device::Cpu).unwrap(),
        };
        let opt = Optimizer::new(
            &cfg,
            &[
                mk(ParamKind::Weight),
                mk(ParamKind::Bias),
                mk(ParamKind::Norm),
            ],
        );
        assert_eq!(opt.weight_decay, vec![0.5, 0.0, 0.0]);
    }

    #[test]
    fn schedules_match_pytorch_formulas() {
        let base = TrainConfig {
            learning_rate: 0.1,
            epochs: 10,
            lr_step_epochs: 3,
            lr_step_gamma: 0.5,
            ..Default::default()
        };
        let step = TrainConfig {
            lr_schedule: LrSchedule::Step,
            ..base.clone()
        };
        let got: Vec<f64> = (0..7).map(|e| learning_rate_at(&step, e)).collect();
        assert_eq!(got, vec![0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]);
        let cos = TrainConfig {
            lr_schedule: LrSchedule::Cosine,
            lr_min: 0.0,
            ..base
        };
        assert!((learning_rate_at(&cos, 0) - 0.1).abs() < 1e-12);
        assert!((learning_rate_at(&cos, 5) - 0.05).abs() < 1e-12);
        // CosineAnnealingLR(T_max=10): epoch 3 -> 0.1*(1+cos(0.3π))/2
        assert!(
            (learning_rate_at(&cos, 3) - 0.1 * (1.0 + (0.3 * std::f64::consts::PI).cos()) / 2.0)
                .abs()
                < 1e-12
        );
    }

    // PyTorch 2.15.0, float64.
    const REF_SGD_MOMENTUM: [[f64; 3]; 3] = [
        [0.94, -1.97, 2.95],
        [0.8466, -1.9433, 2.9155],
        [0.774074, -1.909837, 2.850295],
    ];
    const REF_SGD_NESTEROV: [[f64; 3]; 3] = [
        [0.886, -1.943, 2.905],
        [0.763566, -1.919783, 2.885305],
        [0.71184165, -1.8808988, 2.7934037],
    ];
    const REF_SGD_PLAIN: [[f64; 3]; 3] = [
        [0.95, -1.99, 2.98],
        [0.92, -2.01, 3.02],
        [0.94, -2.02, 3.015],
    ];
    const REF_ADAM_L2: [[f64; 3]; 3] = [
        [0.99, -1.99, 2.99],
        [0.98029934, -1.9833243, 2.9849063],
        [0.97377065, -1.9764296, 2.9780502],
    ];
    const REF_ADAMW: [[f64; 3]; 3] = [
        [0.989, -1.988, 2.987],
        [0.9784361, -1.989673, 2.987674],
        [0.97253145, -1.9928758, 2.9867886],
    ];
}
