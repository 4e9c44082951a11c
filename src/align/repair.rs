//! REPAIR (Jordan, Sedghi, Saukh, Entezari, Neyshabur, ICLR 2023): a point
//! between two aligned networks loses activation variance; resetting each
//! hidden channel's pre-activation mean and std to the interpolation of the
//! endpoints' statistics restores most of the lost accuracy.
//!
//! For networks without BatchNorm the reset is an affine correction folded
//! into the layer's weight and bias, so a repaired point is a plain
//! parameter set of the same architecture. With BatchNorm it reduces to
//! re-estimating the BN statistics, which every evaluation of an
//! interpolated point here already does ([`crate::eval::Evaluator::update_bn`]).

use std::collections::HashMap;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use crate::curve::{line_point, weights_only};
use crate::loader::Data;
use crate::model::{rescale, ChannelStats, Model, Params, Tap};

/// Statistics of every repaired layer of one network.
pub type LayerStats = HashMap<String, ChannelStats>;

/// The layers REPAIR resets: each convolution and linear layer whose output
/// channels are hidden units (every one but the classifier), in forward order.
pub fn layers(model: &Model) -> Vec<String> {
    model
        .spec
        .iter()
        .filter(|s| s.shape.len() >= 2 && s.name.ends_with(".weight"))
        .filter(|s| {
            model
                .perms
                .axes
                .iter()
                .any(|a| a.param == s.name && a.axis == 0)
        })
        .map(|s| s.name.trim_end_matches(".weight").to_string())
        .collect()
}

/// The first `images` training images (no augmentation) in batches of
/// `batch`, as REPAIR's statistics sample.
pub fn sample(data: &Data, images: i64, batch: i64, channels_last: bool) -> Result<Vec<Tensor>> {
    let n = images.min(data.train.len());
    if n < 2 {
        bail!(
            "REPAIR needs at least 2 training images to measure statistics; raise --train-subset"
        );
    }
    (0..n)
        .step_by(batch.max(2) as usize)
        .map(|s| {
            Ok(data
                .batch_range(&data.train, s, batch.min(n - s), channels_last)?
                .0)
        })
        .collect()
}

/// Mean and std per channel of every repaired layer's output, over `batches`.
pub fn stats(model: &Model, params: &Params, batches: &[Tensor]) -> Result<LayerStats> {
    let _g = tch::no_grad_guard();
    let tap = Tap::record(layers(model));
    for x in batches {
        let _ = model.forward_tapped(params, x, &tap)?;
    }
    Ok(tap.stats())
}

/// The point `(1 − α)·a + α·b` with every repaired layer's channels reset to
/// the interpolation of `sa` and `sb` (the endpoints' statistics), folded
/// into its weights and biases. One pass over `batches`: each layer's output
/// is renormalised batch by batch on the way (as REPAIR's BatchNorm trick
/// does), and its statistics before the correction give the fold.
pub fn repair(
    model: &Model,
    a: &Params,
    b: &Params,
    (sa, sb): (&LayerStats, &LayerStats),
    alpha: f64,
    batches: &[Tensor],
) -> Result<Params> {
    if model.has_bn {
        bail!(
            "REPAIR of a BatchNorm network is the re-estimation of its statistics; use update_bn"
        );
    }
    let _g = tch::no_grad_guard();
    let point = line_point(
        model,
        &weights_only(model, a),
        &weights_only(model, b),
        alpha,
    );
    let mut targets = HashMap::new();
    for l in layers(model) {
        let (Some(x), Some(y)) = (sa.get(&l), sb.get(&l)) else {
            bail!("REPAIR statistics lack layer {l}");
        };
        targets.insert(l, x.lerp(y, alpha));
    }
    let tap = Tap::correct(targets);
    for x in batches {
        let _ = model.forward_tapped(&point, x, &tap)?;
    }
    let now = tap.stats();
    let mut out = point.deep_clone();
    for l in layers(model) {
        let (Some(cur), Some(target)) = (now.get(&l), tap_target(sa, sb, &l, alpha)) else {
            bail!("no statistics were gathered for layer {l}");
        };
        fold(&mut out, &l, cur, &target)?;
    }
    Ok(out)
}

fn tap_target(sa: &LayerStats, sb: &LayerStats, layer: &str, alpha: f64) -> Option<ChannelStats> {
    Some(sa.get(layer)?.lerp(sb.get(layer)?, alpha))
}

/// Rescales layer `l`'s output channels from `cur` to `target`:
/// `W ← W·s`, `b ← (b − μ)·s + μ_t` with `s = σ_t / σ` (see [`rescale`]).
fn fold(p: &mut Params, l: &str, cur: &ChannelStats, target: &ChannelStats) -> Result<()> {
    let (wn, bn) = (format!("{l}.weight"), format!("{l}.bias"));
    let Some(bias) = p.try_get(&bn).map(|t| t.shallow_clone()) else {
        bail!("REPAIR needs a bias on layer {l} to shift its outputs");
    };
    let w = p.get(&wn).shallow_clone();
    let device = w.device();
    let s = rescale(&cur.std.square(), &target.std).to_device(device);
    let mut shape = vec![-1i64];
    shape.resize(w.dim(), 1);
    let new_w = (&w * s.view(shape.as_slice())).to_kind(Kind::Float);
    let shift =
        (target.mean.to_device(device) - cur.mean.to_device(device) * &s).to_kind(Kind::Float);
    let new_b = &bias * s.to_kind(Kind::Float) + shift;
    p.set(&wn, new_w);
    p.set(&bn, new_b);
    Ok(())
}
