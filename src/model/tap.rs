//! Per-channel statistics of chosen layers' outputs, gathered during
//! forward passes, and optionally a correction of them (REPAIR's affine
//! reset of each channel to target statistics).
//!
//! A [`Tap`] is handed to [`super::Model::forward_tapped`]; [`super::layers::Fwd`]
//! passes the output of every convolution and linear layer through
//! [`Tap::observe`] before anything else sees it (pre-activations).

use std::cell::RefCell;
use std::collections::HashMap;

use tch::{Kind, Tensor};

/// Mean and standard deviation per output channel of one layer (fp64, CPU).
#[derive(Debug)]
pub struct ChannelStats {
    pub mean: Tensor,
    pub std: Tensor,
}

impl ChannelStats {
    /// `(1 − α)·self + α·other`, for the mean and the std alike.
    pub fn lerp(&self, other: &ChannelStats, alpha: f64) -> ChannelStats {
        ChannelStats {
            mean: &self.mean * (1.0 - alpha) + &other.mean * alpha,
            std: &self.std * (1.0 - alpha) + &other.std * alpha,
        }
    }
}

#[derive(Default)]
struct Sums {
    sum: Option<Tensor>,
    sq: Option<Tensor>,
    n: f64,
}

/// The factor that takes channels of variance `var` to std `target`: a
/// channel that is constant on the sample (variance below 1e-12) stays
/// constant (factor 0), at the target mean.
pub fn rescale(var: &Tensor, target: &Tensor) -> Tensor {
    let live = var.gt(1e-12);
    let s = target / var.clamp_min(1e-12).sqrt();
    s.where_self(&live, &s.zeros_like())
}

/// Records channel sums of the layers it names; with targets, also resets
/// each such output to the targets using its batch statistics.
pub struct Tap {
    layers: Vec<String>,
    targets: HashMap<String, ChannelStats>,
    sums: RefCell<HashMap<String, Sums>>,
}

impl Tap {
    /// Records the outputs of `layers` (conv or linear names, e.g. `features.0`).
    pub fn record(layers: Vec<String>) -> Tap {
        Tap {
            layers,
            targets: HashMap::new(),
            sums: RefCell::new(HashMap::new()),
        }
    }

    /// Records the outputs of the targets' layers as they arrive, then
    /// renormalises each batch of them to the target mean and std per channel.
    pub fn correct(targets: HashMap<String, ChannelStats>) -> Tap {
        Tap {
            layers: targets.keys().cloned().collect(),
            targets,
            sums: RefCell::new(HashMap::new()),
        }
    }

    /// Called by the forward with a layer's output; returns what the next
    /// op sees.
    pub fn observe(&self, name: &str, y: Tensor) -> Tensor {
        if !self.layers.iter().any(|l| l == name) {
            return y;
        }
        let dims: &[i64] = if y.dim() == 4 { &[0, 2, 3] } else { &[0] };
        let y64 = y.to_kind(Kind::Double);
        let sum = y64.sum_dim_intlist(dims, false, Kind::Double);
        let sq = y64.square().sum_dim_intlist(dims, false, Kind::Double);
        let n = (y.numel() as i64 / y.size()[1]) as f64;
        {
            let mut sums = self.sums.borrow_mut();
            let s = sums.entry(name.to_string()).or_default();
            s.sum = Some(s.sum.take().map_or(sum.shallow_clone(), |a| a + &sum));
            s.sq = Some(s.sq.take().map_or(sq.shallow_clone(), |a| a + &sq));
            s.n += n;
        }
        let Some(t) = self.targets.get(name) else {
            return y;
        };
        let shape: Vec<i64> = if y.dim() == 4 {
            vec![1, -1, 1, 1]
        } else {
            vec![1, -1]
        };
        let kind = y.kind();
        let mean = (&sum / n).view(shape.as_slice());
        let var = ((&sq / n).view(shape.as_slice()) - mean.square()).clamp_min(0.0);
        let tm = t.mean.to_device(y.device()).view(shape.as_slice());
        let ts = t.std.to_device(y.device()).view(shape.as_slice());
        ((y64 - mean) * rescale(&var, &ts) + tm).to_kind(kind)
    }

    /// Mean and std of every recorded layer over everything seen so far.
    pub fn stats(&self) -> HashMap<String, ChannelStats> {
        self.sums
            .borrow()
            .iter()
            .filter_map(|(name, s)| {
                let (sum, sq) = (s.sum.as_ref()?, s.sq.as_ref()?);
                let mean = (sum / s.n).to_device(tch::Device::Cpu);
                let var = ((sq / s.n).to_device(tch::Device::Cpu) - mean.square()).clamp_min(0.0);
                Some((
                    name.clone(),
                    ChannelStats {
                        mean,
                        std: var.sqrt(),
                    },
                ))
            })
            .collect()
    }
}
