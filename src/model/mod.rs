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
mod weights;
mod wrn;

use std::rc::Rc;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

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
