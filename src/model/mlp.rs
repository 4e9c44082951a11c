//! A multilayer perceptron: the input flattened, `depth` hidden layers of 512
//! units (scaled by `widen` percent) with ReLU, then a linear classifier.
//! Three hidden layers of 512 are git-re-basin's canonical MNIST model.
//!
//! ```text
//! Flatten -> layers.0 Linear(C·H·W, 512) -> ReLU -> layers.2 Linear(512, 512)
//!         -> ReLU -> ... -> layers.<2·depth> Linear(512, classes)
//! ```
//! PyTorch's default initialisation.

use tch::Tensor;

use super::layers::{Ch, Fwd, SpecBuilder};
use super::ArchConfig;

fn layer(i: i64) -> String {
    format!("layers.{}", 2 * i)
}

pub(crate) fn spec(c: &ArchConfig, b: &mut SpecBuilder) {
    let mut input = Ch::fixed(c.in_channels * c.height * c.width);
    for i in 0..c.depth {
        let h = b.perm(&layer(i), c.ch(512));
        b.linear(&layer(i), input, h);
        input = h;
    }
    b.linear(&layer(c.depth), input, Ch::fixed(c.num_classes));
}

pub(crate) fn forward(c: &ArchConfig, f: &Fwd, x: &Tensor) -> Tensor {
    let mut x = f.flatten_linear(x, &layer(0), 0.0);
    for i in 1..=c.depth {
        x = f.linear(&x.relu(), &layer(i));
    }
    x
}
