//! The reference implementation's ConvFC (timgaripov/dnn-mode-connectivity,
//! `models/convfc.py`): three 5×5 convolutions of 32, 64 and 128 channels,
//! each followed by ReLU and 3/2 max-pooling, then Linear 1000-1000-classes.
//! Convolutions use He-normal weights and zero biases, as there.

use tch::Tensor;

use super::layers::{out_size, Ch, Fwd, SpecBuilder};
use super::ArchConfig;

/// Spatial positions of the last feature map.
fn flat_inner(c: &ArchConfig) -> i64 {
    let side = |n: i64| (0..3).fold(n, |n, _| out_size(n, 3, 2, 0));
    side(c.height) * side(c.width)
}

pub(crate) fn spec(c: &ArchConfig, b: &mut SpecBuilder) {
    let c1 = b.perm("conv_part.0", c.ch(32));
    let c2 = b.perm("conv_part.3", c.ch(64));
    let c3 = b.perm("conv_part.6", c.ch(128));
    let h1 = b.perm("fc_part.0", c.ch(1000));
    let h2 = b.perm("fc_part.2", c.ch(1000));
    b.conv("conv_part.0", Ch::fixed(c.in_channels), c1, 5, true, true);
    b.conv("conv_part.3", c1, c2, 5, true, true);
    b.conv("conv_part.6", c2, c3, 5, true, true);
    b.linear("fc_part.0", c3.flat(flat_inner(c)), h1);
    b.linear("fc_part.2", h1, h2);
    b.linear("fc_part.4", h2, Ch::fixed(c.num_classes));
}

pub(crate) fn forward(_c: &ArchConfig, f: &Fwd, x: &Tensor) -> Tensor {
    let x = f.relu_max_pool(&f.conv(x, "conv_part.0", 1, 2), 3, 2);
    let x = f.relu_max_pool(&f.conv(&x, "conv_part.3", 1, 2), 3, 2);
    let x = f.relu_max_pool(&f.conv(&x, "conv_part.6", 1, 2), 3, 2);
    let x = f.flatten_linear(&x, "fc_part.0", 0.0).relu();
    let x = f.linear(&x, "fc_part.2").relu();
    f.linear(&x, "fc_part.4")
}
