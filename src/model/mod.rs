//! Architectures: a parameter spec plus ONE functional forward each.
//!
//! `Model::forward(params, x, mode)` computes logits from any [`Params`] that
//! match the spec. Endpoints, curve points φ(t), landscape-plane points,
//! ensemble members and imported PyTorch checkpoints are all just different
//! `Params` handed to the same function; no layer is written twice.
//!
//! Inputs are NCHW float tensors (channels-last strides welcome); outputs are
//! fp32 logits `[batch, classes]`. Parameter names and layouts are PyTorch's,
//! so a state dict moves between modeconn and `nn.Module.load_state_dict`
//! unchanged (see `python/modeconn_models.py` for the matching modules).

mod arch;
mod convfc;
mod layers;
mod mlp;
pub mod params;
mod preresnet;
mod seed_convnet;
mod spec;
mod tap;
mod vgg;
mod wrn;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

pub use arch::{check_dropout, ArchConfig, ArchKind};
pub use layers::{onednn_mishandles_pointwise, BnMode, Fwd, Precision, ONEDNN_IC_BLOCK_MAX};
pub use params::{channels_last, is_channels_last, Params, Role};
pub use seed_convnet::pytorch_order as seed_convnet_pytorch_order;
pub use spec::{PermAxis, PermGroup, PermSpec};
pub use tap::{rescale, ChannelStats, Tap};

/// How a parameter is initialised (PyTorch's defaults or the reference
/// implementation's explicit schemes).
#[derive(Clone, Copy, Debug)]
pub enum Init {
    Uniform(f64),
    Normal(f64),
    Zeros,
    Ones,
}

#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<i64>,
    pub init: Init,
    pub role: Role,
    pub kind: Kind,
}

/// An architecture instance: config, spec, and the forward.
#[derive(Clone, Debug)]
pub struct Model {
    pub cfg: ArchConfig,
    pub spec: Vec<ParamSpec>,
    /// The permutation symmetries of the network (for alignment).
    pub perms: PermSpec,
    pub has_bn: bool,
}

impl Model {
    pub fn new(cfg: ArchConfig) -> Result<Model> {
        arch::validate(&cfg)?;
        let mut b = layers::SpecBuilder::default();
        match cfg.arch {
            ArchKind::SeedConvnet => seed_convnet::spec(&cfg, &mut b),
            ArchKind::Convfc => convfc::spec(&cfg, &mut b),
            ArchKind::Vgg16 | ArchKind::Vgg16Bn => vgg::spec(&cfg, &mut b),
            ArchKind::Preresnet => preresnet::spec(&cfg, &mut b),
            ArchKind::Wrn => wrn::spec(&cfg, &mut b),
            ArchKind::Mlp => mlp::spec(&cfg, &mut b),
        }
        let has_bn = b.specs.iter().any(|s| s.name.ends_with("running_mean"));
        Ok(Model {
            cfg,
            spec: b.specs,
            perms: b.perms,
            has_bn,
        })
    }

    /// The same network trained at dropout `p` instead of its own (a curve's
    /// or an FGE run's training dropout); None when `p` is None or the same.
    /// The parameters are unchanged: dropout has none.
    pub fn with_training_dropout(&self, p: Option<f64>) -> Result<Option<Model>> {
        match p.filter(|&p| p != self.cfg.dropout) {
            Some(p) => Ok(Some(Model::new(ArchConfig {
                dropout: p,
                ..self.cfg.clone()
            })?)),
            None => Ok(None),
        }
    }

    /// Logits `[batch, classes]` in fp32 for inputs `[batch, C, H, W]`.
    pub fn forward(
        &self,
        params: &Params,
        x: &Tensor,
        mode: BnMode,
        precision: Precision,
    ) -> Tensor {
        self.forward_k(params, 1, x, mode, precision)
    }

    /// The same forward for `k` models stacked with [`Params::stack`]:
    /// logits `[batch, k, classes]`, model i's at `[:, i, :]`.
    pub fn forward_stacked(
        &self,
        stacked: &Params,
        k: i64,
        x: &Tensor,
        mode: BnMode,
        precision: Precision,
    ) -> Tensor {
        let b = x.size()[0];
        self.forward_k(stacked, k, x, mode, precision)
            .reshape([b, k, self.cfg.num_classes])
    }

    /// The fp32 evaluation forward of one model, with `tap` seeing every
    /// convolution's and linear layer's output.
    pub fn forward_tapped(&self, params: &Params, x: &Tensor, tap: &Tap) -> Tensor {
        let f = Fwd {
            p: params,
            mode: BnMode::Eval,
            precision: Precision::Fp32,
            models: 1,
            tap: Some(tap),
        };
        self.run(&f, x)
    }

    fn forward_k(
        &self,
        params: &Params,
        models: i64,
        x: &Tensor,
        mode: BnMode,
        precision: Precision,
    ) -> Tensor {
        let f = Fwd {
            p: params,
            mode,
            precision,
            models,
            tap: None,
        };
        self.run(&f, x)
    }

    fn run(&self, f: &Fwd, x: &Tensor) -> Tensor {
        let logits = match self.cfg.arch {
            ArchKind::SeedConvnet => seed_convnet::forward(&self.cfg, f, x),
            ArchKind::Convfc => convfc::forward(&self.cfg, f, x),
            ArchKind::Vgg16 | ArchKind::Vgg16Bn => vgg::forward(&self.cfg, f, x),
            ArchKind::Preresnet => preresnet::forward(&self.cfg, f, x),
            ArchKind::Wrn => wrn::forward(&self.cfg, f, x),
            ArchKind::Mlp => mlp::forward(&self.cfg, f, x),
        };
        logits.to_kind(Kind::Float)
    }

    /// The strided 1×1 convolutions of this architecture as
    /// (name, input channels, output channels, stride).
    pub fn strided_pointwise_convs(&self) -> Vec<(String, i64, i64, i64)> {
        match self.cfg.arch {
            ArchKind::Preresnet => preresnet::strided_pointwise(&self.cfg),
            ArchKind::Wrn => wrn::strided_pointwise(&self.cfg),
            _ => Vec::new(),
        }
    }

    /// The convolutions that channels-last input would send to oneDNN's
    /// faulty kernel, which [`Fwd::conv`] therefore rewrites (see
    /// [`layers::onednn_mishandles_pointwise`]), as "name (in → out, stride s)".
    pub fn onednn_guarded_convs(&self) -> Vec<String> {
        self.strided_pointwise_convs()
            .into_iter()
            .filter(|(_, cin, _, s)| layers::onednn_mishandles_pointwise(*cin, *s))
            .map(|(n, cin, cout, s)| format!("{n} ({cin} → {cout}, stride {s})"))
            .collect()
    }

    /// Fresh parameters from the current global RNG state (seed it first
    /// with `tch::manual_seed`).
    pub fn init(&self, device: Device) -> Params {
        let entries = self
            .spec
            .iter()
            .map(|s| {
                let opts = (s.kind, device);
                let t = match s.init {
                    Init::Zeros => Tensor::zeros(s.shape.as_slice(), opts),
                    Init::Ones => Tensor::ones(s.shape.as_slice(), opts),
                    Init::Uniform(b) => Tensor::empty(s.shape.as_slice(), opts).uniform_(-b, b),
                    Init::Normal(std) => Tensor::empty(s.shape.as_slice(), opts).normal_(0.0, std),
                };
                (s.name.clone(), t)
            })
            .collect();
        Params::new(entries)
    }

    /// The buffers alone (BatchNorm statistics at their initial values).
    pub fn init_buffers(&self, device: Device) -> Params {
        Params::new(
            self.spec
                .iter()
                .filter(|s| s.role == Role::Buffer)
                .map(|s| {
                    let opts = (s.kind, device);
                    let t = match s.init {
                        Init::Ones => Tensor::ones(s.shape.as_slice(), opts),
                        _ => Tensor::zeros(s.shape.as_slice(), opts),
                    };
                    (s.name.clone(), t)
                })
                .collect(),
        )
    }

    /// Is `name` a trainable weight (as opposed to a buffer)?
    pub fn is_weight(&self, name: &str) -> bool {
        self.spec
            .iter()
            .any(|s| s.name == name && s.role == Role::Weight)
    }

    pub fn weight_names(&self) -> impl Iterator<Item = &str> {
        self.spec
            .iter()
            .filter(|s| s.role == Role::Weight)
            .map(|s| s.name.as_str())
    }

    pub fn num_weights(&self) -> i64 {
        self.spec
            .iter()
            .filter(|s| s.role == Role::Weight)
            .map(|s| s.shape.iter().product::<i64>())
            .sum()
    }

    /// Checks that `params` has every key of the spec with the right shape,
    /// and no extra key. `origin` names the file in the error.
    /// Refuses parameters holding NaN or infinite values, naming the first
    /// such tensor (a diverged or hostile checkpoint would otherwise give
    /// NaN metrics without a word).
    pub fn check_finite(&self, params: &Params, origin: &str) -> Result<()> {
        for (name, t) in params.iter() {
            if t.is_floating_point() && !bool::try_from(t.isfinite().all())? {
                bail!("{origin}: '{name}' holds values that are not finite (NaN or infinity); this checkpoint cannot be used");
            }
        }
        Ok(())
    }

    /// Checks that `params` holds every weight (no buffers needed) with the
    /// right shape, naming the first that is missing or misshapen.
    pub fn check_weights(&self, params: &Params, origin: &str) -> Result<()> {
        for s in self.spec.iter().filter(|s| s.role == Role::Weight) {
            match params.try_get(&s.name) {
                None => bail!(
                    "{origin}: missing parameter '{}' of {}; the file is incomplete, delete it to start over",
                    s.name,
                    self.cfg.arch.name()
                ),
                Some(t) if t.size() != s.shape => bail!(
                    "{origin}: parameter '{}' has shape {:?}, expected {:?}; delete the file to start over",
                    s.name,
                    t.size(),
                    s.shape
                ),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn check(&self, params: &Params, origin: &str) -> Result<()> {
        for s in &self.spec {
            match params.try_get(&s.name) {
                None => bail!(
                    "{origin}: missing key '{}' required by --arch {} (expected shape {:?}); is this checkpoint for another architecture?",
                    s.name,
                    self.cfg.arch.name(),
                    s.shape
                ),
                Some(t) if t.size() != s.shape => bail!(
                    "{origin}: key '{}' has shape {:?}, but --arch {} with {} input channels and {} classes expects {:?}",
                    s.name,
                    t.size(),
                    self.cfg.arch.name(),
                    self.cfg.in_channels,
                    self.cfg.num_classes,
                    s.shape
                ),
                _ => {}
            }
        }
        for n in params.names() {
            if !self.spec.iter().any(|s| s.name == n) {
                bail!(
                    "{origin}: unexpected key '{n}', which --arch {} does not have",
                    self.cfg.arch.name()
                );
            }
        }
        Ok(())
    }

    /// Converts loaded tensors to the spec's dtypes, the device and the
    /// memory format used for compute.
    pub fn prepare(&self, params: &Params, device: Device, channels_last_weights: bool) -> Params {
        params.map(|n, t| {
            let kind = self
                .spec
                .iter()
                .find(|s| s.name == n)
                .map(|s| s.kind)
                .unwrap_or(Kind::Float);
            let t = t.to_device(device).to_kind(kind);
            if channels_last_weights && t.dim() == 4 {
                channels_last(&t)
            } else {
                t.contiguous()
            }
        })
    }
}

#[cfg(test)]
mod tests;
