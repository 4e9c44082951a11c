//! The forward vocabulary shared by every architecture: [`Fwd`] applies
//! tch's functional ops to whichever [`Params`] it is given (parameters are
//! declared by [`super::spec::SpecBuilder`]).

use tch::{Kind, Tensor};

use super::Params;

/// How BatchNorm layers behave in one forward pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BnMode {
    /// Evaluation: normalise with the running statistics in `Params`.
    Eval,
    /// Training with batch statistics; with `Some(m)` the running buffers in
    /// `Params` are updated in place with momentum `m` (PyTorch's meaning:
    /// new = (1−m)·old + m·batch). `None` leaves them untouched.
    Train(Option<f64>),
}

impl BnMode {
    pub fn training(self) -> bool {
        matches!(self, BnMode::Train(_))
    }
}

/// Numeric precision of convolutions and linear layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in float32.
    Fp32,
    /// Convolutions and linear layers in bfloat16 (inputs and weights cast);
    /// parameters, BatchNorm, losses and metrics stay float32.
    Bf16,
}

impl Precision {
    /// The dtype convolutions and linear layers compute in.
    pub fn compute_kind(self) -> Kind {
        match self {
            Precision::Fp32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }
}

/// oneDNN's input-channel block: 8 floats for its AVX2 kernels, 16 for AVX-512.
pub const ONEDNN_IC_BLOCK_MAX: i64 = 16;

/// True for the strided 1×1 convolutions that libtorch's oneDNN (2.13)
/// mishandles on channels-last input: fewer input channels per group than
/// its SIMD block and a stride above 1. The weight gradient then goes through
/// the "reduce to unit stride" workspace and writes past it (oneDNN issue
/// #6035): measured here with `ONEDNN_MAX_CPU_ISA=AVX2`, 2 to 7 input
/// channels hang the backward pass forever (both threads spinning in
/// `jit_avx2_1x1_convolution_bwd_weights_t`) or crash it, while 8 or more, a
/// stride of 1 and NCHW input all run; oneDNN's report has the AVX-512
/// kernel crash below 16. [`Fwd::conv`] runs these as a strided slice and a
/// stride-1 convolution, the same arithmetic, which also measured no slower
/// than NCHW for those sizes.
pub fn onednn_mishandles_pointwise(in_channels_per_group: i64, stride: i64) -> bool {
    stride > 1 && in_channels_per_group < ONEDNN_IC_BLOCK_MAX
}

/// Every `s`-th row and column of `x` `[B, C, H, W]`, starting at 0.
fn subsample(x: &Tensor, s: i64) -> Tensor {
    x.slice(2, 0, None, s).slice(3, 0, None, s)
}

/// One forward pass's view of a parameter set.
///
/// `models` > 1 means `p` holds that many models stacked along each
/// tensor's first dimension (see [`Params::stack`]): convolutions then run
/// as one grouped convolution (the first one, on the shared input, as one
/// convolution with K·O filters), linear layers as one batched matmul, and
/// every other op is per channel anyway. The architectures' code is the same
/// for one model and for K; only these helpers know the difference.
pub struct Fwd<'a> {
    pub p: &'a Params,
    pub mode: BnMode,
    pub precision: Precision,
    pub models: i64,
    /// Sees every convolution's and linear layer's output (one model only).
    pub tap: Option<&'a super::tap::Tap>,
}

impl Fwd<'_> {
    fn cast(&self, t: &Tensor) -> Tensor {
        let k = self.precision.compute_kind();
        if t.kind() == k {
            t.shallow_clone()
        } else {
            t.to_kind(k)
        }
    }

    pub fn conv(&self, x: &Tensor, name: &str, stride: i64, padding: i64) -> Tensor {
        let w = self.cast(self.p.get(&format!("{name}.weight")));
        let b = self
            .p
            .try_get(&format!("{name}.bias"))
            .map(|b| self.cast(b));
        // Stacked models: the shared input (C = I) feeds all K·O filters at
        // once; stacked activations (C = K·I) go through K groups.
        let groups = if self.models > 1 && x.size()[1] != w.size()[1] {
            self.models
        } else {
            1
        };
        let ws = w.size();
        let (x, stride) = if padding == 0
            && ws[2] == 1
            && ws[3] == 1
            && onednn_mishandles_pointwise(ws[1], stride)
            && super::is_channels_last(x)
        {
            // The same convolution: a 1×1 kernel with stride s and no
            // padding only reads every s-th pixel.
            (subsample(x, stride), 1)
        } else {
            (x.shallow_clone(), stride)
        };
        let y = self.cast(&x).conv2d(
            &w,
            b.as_ref(),
            [stride, stride],
            [padding, padding],
            [1, 1],
            groups,
        );
        self.tapped(name, y)
    }

    fn tapped(&self, name: &str, y: Tensor) -> Tensor {
        match self.tap {
            Some(tap) if self.models == 1 => tap.observe(name, y),
            _ => y,
        }
    }

    pub fn linear(&self, x: &Tensor, name: &str) -> Tensor {
        self.linear_with(x, self.p.get(&format!("{name}.weight")), name)
    }

    /// `linear(dropout(flatten(x), p))` for feature maps `x` `[B, C, H, W]`,
    /// with PyTorch's flatten order (c, h, w) as the weight expects.
    ///
    /// Flattening a channels-last map in that order costs a copy, and its
    /// backward another one plus a slow mixed-layout pooling backward.
    /// Instead the map is flattened in memory order (h, w, c), a free view,
    /// and the weight's columns are permuted to match: the same products,
    /// summed in another order (about 8% of a bf16 training step of the
    /// seed ConvNet).
    pub fn flatten_linear(&self, x: &Tensor, name: &str, dropout: f64) -> Tensor {
        let s = x.size();
        let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
        if self.models > 1 || c == 1 || h * w == 1 || !super::is_channels_last(x) {
            return self.linear(&self.dropout(&x.flatten(1, -1), dropout), name);
        }
        let flat = self.dropout(&x.permute([0, 2, 3, 1]).reshape([b, h * w * c]), dropout);
        let wt = self.p.get(&format!("{name}.weight"));
        let o = wt.size()[0];
        let wt = wt
            .view([o, c, h, w])
            .permute([0, 2, 3, 1])
            .reshape([o, h * w * c]);
        self.linear_with(&flat, &wt, name)
    }

    /// A linear layer with weight `w` and `{name}.bias`.
    fn linear_with(&self, x: &Tensor, w: &Tensor, name: &str) -> Tensor {
        let w = self.cast(w);
        let b = self
            .p
            .try_get(&format!("{name}.bias"))
            .map(|b| self.cast(b));
        if self.models == 1 {
            return self.tapped(name, self.cast(x).linear(&w, b.as_ref()));
        }
        // x [B, K·F] with weights [K·O, F]: one batched matmul over the K models.
        let k = self.models;
        let (bsz, o, fin) = (x.size()[0], w.size()[0] / k, w.size()[1]);
        let xs = self.cast(x).reshape([bsz, k, fin]).transpose(0, 1); // K,B,F
        let y = xs.bmm(&w.reshape([k, o, fin]).transpose(1, 2)); // K,B,O
        let y = match b {
            Some(b) => y + b.reshape([k, 1, o]),
            None => y,
        };
        y.transpose(0, 1).reshape([bsz, k * o])
    }

    /// BatchNorm in float32 whatever the precision (its statistics must stay exact).
    pub fn bn(&self, x: &Tensor, name: &str) -> Tensor {
        let w = self.p.get(&format!("{name}.weight"));
        let b = self.p.get(&format!("{name}.bias"));
        let x = x.to_kind(Kind::Float);
        let stats = || {
            (
                self.p.get(&format!("{name}.running_mean")),
                self.p.get(&format!("{name}.running_var")),
            )
        };
        match self.mode {
            BnMode::Eval => {
                let (rm, rv) = stats();
                x.batch_norm(Some(w), Some(b), Some(rm), Some(rv), false, 0.0, 1e-5, true)
            }
            // Curve fitting: batch statistics only; φ(t) carries no running buffers.
            BnMode::Train(None) => {
                x.batch_norm::<&Tensor>(Some(w), Some(b), None, None, true, 0.0, 1e-5, true)
            }
            BnMode::Train(Some(m)) => {
                let (rm, rv) = stats();
                // The BatchNorm step counter (as PyTorch keeps it); `+=`
                // updates the tensor in place.
                let mut counter = self
                    .p
                    .get(&format!("{name}.num_batches_tracked"))
                    .shallow_clone();
                counter += 1;
                x.batch_norm(Some(w), Some(b), Some(rm), Some(rv), true, m, 1e-5, true)
            }
        }
    }

    /// Inverted dropout: in training, zero each element with probability
    /// `p` and scale the rest by 1/(1−p); identity otherwise. Same
    /// distribution as `torch.nn.functional.dropout`; see [`keep_mask`] for
    /// how the mask is drawn.
    pub fn dropout(&self, x: &Tensor, p: f64) -> Tensor {
        if p > 0.0 && self.mode.training() {
            x * (keep_mask(x, p) * (1.0 / (1.0 - p)))
        } else {
            x.shallow_clone()
        }
    }

    /// `adaptive_avg_pool2d(x, [oh, ow])`. When the input divides evenly it
    /// is the same average as `avg_pool2d` with kernel = stride = the ratio,
    /// which libtorch runs (forward and backward) about 5× faster on
    /// channels-last fp32 tensors.
    pub fn adaptive_avg_pool(&self, x: &Tensor, oh: i64, ow: i64) -> Tensor {
        let (h, w) = (x.size()[2], x.size()[3]);
        if h % oh == 0 && w % ow == 0 {
            let (kh, kw) = (h / oh, w / ow);
            x.avg_pool2d([kh, kw], [kh, kw], [0, 0], false, true, None::<i64>)
        } else {
            x.adaptive_avg_pool2d([oh, ow])
        }
    }

    /// `max_pool2d(relu(x))`, computed as `relu(max_pool2d(x))`.
    ///
    /// ReLU is monotone, so the two orders give bit-identical outputs and
    /// identical gradients, but pooling first runs the ReLU and its backward
    /// on a quarter of the elements (or less). On channels-last tensors this
    /// is the difference between a 1.0× and a 1.4× training step for the
    /// seed ConvNet (see benches/).
    ///
    /// When no gradient flows through `x` (evaluation), a 2×2, stride-2
    /// pool of a channels-last map runs as [`max_pool_2x2_nhwc`] instead.
    pub fn relu_max_pool(&self, x: &Tensor, kernel: i64, stride: i64) -> Tensor {
        let mut y = if kernel == 2
            && stride == 2
            && !x.requires_grad()
            && super::is_channels_last(x)
            && x.size()[2] % 2 == 0
            && x.size()[3] % 2 == 0
        {
            max_pool_2x2_nhwc(x)
        } else {
            x.max_pool2d([kernel, kernel], [stride, stride], [0, 0], [1, 1], false)
        };
        // In place: max_pool2d's backward needs only its indices.
        y = y.relu_();
        y
    }
}

/// `max_pool2d(x, 2, 2)` of a channels-last map `[B, C, H, W]` (H, W even)
/// as two element-wise maxima over contiguous halves of its memory:
/// first the two columns of each window (`[.., w, 2, C]`), then its two
/// rows. Same values bit for bit, NaN included, and 3× faster than
/// libtorch's channels-last pooling kernel (which also writes the indices
/// a backward would need): in bf16 that kernel took 40% of an evaluation
/// pass of the seed ConvNet. No cheap backward, so only for no-grad passes.
pub(crate) fn max_pool_2x2_nhwc(x: &Tensor) -> Tensor {
    let s = x.size();
    let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
    let half = |t: &Tensor, d: i64| {
        let n = t.size()[d as usize] / 2;
        t.narrow(d, 0, n).maximum(&t.narrow(d, n, n))
    };
    // NHWC memory seen as [B, H, W/2, 2C]: the halves are the window's columns.
    let cols = half(&x.permute([0, 2, 3, 1]).reshape([b, h, w / 2, 2 * c]), 3);
    // [B, H/2, 2·(W/2)·C]: the halves are the window's rows.
    let rows = half(&cols.reshape([b, h / 2, w * c]), 2);
    rows.reshape([b, h / 2, w / 2, c]).permute([0, 3, 1, 2])
}

/// A float mask of `x`'s shape and kind: 1 with probability 1 − p, else 0.
///
/// libtorch's `bernoulli_` is about 3× slower on the CPU than uniform
/// sampling, and uniform sampling draws one 32-bit number per element. When
/// 256·p is a whole number (p = 0.5, 0.25, …) the mask is exact from one
/// random byte per element, drawn as full-range 64-bit integers viewed as
/// bytes: eight elements per draw (measured in PyTorch 2.13 on 2 cores:
/// 0.07 ms against 0.5 ms for `rand` on a 128×1280 batch). Otherwise it is
/// `rand ≥ p`.
fn keep_mask(x: &Tensor, p: f64) -> Tensor {
    let n = x.numel() as i64;
    let q = p * 256.0;
    if q.fract() == 0.0 && n > 0 {
        let words = (n + 7) / 8;
        let bytes = Tensor::empty([words], (Kind::Int64, x.device()))
            .random_from_(i64::MIN, None)
            .view_dtype(Kind::Uint8)
            .narrow(0, 0, n);
        bytes.ge(q).to_kind(x.kind()).view(x.size().as_slice())
    } else {
        x.rand_like().ge(p).to_kind(x.kind())
    }
}

pub(crate) use super::spec::{out_size, Ch, SpecBuilder};
