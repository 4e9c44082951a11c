//! Parameter sets: named tensors in PyTorch state-dict order.
//!
//! A [`Params`] is what the one forward function consumes. It is produced by
//! many sources — a freshly initialised network, a checkpoint, a point φ(t)
//! of a curve, a point of the landscape plane, an ensemble member — and the
//! forward never knows which.

use std::collections::HashMap;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// Whether an entry is optimised (`Weight`) or running state (`Buffer`,
/// e.g. BatchNorm statistics), exactly as PyTorch separates
/// `parameters()` from `buffers()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Weight,
    Buffer,
}

/// Named tensors, in a fixed order. Names are PyTorch state-dict keys.
pub struct Params {
    entries: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
}

impl Params {
    pub fn new(entries: Vec<(String, Tensor)>) -> Self {
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        Params { entries, index }
    }

    /// The tensor called `name`. The architecture's spec guarantees that
    /// every name its forward asks for exists (checked by [`super::Model::check`]).
    pub fn get(&self, name: &str) -> &Tensor {
        match self.index.get(name) {
            Some(&i) => &self.entries[i].1,
            None => panic!("parameter {name} missing: Model::check should have caught this"),
        }
    }

    pub fn try_get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Shallow copy: the same storage under new handles.
    pub fn shallow_clone(&self) -> Params {
        Params::new(
            self.entries
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
        )
    }

    /// Deep copy, detached from any graph.
    pub fn deep_clone(&self) -> Params {
        self.map(|_, t| t.detach().copy())
    }

    pub fn map(&self, mut f: impl FnMut(&str, &Tensor) -> Tensor) -> Params {
        Params::new(
            self.entries
                .iter()
                .map(|(n, t)| (n.clone(), f(n, t)))
                .collect(),
        )
    }

    pub fn to_device(&self, device: Device) -> Params {
        self.map(|_, t| t.to_device(device))
    }

    /// Standard (NCHW-contiguous) CPU copies, as a PyTorch state dict holds them.
    pub fn to_state_dict(&self) -> Vec<(String, Tensor)> {
        self.entries
            .iter()
            .map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous()))
            .collect()
    }

    /// Squared L2 norm of the entries for which `keep` holds, as a 0-d tensor
    /// (differentiable).
    pub fn sq_norm(&self, keep: impl Fn(&str) -> bool) -> Tensor {
        let mut acc: Option<Tensor> = None;
        for (n, t) in &self.entries {
            if keep(n) {
                let s = t.square().sum(Kind::Float);
                acc = Some(match acc {
                    Some(a) => a + s,
                    None => s,
                });
            }
        }
        acc.unwrap_or_else(|| Tensor::zeros([], (Kind::Float, Device::Cpu)))
    }

    /// ‖self − other‖ over entries for which `keep` holds.
    pub fn distance(&self, other: &Params, keep: impl Fn(&str) -> bool) -> Result<f64> {
        let mut total = 0.0;
        for (n, t) in &self.entries {
            if !keep(n) {
                continue;
            }
            let Some(o) = other.try_get(n) else {
                bail!("parameter {n} missing in the other set")
            };
            total += (t - o).square().sum(Kind::Double).double_value(&[]);
        }
        Ok(total.sqrt())
    }

    /// K parameter sets of one architecture stacked along each tensor's
    /// first dimension (0-d counters become `[K]`), for the stacked forward.
    pub fn stack(sets: &[Params]) -> Params {
        sets[0].map(|n, t| {
            let parts: Vec<Tensor> = sets.iter().map(|s| s.get(n).shallow_clone()).collect();
            let cat = if t.dim() == 0 {
                Tensor::stack(&parts, 0)
            } else {
                Tensor::cat(&parts, 0)
            };
            if t.dim() == 4 && is_channels_last(t) {
                channels_last(&cat)
            } else {
                cat
            }
        })
    }

    /// Splits a stacked set back into K sets (views into the stacked storage).
    pub fn unstack(&self, k: i64) -> Vec<Params> {
        (0..k)
            .map(|i| {
                self.map(|_, t| {
                    if t.dim() == 1 && t.size()[0] == k && t.kind() == Kind::Int64 {
                        t.get(i)
                    } else {
                        t.chunk(k, 0)[i as usize].shallow_clone()
                    }
                })
            })
            .collect()
    }

    /// Replace the tensor under `name` (used when loading BN statistics).
    pub fn set(&mut self, name: &str, t: Tensor) {
        match self.index.get(name) {
            Some(&i) => self.entries[i].1 = t,
            None => {
                self.index.insert(name.to_string(), self.entries.len());
                self.entries.push((name.to_string(), t));
            }
        }
    }
}

/// Gives a 4-d tensor channels-last strides (NHWC in memory, NCHW logical
/// shape). oneDNN's convolutions run markedly faster on this layout on CPU.
pub fn channels_last(t: &Tensor) -> Tensor {
    if t.dim() == 4 {
        t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    } else {
        t.shallow_clone()
    }
}

/// True when a 4-d tensor has channels-last strides (dimensions of size 1
/// are ignored: their stride does not affect the memory layout).
pub fn is_channels_last(t: &Tensor) -> bool {
    if t.dim() != 4 {
        return false;
    }
    let s = t.stride();
    let z = t.size();
    let want = [z[1] * z[2] * z[3], 1, z[1] * z[3], z[1]];
    (0..4).all(|i| z[i] == 1 || s[i] == want[i])
}
