//! The CPU training engine: forward and backward of the study's models written
//! out over reused buffers, instead of candle's generic autograd.
//!
//! Why: candle's backward computes every operand gradient (including the first
//! layer's input gradient nobody needs), allocates fresh multi-megabyte buffers
//! for each op (zero-filled, then added to), and runs convolutions backward
//! through conv-transpose. Here each layer keeps its activations and gradient
//! buffers from step to step, matrix products go straight to `gemm` (the crate
//! candle uses), convolutions are im2col + matrix products split over images,
//! and gradients land in one buffer per parameter that the optimizer reads.
//!
//! The parameters stay candle `Var`s (read through their storage, updated in
//! place by the optimizer), so checkpoints, evaluation and the CUDA path (which
//! keeps candle's autograd) see the same model. Semantics equal the generic
//! path (`Model::forward_t` + `backward`), including the order in which dropout
//! masks are drawn; `tests` compare both on every layer kind.

use candle_core::{CpuStorage, Storage, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use crate::config::{Activation, Arch};
use crate::error::{Error, Result};
use crate::kernels::{self as k, MatRef};
use crate::loss::CrossEntropy;
use crate::model::Model;
use crate::rng::Rng;

/// Buffers of one convolution block (conv → bias → [BN] → activation → 2×2 max-pool).
#[derive(Default)]
struct ConvBufs {
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    bn: bool,
    /// Convolution output plus bias `[n, cout, h, w]`.
    u: Vec<f32>,
    xhat: Vec<f32>,
    /// Batch-norm output (the activation's input when `bn`).
    v: Vec<f32>,
    /// Activated and pooled output `[n, cout, h/2, w/2]`.
    pooled: Vec<f32>,
    arg: Vec<u32>,
    inv_std: Vec<f32>,
}

/// Buffers of one hidden dense block (linear → [BN] → activation → [dropout]).
#[derive(Default)]
struct DenseBufs {
    fin: usize,
    fout: usize,
    bn: bool,
    u: Vec<f32>,
    xhat: Vec<f32>,
    v: Vec<f32>,
    r: Vec<f32>,
    mask: Vec<f32>,
    /// Output after dropout (training with dropout only).
    d: Vec<f32>,
    inv_std: Vec<f32>,
}

/// Per-thread scratch of the convolution passes.
#[derive(Default)]
struct Scratch {
    cols: Vec<f32>,
    /// One image's gradient wrt the convolution output (no batch-norm).
    du: Vec<f32>,
    dcols: Vec<f32>,
}

/// Images whose convolution weight and bias gradients are summed together
/// (image by image, in order) before the groups' sums are added up (in group
/// order): a fixed number, so that the order of every sum is set by the batch
/// and never by the thread count, and a trial gives the same numbers on any
/// number of threads (docs/config.md, "Determinism").
const GRAD_GROUP: usize = 8;

/// Indices of a layer's parameters in `Model::params()` order.
#[derive(Clone, Copy)]
struct Slots {
    w: usize,
    b: usize,
    bn: Option<usize>,
}

pub struct Engine {
    threads: usize,
    act: Activation,
    dropout: f32,
    channels: usize,
    size: usize,
    classes: usize,
    convs: Vec<ConvBufs>,
    dense: Vec<DenseBufs>,
    slots: Vec<Slots>,
    logits: Vec<f32>,
    dlogits: Vec<f32>,
    targets: Vec<f32>,
    /// Gradients wrt layer outputs, ping-pong.
    ga: Vec<f32>,
    gb: Vec<f32>,
    /// Gradient wrt a convolution block's pre-pool activations.
    gconv: Vec<f32>,
    scratch: Vec<Scratch>,
    /// A convolution's weight and bias gradients per group of [`GRAD_GROUP`]
    /// images, `[group][cout·cin·9 + cout]`.
    group_grads: Vec<f32>,
    grads: Vec<Vec<f32>>,
    /// Seconds of the last training step's forward (with the loss) and backward pass.
    last_timing: (f64, f64),
}

/// What [`Engine::probe_pass`] measured.
pub struct ProbePass {
    pub loss: f32,
    /// Per layer, `[n, units, …]` row-major.
    pub outputs: Vec<Vec<f32>>,
    pub gradient_norms: Vec<f64>,
}

/// Read access to every parameter's values for the length of a pass.
struct ParamSlices<'a> {
    guards: Vec<(candle_core::StorageRef<'a>, usize, usize)>,
}

impl<'a> ParamSlices<'a> {
    fn new(tensors: &'a [Tensor]) -> Result<Self> {
        let mut guards = Vec::with_capacity(tensors.len());
        for t in tensors {
            let (g, layout) = t.storage_and_layout();
            if !layout.is_contiguous() || !matches!(&*g, Storage::Cpu(CpuStorage::F32(_))) {
                return Err(Error::Invalid(
                    "CPU engine: parameters must be contiguous f32 tensors on the CPU".into(),
                ));
            }
            let start = layout.start_offset();
            guards.push((g, start, t.elem_count()));
        }
        Ok(ParamSlices { guards })
    }
    fn get(&self, i: usize) -> &[f32] {
        let (g, start, len) = &self.guards[i];
        match &**g {
            Storage::Cpu(CpuStorage::F32(v)) => &v[*start..*start + *len],
            _ => unreachable!("checked in ParamSlices::new"),
        }
    }
}

fn grow<T: Default + Clone>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

impl Engine {
    /// An engine for `model` on images of `channels × size × size`.
    pub fn new(model: &Model, channels: usize, size: usize) -> Result<Engine> {
        if !model.device().is_cpu() {
            return Err(Error::Invalid("the CPU engine needs a CPU model".into()));
        }
        let mut slots = Vec::new();
        let mut next = 0;
        for l in model.layers() {
            let bn = l.bn.is_some();
            slots.push(Slots {
                w: next,
                b: next + 1,
                bn: bn.then_some(next + 2),
            });
            next += if bn { 4 } else { 2 };
        }
        let mut convs = Vec::new();
        let (mut c, mut s) = (channels, size);
        if model.arch == Arch::Cnn {
            for l in &model.convs {
                let cout = l.weight.dims()[0];
                convs.push(ConvBufs {
                    cin: c,
                    cout,
                    h: s,
                    w: s,
                    bn: l.bn.is_some(),
                    ..Default::default()
                });
                c = cout;
                s /= 2;
            }
        }
        let mut dense = Vec::new();
        for l in &model.hidden {
            let d = l.weight.dims();
            dense.push(DenseBufs {
                fin: d[1],
                fout: d[0],
                bn: l.bn.is_some(),
                ..Default::default()
            });
        }
        let grads = model
            .params()
            .iter()
            .map(|p| vec![0f32; p.var.elem_count()])
            .collect();
        let threads = candle_core::utils::get_num_threads().max(1);
        Ok(Engine {
            threads,
            act: model.activation,
            dropout: model.dropout as f32,
            channels,
            size,
            classes: model.output.weight.dims()[0],
            convs,
            dense,
            slots,
            logits: Vec::new(),
            dlogits: Vec::new(),
            targets: Vec::new(),
            ga: Vec::new(),
            gb: Vec::new(),
            gconv: Vec::new(),
            scratch: (0..threads).map(|_| Scratch::default()).collect(),
            group_grads: Vec::new(),
            grads,
            last_timing: (0.0, 0.0),
        })
    }

    /// Grows the buffers for a batch of `n` (they never shrink); the ones only
    /// backward needs are grown only for training, so evaluation with a larger
    /// batch does not allocate gradient space.
    fn ensure(&mut self, n: usize, train: bool) {
        let mut widest = self.channels * self.size * self.size;
        let mut conv_widest = 0;
        for l in &mut self.convs {
            let e = n * l.cout * l.h * l.w;
            let p = n * l.cout * (l.h / 2) * (l.w / 2);
            grow(&mut l.u, e);
            if l.bn {
                grow(&mut l.v, e);
                grow(&mut l.inv_std, l.cout);
                if train {
                    grow(&mut l.xhat, e);
                }
            }
            grow(&mut l.pooled, p);
            grow(&mut l.arg, p);
            widest = widest.max(n * l.cin * l.h * l.w).max(p);
            conv_widest = conv_widest.max(e);
            for sc in &mut self.scratch {
                grow(&mut sc.cols, l.cin * 9 * l.h * l.w);
                if train {
                    grow(&mut sc.du, l.cout * l.h * l.w);
                    grow(&mut sc.dcols, l.cin * 9 * l.h * l.w);
                }
            }
            if train {
                grow(
                    &mut self.group_grads,
                    n.div_ceil(GRAD_GROUP) * (l.cout * l.cin * 9 + l.cout),
                );
            }
        }
        for l in &mut self.dense {
            let e = n * l.fout;
            grow(&mut l.u, e);
            if l.bn {
                grow(&mut l.v, e);
                grow(&mut l.inv_std, l.fout);
                if train {
                    grow(&mut l.xhat, e);
                }
            }
            grow(&mut l.r, e);
            if train && self.dropout > 0.0 {
                grow(&mut l.mask, e);
                grow(&mut l.d, e);
            }
            widest = widest.max(n * l.fin).max(e);
        }
        grow(&mut self.logits, n * self.classes);
        if train {
            grow(&mut self.ga, widest);
            grow(&mut self.gb, widest);
            grow(&mut self.gconv, conv_widest);
            grow(&mut self.dlogits, n * self.classes);
        }
    }

    /// Parameter gradients of the last training step, in `Model::params()` order.
    pub fn grads(&self) -> &[Vec<f32>] {
        &self.grads
    }

    /// Seconds spent in the last training step's forward pass (loss included) and
    /// backward pass.
    pub fn last_timing(&self) -> (f64, f64) {
        self.last_timing
    }

    /// Logits (`n × classes`, row-major) of the last pass.
    pub fn logits(&self, n: usize) -> &[f32] {
        &self.logits[..n * self.classes]
    }

    /// Evaluation-mode logits of a batch `x` (`[n, C, H, W]` flattened).
    pub fn forward_eval(&mut self, model: &mut Model, x: &[f32], n: usize) -> Result<&[f32]> {
        self.forward(model, x, n, false, None)?;
        Ok(self.logits(n))
    }

    /// One training step's forward and backward pass: returns the mean loss and
    /// leaves the parameter gradients in [`Engine::grads`] (and the batch's
    /// logits in [`Engine::logits`]). Batch-norm running statistics are updated
    /// and dropout masks drawn from `dropout_rng`, as in `Model::forward_t`.
    pub fn train_step(
        &mut self,
        model: &mut Model,
        x: &[f32],
        labels: &[u32],
        ce: &CrossEntropy,
        dropout_rng: &mut Rng,
    ) -> Result<f32> {
        let (loss, timing) = self.forward_backward(model, x, labels, ce, Some(dropout_rng))?;
        self.last_timing = timing;
        Ok(loss)
    }

    /// Forward pass in training mode, the loss and its gradient wrt the logits,
    /// and the backward pass: the mean loss and the seconds of the forward
    /// (with the loss) and of the backward pass.
    fn forward_backward(
        &mut self,
        model: &mut Model,
        x: &[f32],
        labels: &[u32],
        ce: &CrossEntropy,
        dropout_rng: Option<&mut Rng>,
    ) -> Result<(f32, (f64, f64))> {
        let n = labels.len();
        let t0 = std::time::Instant::now();
        self.forward(model, x, n, true, dropout_rng)?;
        let (t, norm) = ce.targets(labels);
        self.targets = t;
        let kk = self.classes;
        let loss = k::softmax_cross_entropy(
            &self.logits[..n * kk],
            &self.targets,
            kk,
            norm,
            &mut self.dlogits[..n * kk],
        );
        let t1 = std::time::Instant::now();
        self.backward(model, x, n)?;
        Ok((loss, ((t1 - t0).as_secs_f64(), t1.elapsed().as_secs_f64())))
    }

    /// The initialization-health probe's pass ([`crate::probe`]): the training
    /// loss of a batch forward and backward in training mode but without
    /// dropout, leaving the batch-norm running statistics as they were. Returns
    /// the mean loss, each layer's output (a convolution block's activated and
    /// pooled maps, a dense block's activations, the logits) and the L2 norm of
    /// each layer's weight gradient, in `Model::layers()` order.
    pub fn probe_pass(
        &mut self,
        model: &mut Model,
        x: &[f32],
        labels: &[u32],
        ce: &CrossEntropy,
    ) -> Result<ProbePass> {
        let n = labels.len();
        let saved = model.running_stats();
        let dropout = std::mem::replace(&mut self.dropout, 0.0);
        let pass = self.forward_backward(model, x, labels, ce, None);
        self.dropout = dropout;
        model.set_running_stats(saved);
        let (loss, _) = pass?;
        let mut outputs: Vec<Vec<f32>> = self
            .convs
            .iter()
            .map(|l| l.pooled[..n * l.cout * (l.h / 2) * (l.w / 2)].to_vec())
            .collect();
        outputs.extend(self.dense.iter().map(|l| l.r[..n * l.fout].to_vec()));
        outputs.push(self.logits[..n * self.classes].to_vec());
        let gradient_norms = self
            .slots
            .iter()
            .map(|s| crate::probe::l2(&self.grads[s.w]))
            .collect();
        Ok(ProbePass {
            loss,
            outputs,
            gradient_norms,
        })
    }

    fn forward(
        &mut self,
        model: &mut Model,
        x: &[f32],
        n: usize,
        train: bool,
        mut rng: Option<&mut Rng>,
    ) -> Result<()> {
        let expected = n * self.channels * self.size * self.size;
        if x.len() != expected {
            return Err(Error::Invalid(format!(
                "CPU engine: batch has {} values, expected {expected} ({n} images of {}×{}×{})",
                x.len(),
                self.channels,
                self.size,
                self.size
            )));
        }
        self.ensure(n, train);
        let tensors: Vec<Tensor> = model
            .params()
            .iter()
            .map(|p| p.var.as_tensor().clone())
            .collect();
        let ps = ParamSlices::new(&tensors)?;
        let par = k::parallelism(self.threads);
        let act = self.act;
        let mut running: Vec<(usize, Vec<f32>, Vec<f32>)> = Vec::new();
        let bn_layers: Vec<(f64, f64, Vec<f32>, Vec<f32>)> = model
            .layers()
            .map(|l| match &l.bn {
                Some(bn) => Ok((
                    bn.momentum,
                    bn.eps,
                    bn.running_mean.to_vec1::<f32>()?,
                    bn.running_var.to_vec1::<f32>()?,
                )),
                None => Ok((0.0, 0.0, Vec::new(), Vec::new())),
            })
            .collect::<Result<_>>()?;
        let mut li = 0;

        // Convolution blocks.
        let groups = self.threads;
        for ci in 0..self.convs.len() {
            let (prev, rest) = self.convs.split_at_mut(ci);
            let l = &mut rest[0];
            let input = conv_input(prev, n, x);
            let sl = self.slots[li];
            let (w, b) = (ps.get(sl.w), ps.get(sl.b));
            let (cin, cout, h, wd) = (l.cin, l.cout, l.h, l.w);
            let hw = h * wd;
            let per = n.div_ceil(groups).max(1);
            let (h2, w2) = (h / 2, wd / 2);
            let bn = l.bn;
            // Without batch-norm each image is convolved, activated and pooled while
            // its feature maps are still in cache; with it, pooling waits for the
            // batch statistics.
            l.u[..n * cout * hw]
                .par_chunks_mut(per * cout * hw)
                .zip(input.par_chunks(per * cin * hw))
                .zip(l.pooled[..n * cout * h2 * w2].par_chunks_mut(per * cout * h2 * w2))
                .zip(l.arg[..n * cout * h2 * w2].par_chunks_mut(per * cout * h2 * w2))
                .zip(self.scratch.par_iter_mut())
                .for_each(|((((u, xin), p), a), sc)| {
                    for (((un, xn), pn), an) in u
                        .chunks_exact_mut(cout * hw)
                        .zip(xin.chunks_exact(cin * hw))
                        .zip(p.chunks_exact_mut(cout * h2 * w2))
                        .zip(a.chunks_exact_mut(cout * h2 * w2))
                    {
                        k::im2col3(xn, cin, h, wd, &mut sc.cols);
                        k::matmul(
                            un,
                            cout,
                            hw,
                            cin * 9,
                            MatRef::rows(w, cin * 9),
                            MatRef::rows(&sc.cols, hw),
                            false,
                            Parallelism::None,
                        );
                        for (c, bc) in b.iter().enumerate() {
                            for v in &mut un[c * hw..(c + 1) * hw] {
                                *v += bc;
                            }
                        }
                        if !bn {
                            k::act_max_pool2(act, un, cout, h, wd, pn, an);
                        }
                    }
                });
            if let Some(bi) = sl.bn {
                let (gamma, beta) = (ps.get(bi), ps.get(bi + 1));
                let (mom, eps, rm, rv) = &bn_layers[li];
                let (mean, inv) = batch_norm_stats(
                    &l.u[..n * cout * hw],
                    n,
                    cout,
                    hw,
                    train,
                    *mom,
                    *eps,
                    rm,
                    rv,
                    li,
                    &mut running,
                );
                l.inv_std[..cout].copy_from_slice(&inv);
                let xhat: &mut [f32] = if train {
                    &mut l.xhat[..n * cout * hw]
                } else {
                    &mut []
                };
                k::bn_apply(
                    &l.u[..n * cout * hw],
                    cout,
                    hw,
                    &mean,
                    &inv,
                    gamma,
                    beta,
                    xhat,
                    &mut l.v[..n * cout * hw],
                );
            }
            let pre: &[f32] = if l.bn {
                &l.v[..n * cout * hw]
            } else {
                &l.u[..n * cout * hw]
            };
            if bn {
                pre.par_chunks(per * cout * hw)
                    .zip(l.pooled[..n * cout * h2 * w2].par_chunks_mut(per * cout * h2 * w2))
                    .zip(l.arg[..n * cout * h2 * w2].par_chunks_mut(per * cout * h2 * w2))
                    .for_each(|((v, p), a)| {
                        for ((vn, pn), an) in v
                            .chunks_exact(cout * hw)
                            .zip(p.chunks_exact_mut(cout * h2 * w2))
                            .zip(a.chunks_exact_mut(cout * h2 * w2))
                        {
                            k::act_max_pool2(act, vn, cout, h, wd, pn, an);
                        }
                    });
            }
            li += 1;
        }

        // Hidden dense blocks.
        for di in 0..self.dense.len() {
            let (prev, rest) = self.dense.split_at_mut(di);
            let l = &mut rest[0];
            let input = dense_input(prev, &self.convs, n, train, self.dropout, x);
            let sl = self.slots[li];
            let (fin, fout) = (l.fin, l.fout);
            linear_forward(
                &mut l.u[..n * fout],
                input,
                ps.get(sl.w),
                ps.get(sl.b),
                (n, fin, fout),
                par,
            );
            if let Some(bi) = sl.bn {
                let (mom, eps, rm, rv) = &bn_layers[li];
                let (mean, inv) = batch_norm_stats(
                    &l.u[..n * fout],
                    n,
                    fout,
                    1,
                    train,
                    *mom,
                    *eps,
                    rm,
                    rv,
                    li,
                    &mut running,
                );
                l.inv_std[..fout].copy_from_slice(&inv);
                let xhat: &mut [f32] = if train {
                    &mut l.xhat[..n * fout]
                } else {
                    &mut []
                };
                k::bn_apply(
                    &l.u[..n * fout],
                    fout,
                    1,
                    &mean,
                    &inv,
                    ps.get(bi),
                    ps.get(bi + 1),
                    xhat,
                    &mut l.v[..n * fout],
                );
            }
            let pre: &[f32] = if l.bn {
                &l.v[..n * fout]
            } else {
                &l.u[..n * fout]
            };
            k::activate(act, pre, &mut l.r[..n * fout]);
            if train && self.dropout > 0.0 {
                let rng = rng.as_deref_mut().ok_or_else(|| {
                    Error::Invalid("CPU engine: dropout in training needs a random stream".into())
                })?;
                let p = self.dropout as f64;
                let keep = (1.0 / (1.0 - p)) as f32;
                for ((m, d), r) in l.mask[..n * fout]
                    .iter_mut()
                    .zip(&mut l.d[..n * fout])
                    .zip(&l.r[..n * fout])
                {
                    *m = if rng.bernoulli(p) { 0.0 } else { keep };
                    *d = r * *m;
                }
            }
            li += 1;
        }

        // Output layer.
        let input = dense_input(&self.dense, &self.convs, n, train, self.dropout, x);
        let sl = self.slots[li];
        let fin = model.output.weight.dims()[1];
        let kk = self.classes;
        linear_forward(
            &mut self.logits[..n * kk],
            input,
            ps.get(sl.w),
            ps.get(sl.b),
            (n, fin, kk),
            par,
        );
        drop(ps);
        drop(tensors);

        // Batch-norm running statistics, written back as the generic path does.
        let dev = model.device().clone();
        let mut layers: Vec<&mut crate::model::Layer> = model
            .convs
            .iter_mut()
            .chain(model.hidden.iter_mut())
            .collect();
        for (idx, mean, var) in running {
            if let Some(bn) = layers[idx].bn.as_mut() {
                let c = mean.len();
                bn.running_mean = Tensor::from_vec(mean, c, &dev)?;
                bn.running_var = Tensor::from_vec(var, c, &dev)?;
            }
        }
        layers.clear();
        Ok(())
    }

    fn backward(&mut self, model: &Model, x: &[f32], n: usize) -> Result<()> {
        let tensors: Vec<Tensor> = model
            .params()
            .iter()
            .map(|p| p.var.as_tensor().clone())
            .collect();
        let ps = ParamSlices::new(&tensors)?;
        let par = k::parallelism(self.threads);
        let act = self.act;
        let nconv = self.convs.len();
        let ndense = self.dense.len();
        let mut li = nconv + ndense;

        // Output layer: dW = dzᵀ·input, db = Σ dz, d(input) = dz·W.
        let kk = self.classes;
        let fin = model.output.weight.dims()[1];
        let has_prev = nconv + ndense > 0;
        {
            let input = dense_input(&self.dense, &self.convs, n, true, self.dropout, x);
            let sl = self.slots[li];
            let dx = has_prev.then(|| &mut self.ga[..n * fin]);
            linear_backward(
                &mut self.grads,
                sl,
                &self.dlogits[..n * kk],
                input,
                ps.get(sl.w),
                (n, fin, kk),
                dx,
                par,
            );
        }

        // Hidden dense blocks, last to first; `ga` holds the gradient wrt the block's output.
        for di in (0..ndense).rev() {
            li -= 1;
            let sl = self.slots[li];
            let (prev, rest) = self.dense.split_at_mut(di);
            let l = &mut rest[0];
            let (fin, fout) = (l.fin, l.fout);
            let g = &mut self.ga[..n * fout];
            if self.dropout > 0.0 {
                for (gi, m) in g.iter_mut().zip(&l.mask[..n * fout]) {
                    *gi *= m;
                }
            }
            let pre: &[f32] = if l.bn {
                &l.v[..n * fout]
            } else {
                &l.u[..n * fout]
            };
            k::activate_backward(act, pre, &l.r[..n * fout], g);
            if let Some(bi) = sl.bn {
                let (a, b) = self.grads.split_at_mut(bi + 1);
                k::bn_backward(
                    g,
                    &l.xhat[..n * fout],
                    n,
                    fout,
                    1,
                    ps.get(bi),
                    &l.inv_std[..fout],
                    &mut a[bi],
                    &mut b[0],
                );
            }
            let input = dense_input(prev, &self.convs, n, true, self.dropout, x);
            // The first layer's input gradient is nobody's: skip it.
            let need_dx = di > 0 || nconv > 0;
            let dx = need_dx.then(|| &mut self.gb[..n * fin]);
            linear_backward(
                &mut self.grads,
                sl,
                g,
                input,
                ps.get(sl.w),
                (n, fin, fout),
                dx,
                par,
            );
            if need_dx {
                std::mem::swap(&mut self.ga, &mut self.gb);
            }
        }

        // Convolution blocks, last to first; `ga` holds the gradient wrt the pooled output.
        let groups = self.threads;
        for ci in (0..nconv).rev() {
            li -= 1;
            let sl = self.slots[li];
            let (prev, rest) = self.convs.split_at_mut(ci);
            let l = &mut rest[0];
            let (cin, cout, h, wd) = (l.cin, l.cout, l.h, l.w);
            let (hw, hw2) = (h * wd, (h / 2) * (wd / 2));
            // Each task takes whole groups of GRAD_GROUP images (as many tasks
            // as threads): the thread count decides who sums a group, not
            // which images it holds.
            let ngroups = n.div_ceil(GRAD_GROUP);
            let per = ngroups.div_ceil(groups).max(1) * GRAD_GROUP;
            let pre: &[f32] = if l.bn {
                &l.v[..n * cout * hw]
            } else {
                &l.u[..n * cout * hw]
            };
            // Through the pool and the activation: with batch-norm for the whole
            // batch first (its backward needs batch sums); without, image by image
            // below, while the image's gradient is in cache.
            let bn = l.bn;
            if bn {
                self.gconv[..n * cout * hw]
                    .par_chunks_mut(per * cout * hw)
                    .zip(self.ga[..n * cout * hw2].par_chunks(per * cout * hw2))
                    .zip(l.arg[..n * cout * hw2].par_chunks(per * cout * hw2))
                    .zip(l.pooled[..n * cout * hw2].par_chunks(per * cout * hw2))
                    .zip(pre.par_chunks(per * cout * hw))
                    .for_each(|((((dr, gp), arg), pooled), v)| {
                        for ((((drn, gpn), an), pn), vn) in dr
                            .chunks_exact_mut(cout * hw)
                            .zip(gp.chunks_exact(cout * hw2))
                            .zip(arg.chunks_exact(cout * hw2))
                            .zip(pooled.chunks_exact(cout * hw2))
                            .zip(v.chunks_exact(cout * hw))
                        {
                            k::act_max_pool2_backward(act, vn, pn, an, gpn, drn);
                        }
                    });
            }
            if let Some(bi) = sl.bn {
                let (a, b) = self.grads.split_at_mut(bi + 1);
                k::bn_backward(
                    &mut self.gconv[..n * cout * hw],
                    &l.xhat[..n * cout * hw],
                    n,
                    cout,
                    hw,
                    ps.get(bi),
                    &l.inv_std[..cout],
                    &mut a[bi],
                    &mut b[0],
                );
            }
            let input = conv_input(prev, n, x);
            let w = ps.get(sl.w);
            let need_dx = ci > 0;
            // Without batch-norm `gconv` is not filled (each image's gradient is
            // formed in scratch); it still gives the loop its per-group chunks.
            let du = &self.gconv[..n * cout * hw];
            // Input gradient of this block = gradient wrt the previous block's pooled output.
            let dx: &mut [f32] = if need_dx {
                &mut self.gb[..n * cin * hw]
            } else {
                &mut []
            };
            let kdim = cin * 9;
            let dx_chunks: Vec<&mut [f32]> = if need_dx {
                dx.chunks_mut(per * cin * hw).collect()
            } else {
                (0..n.div_ceil(per)).map(|_| &mut [][..]).collect()
            };
            let gp = &self.ga[..n * cout * hw2];
            let arg = &l.arg[..n * cout * hw2];
            let pooled = &l.pooled[..n * cout * hw2];
            let acc_len = cout * kdim + cout;
            du.par_chunks(per * cout * hw)
                .zip(input.par_chunks(per * cin * hw))
                .zip(dx_chunks.into_par_iter())
                .zip(self.scratch.par_iter_mut())
                .zip(
                    self.group_grads[..ngroups * acc_len]
                        .par_chunks_mut(per / GRAD_GROUP * acc_len),
                )
                .enumerate()
                .for_each(|(g, ((((dun, xn), dxn), sc), accs))| {
                    let first = g * per;
                    for (i, xi) in xn.chunks_exact(cin * hw).enumerate() {
                        let img = first + i;
                        // this image's group: its sums start afresh with the
                        // group's first image
                        let (dwg, dbg) =
                            accs[i / GRAD_GROUP * acc_len..][..acc_len].split_at_mut(cout * kdim);
                        let fresh = i % GRAD_GROUP == 0;
                        let dui: &[f32] = if bn {
                            &dun[i * cout * hw..(i + 1) * cout * hw]
                        } else {
                            let (o, o2) = (img * cout * hw, img * cout * hw2);
                            k::act_max_pool2_backward(
                                act,
                                &pre[o..o + cout * hw],
                                &pooled[o2..o2 + cout * hw2],
                                &arg[o2..o2 + cout * hw2],
                                &gp[o2..o2 + cout * hw2],
                                &mut sc.du[..cout * hw],
                            );
                            &sc.du[..cout * hw]
                        };
                        k::im2col3(xi, cin, h, wd, &mut sc.cols);
                        k::matmul(
                            dwg,
                            cout,
                            kdim,
                            hw,
                            MatRef::rows(dui, hw),
                            MatRef::transposed(&sc.cols, hw),
                            !fresh,
                            Parallelism::None,
                        );
                        for (c, d) in dbg.iter_mut().enumerate() {
                            let sum = dui[c * hw..(c + 1) * hw].iter().sum::<f32>();
                            *d = if fresh { sum } else { *d + sum };
                        }
                        if need_dx {
                            k::matmul(
                                &mut sc.dcols,
                                kdim,
                                hw,
                                cout,
                                MatRef::transposed(w, kdim),
                                MatRef::rows(dui, hw),
                                false,
                                Parallelism::None,
                            );
                            k::col2im3(
                                &sc.dcols,
                                cin,
                                h,
                                wd,
                                &mut dxn[i * cin * hw..(i + 1) * cin * hw],
                            );
                        }
                    }
                });
            let (gw, rest) = self.grads.split_at_mut(sl.w + 1);
            let (dw, db) = (&mut gw[sl.w], &mut rest[0]);
            dw.fill(0.0);
            db.fill(0.0);
            for acc in self.group_grads[..ngroups * acc_len].chunks_exact(acc_len) {
                let (gdw, gdb) = acc.split_at(cout * kdim);
                for (a, b) in dw.iter_mut().zip(gdw) {
                    *a += b;
                }
                for (a, b) in db.iter_mut().zip(gdb) {
                    *a += b;
                }
            }
            if need_dx {
                std::mem::swap(&mut self.ga, &mut self.gb);
            }
        }
        Ok(())
    }
}

/// A linear layer `y = x·Wᵀ + b` (`x`: `n × fin`, `W`: `fout × fin`).
fn linear_forward(
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: &[f32],
    (n, fin, fout): (usize, usize, usize),
    par: Parallelism,
) {
    k::matmul(
        y,
        n,
        fout,
        fin,
        MatRef::rows(x, fin),
        MatRef::transposed(w, fin),
        false,
        par,
    );
    k::add_row_bias(y, b);
}

/// Backward of a linear layer `y = x·Wᵀ + b` (`x`: `n × fin`) from `dy`
/// (`n × fout`): `dW = dyᵀ·x` and `db = Σ dy` into the gradient buffers of
/// `sl`, and `dx = dy·W` into `dx` when someone needs it.
#[allow(clippy::too_many_arguments)]
fn linear_backward(
    grads: &mut [Vec<f32>],
    sl: Slots,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    (n, fin, fout): (usize, usize, usize),
    dx: Option<&mut [f32]>,
    par: Parallelism,
) {
    let (gw, rest) = grads.split_at_mut(sl.w + 1);
    k::matmul(
        &mut gw[sl.w],
        fout,
        fin,
        n,
        MatRef::transposed(dy, fout),
        MatRef::rows(x, fin),
        false,
        par,
    );
    k::column_sums(dy, fout, &mut rest[0]);
    if let Some(dx) = dx {
        k::matmul(
            dx,
            n,
            fin,
            fout,
            MatRef::rows(dy, fout),
            MatRef::rows(w, fin),
            false,
            par,
        );
    }
}

/// The input of a convolution block: the previous block's pooled maps, else the images.
fn conv_input<'a>(prev: &'a [ConvBufs], n: usize, x: &'a [f32]) -> &'a [f32] {
    match prev.last() {
        Some(p) => &p.pooled[..n * p.cout * (p.h / 2) * (p.w / 2)],
        None => x,
    }
}

/// The input of a dense block (or of the output layer) after the dense blocks
/// `prev`: the last one's output, else the last convolution block's pooled maps
/// (flattened), else the images.
fn dense_input<'a>(
    prev: &'a [DenseBufs],
    convs: &'a [ConvBufs],
    n: usize,
    train: bool,
    dropout: f32,
    x: &'a [f32],
) -> &'a [f32] {
    match prev.last() {
        Some(l) => dense_output(l, n, train, dropout),
        None => conv_input(convs, n, x),
    }
}

/// The output a dense block hands on: after dropout in training, else the activation.
fn dense_output(l: &DenseBufs, n: usize, train: bool, dropout: f32) -> &[f32] {
    if train && dropout > 0.0 {
        &l.d[..n * l.fout]
    } else {
        &l.r[..n * l.fout]
    }
}

/// Mean and 1/std for batch-norm: batch statistics in training (queuing the
/// running-statistics update of layer `idx`), running statistics in evaluation.
#[allow(clippy::too_many_arguments)]
fn batch_norm_stats(
    u: &[f32],
    n: usize,
    c: usize,
    s: usize,
    train: bool,
    momentum: f64,
    eps: f64,
    running_mean: &[f32],
    running_var: &[f32],
    idx: usize,
    out: &mut Vec<(usize, Vec<f32>, Vec<f32>)>,
) -> (Vec<f32>, Vec<f32>) {
    if !train {
        let inv = running_var
            .iter()
            .map(|v| (1.0 / (*v as f64 + eps).sqrt()) as f32)
            .collect();
        return (running_mean.to_vec(), inv);
    }
    let mut mean = vec![0f64; c];
    let mut var = vec![0f64; c];
    k::channel_stats(u, n, c, s, &mut mean, &mut var);
    let count = n * s;
    let unbias = count as f64 / (count.max(2) - 1) as f64;
    let rm = running_mean
        .iter()
        .zip(&mean)
        .map(|(r, m)| (*r as f64 * (1.0 - momentum) + m * momentum) as f32)
        .collect();
    let rv = running_var
        .iter()
        .zip(&var)
        .map(|(r, v)| (*r as f64 * (1.0 - momentum) + v * unbias * momentum) as f32)
        .collect();
    out.push((idx, rm, rv));
    (
        mean.iter().map(|m| *m as f32).collect(),
        var.iter()
            .map(|v| (1.0 / (v + eps).sqrt()) as f32)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, OptimizerKind, TrainConfig};
    use crate::optim::Optimizer;
    use candle_core::Device;

    /// Largest |a − b| relative to the largest |b| of the tensor (so tiny entries
    /// of a big gradient do not fail on rounding).
    fn rel_err(a: &[f32], b: &[f32]) -> f64 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-4);
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .fold(0f64, f64::max)
            / scale
    }

    /// Runs `steps` training steps of the same model (same seed, same batch, same
    /// dropout stream) through candle's autograd and through the engine, and
    /// compares logits, loss, every gradient, the running statistics and the
    /// parameters after each optimizer step.
    fn compare(cfg: ModelConfig, channels: usize, size: usize, n: usize, steps: usize) {
        let dev = Device::Cpu;
        let classes = 5;
        // With batch-norm, the bias before it has a true gradient of zero and both
        // sides see only rounding noise there; Adam would scale that noise up to
        // full steps of random sign (moving the running mean apart), SGD keeps it noise.
        let train = TrainConfig {
            optimizer: if cfg.batch_norm {
                OptimizerKind::Sgd
            } else {
                OptimizerKind::Adamw
            },
            momentum: 0.9,
            learning_rate: 1e-2,
            weight_decay: 1e-2,
            ..TrainConfig::default()
        };
        let mut generic = Model::new(&cfg, channels, size, classes, 7, &dev).unwrap();
        let mut fast = Model::new(&cfg, channels, size, classes, 7, &dev).unwrap();
        let (pg, pf) = (generic.params(), fast.params());
        let (mut og, mut of) = (Optimizer::new(&train, &pg), Optimizer::new(&train, &pf));
        let ce = CrossEntropy::new(vec![1.0, 2.0, 0.5, 1.0, 3.0], 0.1);
        let mut engine = Engine::new(&fast, channels, size).unwrap();
        let mut data = Rng::new(11);
        let (mut rg, mut rf) = (Rng::new(5), Rng::new(5));
        let what = format!("{cfg:?} {channels}×{size}×{size} n={n}");
        for step in 0..steps {
            let x: Vec<f32> = (0..n * channels * size * size)
                .map(|_| data.normal() as f32)
                .collect();
            let y: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
            let xt = Tensor::from_slice(&x, (n, channels, size, size), &dev).unwrap();
            let logits = generic.forward_t(&xt, true, &mut rg).unwrap();
            let loss = ce.loss(&logits, &y).unwrap();
            let lg = loss.to_scalar::<f32>().unwrap();
            let grads = loss.backward().unwrap();
            let lf = engine.train_step(&mut fast, &x, &y, &ce, &mut rf).unwrap();
            assert!(
                (lg - lf).abs() < 1e-4 * lg.abs().max(1.0),
                "{what}: loss {lg} vs {lf}"
            );
            let zg = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(rel_err(engine.logits(n), &zg) < 1e-4, "{what}: logits");
            for (i, p) in pg.iter().enumerate() {
                let g = grads
                    .get(p.var.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let e = if cfg.batch_norm
                    && p.kind == crate::model::ParamKind::Bias
                    && p.name != "output.bias"
                {
                    // Zero up to rounding on both sides.
                    let big = engine.grads()[i]
                        .iter()
                        .chain(&g)
                        .fold(0f32, |m, v| m.max(v.abs()));
                    assert!(
                        big < 1e-5,
                        "{what}: bias before batch-norm has gradient {big}"
                    );
                    0.0
                } else {
                    rel_err(&engine.grads()[i], &g)
                };
                assert!(
                    e < 1e-3,
                    "{what}: step {step} gradient of {} off by {e}",
                    p.name
                );
            }
            og.step(&pg, &grads, 1e-2).unwrap();
            of.step_slices(&pf, engine.grads(), 1e-2).unwrap();
            for ((name, a), (_, b)) in fast.state().iter().zip(generic.state().iter()) {
                let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let e = rel_err(&a, &b);
                assert!(e < 1e-3, "{what}: step {step} {name} off by {e}");
            }
        }
        // Evaluation mode (running statistics, no dropout).
        let x: Vec<f32> = (0..3 * channels * size * size)
            .map(|_| data.normal() as f32)
            .collect();
        let xt = Tensor::from_slice(&x, (3, channels, size, size), &dev).unwrap();
        let zg = generic
            .forward_t(&xt, false, &mut Rng::new(0))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let zf = engine.forward_eval(&mut fast, &x, 3).unwrap();
        assert!(rel_err(zf, &zg) < 1e-3, "{what}: eval logits");
    }

    #[test]
    fn mlp_matches_autograd() {
        let cfg = ModelConfig {
            hidden: Some(vec![32, 16]),
            ..ModelConfig::default()
        };
        compare(cfg, 3, 6, 8, 3);
    }

    #[test]
    fn mlp_with_batch_norm_and_dropout_matches_autograd() {
        let cfg = ModelConfig {
            hidden: Some(vec![24, 12]),
            batch_norm: true,
            dropout: 0.3,
            ..ModelConfig::default()
        };
        compare(cfg, 1, 5, 9, 3);
    }

    #[test]
    fn every_activation_matches_autograd() {
        for act in [Activation::Tanh, Activation::Sigmoid, Activation::Gelu] {
            let cfg = ModelConfig {
                hidden: Some(vec![16]),
                activation: act,
                ..ModelConfig::default()
            };
            compare(cfg, 2, 4, 6, 2);
        }
    }

    #[test]
    fn mlp_without_hidden_layers_matches_autograd() {
        let cfg = ModelConfig {
            hidden: Some(vec![]),
            ..ModelConfig::default()
        };
        compare(cfg, 1, 4, 5, 2);
    }

    #[test]
    fn cnn_matches_autograd() {
        let cfg = ModelConfig {
            arch: Arch::Cnn,
            conv_channels: vec![4, 6],
            hidden: Some(vec![10]),
            ..ModelConfig::default()
        };
        compare(cfg, 3, 8, 5, 3);
    }

    #[test]
    fn cnn_with_batch_norm_odd_size_and_gelu_matches_autograd() {
        // 9×9 → pools to 4×4 (the last row and column dropped) → 2×2.
        let cfg = ModelConfig {
            arch: Arch::Cnn,
            conv_channels: vec![3, 4],
            hidden: Some(vec![]),
            batch_norm: true,
            activation: Activation::Gelu,
            ..ModelConfig::default()
        };
        compare(cfg, 1, 9, 4, 3);
    }

    #[test]
    fn cnn_with_dropout_and_several_dense_layers_matches_autograd() {
        let cfg = ModelConfig {
            arch: Arch::Cnn,
            conv_channels: vec![5],
            hidden: Some(vec![12, 8]),
            dropout: 0.25,
            activation: Activation::Tanh,
            ..ModelConfig::default()
        };
        compare(cfg, 2, 6, 7, 2);
    }

    /// A training step gives bit-identical losses, gradients and weights on
    /// any number of threads (1, 2, 3, 4, 8, and 16: more threads than groups
    /// of images), with and without batch-norm, with dropout, over batch sizes
    /// that are not multiples of `GRAD_GROUP`: every sum's order is set by the
    /// batch, never by the thread count. (The conv layers summed their weight
    /// gradients per thread's share of the batch before `GRAD_GROUP`.)
    #[test]
    fn training_steps_do_not_depend_on_the_thread_count() {
        let cnn = |batch_norm| ModelConfig {
            arch: Arch::Cnn,
            conv_channels: vec![4, 6],
            hidden: Some(vec![10]),
            batch_norm,
            dropout: 0.25,
            ..ModelConfig::default()
        };
        let mlp = ModelConfig {
            hidden: Some(vec![32, 16]),
            batch_norm: true,
            dropout: 0.25,
            ..ModelConfig::default()
        };
        for (cfg, n) in [(cnn(true), 50), (cnn(false), 37), (mlp, 64)] {
            let (channels, size, classes) = (3, 12, 5);
            let mut reference = None;
            for threads in [1, 2, 3, 4, 8, 16] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let got = pool.install(|| {
                    let dev = Device::Cpu;
                    let mut model = Model::new(&cfg, channels, size, classes, 7, &dev).unwrap();
                    let mut engine = Engine::new(&model, channels, size).unwrap();
                    // (the engine takes its thread count from RAYON_NUM_THREADS)
                    engine.threads = threads;
                    engine.scratch = (0..threads).map(|_| Scratch::default()).collect();
                    let params = model.params();
                    let mut opt = Optimizer::new(&TrainConfig::default(), &params);
                    let ce = CrossEntropy::new(vec![1.0; classes], 0.0);
                    let (mut data, mut drop) = (Rng::new(11), Rng::new(5));
                    let mut bits = Vec::new();
                    for _ in 0..3 {
                        let x: Vec<f32> = (0..n * channels * size * size)
                            .map(|_| data.normal() as f32)
                            .collect();
                        let y: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
                        let loss = engine
                            .train_step(&mut model, &x, &y, &ce, &mut drop)
                            .unwrap();
                        bits.push(loss.to_bits());
                        for g in engine.grads() {
                            bits.extend(g.iter().map(|v| v.to_bits()));
                        }
                        opt.step_slices(&params, engine.grads(), 1e-2).unwrap();
                    }
                    for (_, t) in model.state().iter() {
                        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                        bits.extend(v.iter().map(|v| v.to_bits()));
                    }
                    bits
                });
                match &reference {
                    None => reference = Some(got),
                    Some(r) => assert!(*r == got, "{cfg:?} n={n}: {threads} threads differ from 1"),
                }
            }
        }
    }

    #[test]
    fn a_batch_of_the_wrong_size_is_refused() {
        let cfg = ModelConfig::default();
        let mut m = Model::new(&cfg, 1, 4, 3, 0, &Device::Cpu).unwrap();
        let mut e = Engine::new(&m, 1, 4).unwrap();
        let err = e
            .forward_eval(&mut m, &[0.0; 17], 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("17 values, expected 16"), "{err}");
    }
}
