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
pub mod script;
mod seed_convnet;
mod spec;
mod tap;
mod vgg;
mod wrn;

use std::rc::Rc;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

pub use arch::{check_dropout, ArchConfig, ArchKind};
pub use layers::{onednn_mishandles_pointwise, BnMode, Fwd, Precision, ONEDNN_IC_BLOCK_MAX};
pub use params::{channels_last, is_channels_last, Params, Role};
pub use script::{ScriptNet, ScriptRef};
pub use seed_convnet::pytorch_order as seed_convnet_pytorch_order;
pub use spec::{PermAxis, PermEntry, PermGroup, PermSpec, PermSpecFile};
pub use tap::{rescale, ChannelStats, Tap};

/// How a parameter is initialised (PyTorch's defaults or the reference
/// implementation's explicit schemes).
#[derive(Clone, Copy, Debug)]
pub enum Init {
    Uniform(f64),
    Normal(f64),
    Zeros,
    Ones,
    /// The value a TorchScript archive holds (see [`ScriptNet::fresh`]).
    Archive,
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
    /// The user's TorchScript network (`--arch torchscript`), which runs
    /// instead of a built-in forward.
    pub script: Option<Rc<ScriptNet>>,
}

impl Model {
    pub fn new(cfg: ArchConfig) -> Result<Model> {
        arch::validate(&cfg)?;
        if cfg.arch == ArchKind::Torchscript {
            return Model::from_script(cfg);
        }
        let mut b = layers::SpecBuilder::default();
        match cfg.arch {
            ArchKind::Torchscript => unreachable!("handled above"),
            ArchKind::SeedConvnet => seed_convnet::spec(&cfg, &mut b),
            ArchKind::Convfc => convfc::spec(&cfg, &mut b),
            ArchKind::Vgg16 | ArchKind::Vgg16Bn => vgg::spec(&cfg, &mut b),
            ArchKind::Preresnet => preresnet::spec(&cfg, &mut b),
            ArchKind::Wrn => wrn::spec(&cfg, &mut b),
            ArchKind::Mlp => mlp::spec(&cfg, &mut b),
        }
        let has_bn = b.specs.iter().any(|s| s.name.ends_with("running_mean"));
        let model = Model {
            cfg,
            spec: b.specs,
            perms: b.perms,
            has_bn,
            script: None,
        };
        model.ensure_fits((
            1,
            "one copy of its parameters",
            "Use a smaller --widen or --depth.",
        ))?;
        Ok(model)
    }

    /// Parameters and buffers of one network (the spec's elements).
    pub fn numel(&self) -> f64 {
        self.spec
            .iter()
            .map(|s| s.shape.iter().map(|&d| d.max(0) as f64).product::<f64>())
            .sum()
    }

    /// Refuses work that holds `copies` float32 copies of the network when
    /// they cannot fit in memory (`why` says what the copies are, `fix`
    /// which flags to change).
    pub fn ensure_fits(&self, (copies, why, fix): (usize, &str, &str)) -> Result<()> {
        let n = self.numel();
        let c = &self.cfg;
        crate::memory::ensure_fits(
            &format!(
                "{} (--depth {}, --widen {}: {:.3e} parameters; {why})",
                c.arch.name(),
                c.depth,
                c.widen,
                n
            ),
            n * 4.0 * copies as f64,
            fix,
        )
    }

    /// A TorchScript network: the archive `cfg.script` names, checked
    /// against the data's shape and class count.
    fn from_script(cfg: ArchConfig) -> Result<Model> {
        let Some(r) = &cfg.script else {
            bail!("--arch torchscript needs --model-file F.pt (an archive written by python/modeconn_export.py)");
        };
        let net = ScriptNet::load(r)?;
        let want = &net.meta.input_shape;
        if [cfg.in_channels, cfg.height, cfg.width] != [want[0], want[1], want[2]] {
            bail!(
                "{} takes {}x{}x{} images (channels x height x width), but the dataset's are {}x{}x{}; export the network with --input-shape {},{},{} or use data of its shape",
                r.path.display(),
                want[0], want[1], want[2],
                cfg.in_channels, cfg.height, cfg.width,
                cfg.in_channels, cfg.height, cfg.width
            );
        }
        if net.meta.classes != cfg.num_classes {
            bail!(
                "{} gives {} logits, but the dataset has {} classes; export the network with --classes {} (and the factory's class count to match)",
                r.path.display(),
                net.meta.classes,
                cfg.num_classes,
                cfg.num_classes
            );
        }
        Ok(Model {
            spec: net.spec(),
            perms: PermSpec::default(),
            has_bn: net.has_bn(),
            script: Some(Rc::new(net)),
            cfg,
        })
    }

    /// Is this a TorchScript network (no stacking, fp32, no taps)?
    pub fn is_script(&self) -> bool {
        self.script.is_some()
    }

    /// Does a parameter set of this model carry buffers (BatchNorm
    /// statistics, or a TorchScript network's fixed buffers)?
    pub fn has_buffers(&self) -> bool {
        self.spec.iter().any(|s| s.role == Role::Buffer)
    }

    /// The same network trained at dropout `p` instead of its own (a curve's
    /// or an FGE run's training dropout); None when `p` is None or the same.
    /// The parameters are unchanged: dropout has none.
    pub fn with_training_dropout(&self, p: Option<f64>) -> Result<Option<Model>> {
        if let (Some(p), Some(s)) = (p, &self.script) {
            bail!(
                "a training dropout of {p} was asked for, but the dropout of the TorchScript network {} is part of its code; export it with the dropout you want instead",
                s.source.path.display()
            );
        }
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
    ) -> Result<Tensor> {
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
    ) -> Result<Tensor> {
        let b = x.size()[0];
        if let Some(s) = &self.script {
            if k == 1 {
                return Ok(s.forward(stacked, x, script_bn(mode))?.reshape([
                    b,
                    1,
                    self.cfg.num_classes,
                ]));
            }
            let parts = stacked
                .unstack(k)
                .iter()
                .map(|p| s.forward(p, x, script_bn(mode)))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Tensor::stack(&parts, 1));
        }
        Ok(self
            .forward_k(stacked, k, x, mode, precision)?
            .reshape([b, k, self.cfg.num_classes]))
    }

    /// The fp32 evaluation forward of one model, with `tap` seeing every
    /// convolution's and linear layer's output.
    pub fn forward_tapped(&self, params: &Params, x: &Tensor, tap: &Tap) -> Result<Tensor> {
        if let Some(s) = &self.script {
            bail!(
                "REPAIR needs each layer's outputs, which a TorchScript network ({}) does not expose; use align --repair-images 0",
                s.source.path.display()
            );
        }
        let f = Fwd {
            p: params,
            mode: BnMode::Eval,
            precision: Precision::Fp32,
            models: 1,
            tap: Some(tap),
        };
        Ok(self.run(&f, x))
    }

    fn forward_k(
        &self,
        params: &Params,
        models: i64,
        x: &Tensor,
        mode: BnMode,
        precision: Precision,
    ) -> Result<Tensor> {
        if let Some(s) = &self.script {
            return s.forward(params, x, script_bn(mode));
        }
        let f = Fwd {
            p: params,
            mode,
            precision,
            models,
            tap: None,
        };
        Ok(self.run(&f, x))
    }

    /// After `loss.backward()` on logits of this model's forward of
    /// `params`: nothing for the built-in architectures (autograd already
    /// reached `params`); for a TorchScript network, the chain rule from
    /// the module's tensors on to `params` ([`ScriptNet::chain_grads`]).
    pub fn chain_grads(&self, params: &Params) -> Result<()> {
        match &self.script {
            Some(s) => s.chain_grads(params),
            None => Ok(()),
        }
    }

    fn run(&self, f: &Fwd, x: &Tensor) -> Tensor {
        let logits = match self.cfg.arch {
            ArchKind::SeedConvnet => seed_convnet::forward(&self.cfg, f, x),
            ArchKind::Convfc => convfc::forward(&self.cfg, f, x),
            ArchKind::Vgg16 | ArchKind::Vgg16Bn => vgg::forward(&self.cfg, f, x),
            ArchKind::Preresnet => preresnet::forward(&self.cfg, f, x),
            ArchKind::Wrn => wrn::forward(&self.cfg, f, x),
            ArchKind::Mlp => mlp::forward(&self.cfg, f, x),
            ArchKind::Torchscript => unreachable!("a TorchScript network runs through ScriptNet"),
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
                    Init::Archive if s.role == Role::Buffer => self.fresh_buffer(&s.name, device),
                    Init::Archive => self.script_net().fresh(&s.name, device),
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
                        Init::Archive => self.fresh_buffer(&s.name, device),
                        _ => Tensor::zeros(s.shape.as_slice(), opts),
                    };
                    (s.name.clone(), t)
                })
                .collect(),
        )
    }

    fn script_net(&self) -> &ScriptNet {
        self.script
            .as_deref()
            .expect("Init::Archive belongs to TorchScript networks")
    }

    /// A TorchScript network's buffer at its initial value: BatchNorm
    /// statistics as PyTorch initialises them (mean 0, variance 1, counter
    /// 0), any other buffer at the archive's value.
    fn fresh_buffer(&self, name: &str, device: Device) -> Tensor {
        let t = self
            .script_net()
            .initial(name)
            .expect("spec names come from the archive");
        let fresh = if name.ends_with("running_var") {
            t.ones_like()
        } else if name.ends_with("running_mean") || name.ends_with("num_batches_tracked") {
            t.zeros_like()
        } else {
            t.copy()
        };
        fresh.to_device(device)
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
        let arch = match &self.script {
            Some(s) => format!("the TorchScript network {}", s.source.path.display()),
            None => format!("--arch {}", self.cfg.arch.name()),
        };
        for s in &self.spec {
            match params.try_get(&s.name) {
                None => bail!(
                    "{origin}: missing key '{}' required by {arch} (expected shape {:?}); is this checkpoint for another architecture?",
                    s.name,
                    s.shape
                ),
                Some(t) if t.size() != s.shape => bail!(
                    "{origin}: key '{}' has shape {:?}, but {arch} with {} input channels and {} classes expects {:?}",
                    s.name,
                    t.size(),
                    self.cfg.in_channels,
                    self.cfg.num_classes,
                    s.shape
                ),
                _ => {}
            }
        }
        for n in params.names() {
            if !self.spec.iter().any(|s| s.name == n) {
                bail!("{origin}: unexpected key '{n}', which {arch} does not have");
            }
        }
        if let Some(s) = &self.script {
            s.check_fixed(params, origin)?;
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

/// The TorchScript forward's BatchNorm request for a [`BnMode`].
fn script_bn(mode: BnMode) -> Option<Option<f64>> {
    match mode {
        BnMode::Eval => None,
        BnMode::Train(m) => Some(m),
    }
}

#[cfg(test)]
mod tests;
