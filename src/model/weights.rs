//! A model's parameters as sets: fresh ones drawn from the spec, checked
//! ones (every key, shape and value against the spec) and ones prepared for
//! a device and layout.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::{channels_last, Init, Model, Params, Role, ScriptNet};

impl Model {
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

    pub(super) fn script_net(&self) -> &ScriptNet {
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
