//! A researcher's own network: a TorchScript archive written by
//! `python/modeconn_export.py`, run through libtorch's `CModule`.
//!
//! The archive is one more source of a forward, not a second training or
//! evaluation path: [`ScriptNet::forward`] takes any [`Params`] (an endpoint,
//! φ(t), a plane point, an ensemble member) like the built-in architectures'
//! forwards do. It copies them into the module's tensors, runs the module and
//! returns fp32 logits. The state-dict keys are the user's own.
//!
//! * **Gradients.** The module's tensors are autograd leaves of their own, so
//!   a backward pass leaves ∂L/∂φ in them; [`ScriptNet::chain_grads`] then
//!   pushes it on to whatever the parameters were computed from, by the chain
//!   rule: backward of Σ_p ⟨φ_p, g_p⟩ with g detached. For a curve point
//!   φ(t) = Σ_k b_k(t)·θ_k this gives each bend b_k(t)·∂L/∂φ(t); for an
//!   endpoint (φ = θ) it gives ∂L/∂θ. No layer is rewritten.
//! * **BatchNorm.** The exporter turns every persistent buffer into a frozen
//!   parameter (libtorch lists parameters, not buffers), and records each
//!   BatchNorm layer's momentum. A train-mode forward that should update the
//!   running statistics with momentum m (PyTorch's meaning) first zeroes them
//!   in the module (and the batch counter, for momentum None), so that after
//!   the pass the module holds m₀·batch statistic (m₀ the layer's own
//!   momentum, 1 for a cumulative one); modeconn divides by m₀ and applies m
//!   itself. The same call therefore serves training (m = 0.1 or the layer's
//!   own) and the cumulative re-estimate of [`crate::eval::Evaluator::update_bn`].
//! * **Other buffers** (anything that is not a BatchNorm statistic) and frozen
//!   parameters are kept fixed at the archive's values; checkpoints that
//!   differ there are refused ([`ScriptNet::check_fixed`]).
//!
//! A TorchScript archive can run code when loaded, like a pickle: modeconn
//! loads only an archive the user named (`--model-file`) or the one an
//! experiment they created records, and checks its MD5 first.

use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use tch::{CModule, Device, Kind, Tensor};

use super::{Init, ParamSpec, Params, Role};

mod archive;
pub use archive::{any_trusted, trust, BnLayer, Entry, EntryRole, ScriptMeta, ScriptRef};
use archive::{check_meta, kind_of, slots_of, trusted, META};

struct Loaded {
    module: CModule,
    /// The module's tensors, in `ScriptMeta::entries` order.
    slots: Vec<Tensor>,
    device: Device,
    training: Option<bool>,
    channels_last: bool,
}

/// A loaded archive: the module, its metadata and its initial values.
pub struct ScriptNet {
    pub source: ScriptRef,
    pub meta: ScriptMeta,
    /// The archive's own values (CPU), in entry order: the initialisation
    /// that fresh networks are drawn from, and the fixed buffers' values.
    initial: Vec<Tensor>,
    /// For each entry, the BatchNorm momentum divisor of its layer (m₀, or 1
    /// for a cumulative layer) when it is a running statistic.
    bn_divisor: Vec<Option<f64>>,
    state: Mutex<Loaded>,
}

impl std::fmt::Debug for ScriptNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScriptNet({})", self.source.path.display())
    }
}

/// libtorch's error text without its C++ backtrace.
pub fn first_line(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

impl ScriptNet {
    /// Loads and checks the archive `r` names (its MD5 first).
    pub fn load(r: &ScriptRef) -> Result<ScriptNet> {
        let path = &r.path;
        if !trusted(path) {
            bail!(
                "this network is the TorchScript archive {}, and loading an archive can run code, so modeconn opens one only when this command names it: add --model-file {}",
                path.display(),
                path.display()
            );
        }
        let md5 = crate::data::file_md5(path).with_context(|| {
            format!(
                "the TorchScript archive {} this experiment was made with cannot be read; put it back or start a new experiment",
                path.display()
            )
        })?;
        if md5 != r.md5 {
            bail!(
                "{} has changed since this experiment used it (MD5 {md5}, recorded {}); networks and curves are tied to the archive they were made with. Restore that archive, or start a new experiment with --model-file",
                path.display(),
                r.md5
            );
        }
        let module = CModule::load(path).map_err(|e| {
            anyhow!(
                "{}: not a TorchScript archive libtorch can load ({}). Write it with python/modeconn_export.py",
                path.display(),
                first_line(&e)
            )
        })?;
        let named = module.named_parameters().map_err(|e| {
            anyhow!(
                "{}: cannot list the archive's tensors: {}",
                path.display(),
                first_line(&e)
            )
        })?;
        let meta_t = named
            .iter()
            .find(|(n, _)| n == META)
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| {
                anyhow!(
                    "{}: a TorchScript archive, but not one written by python/modeconn_export.py (it has no {META}). Export the network with that script: it adds what modeconn needs and checks the result",
                    path.display()
                )
            })?;
        let bytes = Vec::<u8>::try_from(meta_t.flatten(0, -1))
            .map_err(|e| anyhow!("{}: unreadable {META}: {e}", path.display()))?;
        let meta: ScriptMeta = serde_json::from_slice(&bytes).map_err(|e| {
            anyhow!(
                "{}: its {META} is not valid ({e}); export the network again",
                path.display()
            )
        })?;
        check_meta(&meta, path)?;
        let slots = slots_of(&named, &meta, path)?;
        let initial = slots.iter().map(|t| t.detach().copy()).collect();
        let bn_divisor = meta
            .entries
            .iter()
            .map(|e| {
                if e.role != EntryRole::Bn {
                    return None;
                }
                meta.batchnorm
                    .iter()
                    .find(|l| {
                        let p = if l.prefix.is_empty() {
                            String::new()
                        } else {
                            format!("{}.", l.prefix)
                        };
                        e.name.strip_prefix(&p).is_some_and(|s| !s.contains('.'))
                    })
                    .map(|l| l.momentum.unwrap_or(1.0))
            })
            .collect();
        Ok(ScriptNet {
            source: r.clone(),
            meta,
            initial,
            bn_divisor,
            state: Mutex::new(Loaded {
                module,
                slots,
                device: Device::Cpu,
                training: None,
                channels_last: false,
            }),
        })
    }

    /// The parameter spec: every state-dict entry under the user's key.
    pub fn spec(&self) -> Vec<ParamSpec> {
        self.meta
            .entries
            .iter()
            .map(|e| ParamSpec {
                name: e.name.clone(),
                shape: e.shape.clone(),
                init: Init::Archive,
                role: if e.role == EntryRole::Weight {
                    Role::Weight
                } else {
                    Role::Buffer
                },
                kind: kind_of(&e.dtype),
            })
            .collect()
    }

    pub fn has_bn(&self) -> bool {
        self.meta.entries.iter().any(|e| e.role == EntryRole::Bn)
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.meta.entries.iter().position(|e| e.name == name)
    }

    /// The archive's value of entry `name` (CPU).
    pub fn initial(&self, name: &str) -> Option<&Tensor> {
        self.index(name).map(|i| &self.initial[i])
    }

    /// A fresh value of entry `name` drawn from the archive's own
    /// initialisation: its values in a random order (global RNG). For the
    /// i.i.d. initialisations PyTorch's layers use, this is a draw from the
    /// same distribution; constant tensors (BatchNorm's ones and zeros) stay
    /// what they are. Buffers keep the archive's values.
    pub fn fresh(&self, name: &str, device: Device) -> Tensor {
        let i = self.index(name).expect("spec names come from the metadata");
        let t = &self.initial[i];
        if self.meta.entries[i].role != EntryRole::Weight || t.numel() < 2 {
            return t.to_device(device).copy();
        }
        let flat = t.flatten(0, -1);
        let perm = Tensor::randperm(flat.size()[0], (Kind::Int64, Device::Cpu));
        flat.index_select(0, &perm)
            .view(t.size().as_slice())
            .to_device(device)
    }

    /// Refuses a parameter set whose fixed entries differ from the archive's.
    pub fn check_fixed(&self, params: &Params, origin: &str) -> Result<()> {
        for (i, e) in self.meta.entries.iter().enumerate() {
            if e.role != EntryRole::Fixed {
                continue;
            }
            if let Some(t) = params.try_get(&e.name) {
                let a = t.to_device(Device::Cpu).to_kind(Kind::Double);
                let b = self.initial[i].to_kind(Kind::Double);
                if !a.allclose(&b, 1e-6, 1e-7, true) {
                    bail!(
                        "{origin}: '{}' is not a BatchNorm statistic nor a trained parameter, so modeconn keeps it fixed at the archive's value, but this file holds another value. Export the archive from the module these weights belong to (python/modeconn_export.py --state-dict)",
                        e.name
                    );
                }
            }
        }
        Ok(())
    }

    /// Logits `[batch, classes]` (fp32) of `params` on `x`; see the module
    /// doc for BatchNorm. `train_bn`: None for evaluation, Some(None) for
    /// training with batch statistics that leave `params`' running
    /// statistics alone, Some(Some(m)) to update them with momentum m.
    pub fn forward(
        &self,
        params: &Params,
        x: &Tensor,
        train_bn: Option<Option<f64>>,
    ) -> Result<Tensor> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| anyhow!("the TorchScript module failed in another thread"))?;
        let training = train_bn.is_some();
        self.place(&mut st, x)?;
        if st.training != Some(training) {
            if training {
                st.module.f_set_train()?;
            } else {
                st.module.f_set_eval()?;
            }
            st.training = Some(training);
        }
        let update = train_bn.flatten();
        {
            let _g = tch::no_grad_guard();
            for (i, e) in self.meta.entries.iter().enumerate() {
                let mut slot = st.slots[i].shallow_clone();
                if update.is_some() && e.role == EntryRole::Bn {
                    let _ = slot.f_zero_()?;
                    continue;
                }
                match (params.try_get(&e.name), e.role) {
                    (Some(src), _) => slot.f_copy_(src)?,
                    // Weights alone (a curve point in training): fixed
                    // buffers are the archive's, and batch statistics
                    // need no running ones.
                    (None, EntryRole::Fixed) => slot.f_copy_(&self.initial[i])?,
                    (None, EntryRole::Bn) if training => {}
                    (None, _) => bail!(
                        "parameter '{}' missing: Model::check should have caught this",
                        e.name
                    ),
                }
            }
        }
        let method = if training { "forward_train" } else { "forward" };
        let logits = st.module.method_ts(method, &[x]).map_err(|e| {
            anyhow!(
                "{}: the network's {method} failed on a batch of shape {:?}: {}",
                self.source.path.display(),
                x.size(),
                first_line(&e)
            )
        })?;
        if let Some(m) = update {
            let _g = tch::no_grad_guard();
            for (i, e) in self.meta.entries.iter().enumerate() {
                let (Some(div), Some(dst)) = (self.bn_divisor[i], params.try_get(&e.name)) else {
                    continue;
                };
                let mut dst = dst.shallow_clone();
                if e.name.ends_with("num_batches_tracked") {
                    let _ = dst.f_add_scalar_(1)?;
                } else {
                    let batch = &st.slots[i] / div;
                    let new = &dst * (1.0 - m) + batch.to_device(dst.device()) * m;
                    dst.f_copy_(&new)?;
                }
            }
        }
        Ok(logits.to_kind(Kind::Float))
    }

    /// After a backward pass through [`ScriptNet::forward`]: passes the
    /// gradient the module's tensors received on to `params` (whatever they
    /// were computed from), then clears the module's gradients.
    pub fn chain_grads(&self, params: &Params) -> Result<()> {
        let st = self
            .state
            .lock()
            .map_err(|_| anyhow!("the TorchScript module failed in another thread"))?;
        let mut surrogate: Option<Tensor> = None;
        for (i, e) in self.meta.entries.iter().enumerate() {
            if e.role != EntryRole::Weight {
                continue;
            }
            let mut slot = st.slots[i].shallow_clone();
            let g = slot.grad();
            if !g.defined() {
                continue;
            }
            let g = g.detach().copy();
            slot.zero_grad();
            let Some(p) = params.try_get(&e.name) else {
                continue;
            };
            if !p.requires_grad() {
                continue;
            }
            let term = (p * g.to_device(p.device())).sum(Kind::Float);
            surrogate = Some(match surrogate {
                Some(s) => s + term,
                None => term,
            });
        }
        if let Some(s) = surrogate {
            s.f_backward()?;
        }
        Ok(())
    }

    /// Puts the module on `x`'s device and gives its 4-d weights the
    /// layout of `x` (channels-last input meets channels-last filters).
    fn place(&self, st: &mut Loaded, x: &Tensor) -> Result<()> {
        let dev = x.device();
        if st.device != dev {
            let module = CModule::load_on_device(&self.source.path, dev).map_err(|e| {
                anyhow!(
                    "{}: cannot load on {dev:?}: {}",
                    self.source.path.display(),
                    first_line(&e)
                )
            })?;
            let named = module.named_parameters().map_err(|e| {
                anyhow!(
                    "{}: cannot list the archive's tensors: {}",
                    self.source.path.display(),
                    first_line(&e)
                )
            })?;
            st.slots = slots_of(&named, &self.meta, &self.source.path)?;
            st.module = module;
            st.device = dev;
            st.training = None;
            st.channels_last = false;
        }
        let want = x.dim() == 4 && super::is_channels_last(x) && x.size()[1] > 1;
        if want != st.channels_last {
            let _g = tch::no_grad_guard();
            for s in st.slots.iter_mut() {
                if s.dim() == 4 {
                    let t = if want {
                        super::channels_last(s)
                    } else {
                        s.contiguous()
                    };
                    s.set_data(&t);
                }
            }
            st.channels_last = want;
        }
        Ok(())
    }
}
