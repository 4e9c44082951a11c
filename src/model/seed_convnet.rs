//! The seed experiment's CIFAR-10 ConvNet (github.com/simoneiriksson/mode-connectivity):
//!
//! ```text
//! features.0  Conv2d(C, 16, 3, padding 1) -> ReLU -> MaxPool2d(2)
//! features.3  Conv2d(16, 32, 3, padding 1) -> ReLU -> MaxPool2d(2)
//! features.6  Conv2d(32, 64, 3, padding 1) -> ReLU -> AdaptiveAvgPool2d(4, 4)
//! classifier  Flatten -> Dropout(p) -> classifier.2 Linear(1024, 256) -> ReLU
//!             -> Dropout(p) -> classifier.5 Linear(256, classes)
//! ```
//! PyTorch's default initialisation. Input channels and classes follow the dataset.

use tch::Tensor;

use super::layers::{Ch, Fwd, SpecBuilder};
use super::{ArchConfig, Params};

pub(crate) fn spec(c: &ArchConfig, b: &mut SpecBuilder) {
    let c1 = b.perm("features.0", c.ch(16));
    let c2 = b.perm("features.3", c.ch(32));
    let c3 = b.perm("features.6", c.ch(64));
    let h = b.perm("classifier.2", c.ch(256));
    b.conv("features.0", Ch::fixed(c.in_channels), c1, 3, true, false);
    b.conv("features.3", c1, c2, 3, true, false);
    b.conv("features.6", c2, c3, 3, true, false);
    b.linear("classifier.2", c3.flat(16), h);
    b.linear("classifier.5", h, Ch::fixed(c.num_classes));
}

pub(crate) fn forward(c: &ArchConfig, f: &Fwd, x: &Tensor) -> Tensor {
    let x = f.relu_max_pool(&f.conv(x, "features.0", 1, 1), 2, 2);
    let x = f.relu_max_pool(&f.conv(&x, "features.3", 1, 1), 2, 2);
    let x = f.adaptive_avg_pool(&f.conv(&x, "features.6", 1, 1).relu(), 4, 4);
    let x = f.flatten_linear(&x, "classifier.2", c.dropout);
    let x = f.dropout(&x.relu(), c.dropout);
    f.linear(&x, "classifier.5")
}

/// The seed ConvNet exactly as PyTorch's `nn.Sequential` runs it: conv →
/// ReLU → max-pool twice, conv → ReLU → adaptive average pool, flatten,
/// `F.dropout(0.5)` (libtorch's `bernoulli_` masks, only when `train`) and
/// the linear layers, in fp32 and whatever layout `x` has.
///
/// Not used by modeconn itself: it is the reference that [`forward`]'s
/// reordered ops are tested against, and the baseline of `benches/speed.rs`.
pub fn pytorch_order(p: &Params, x: &Tensor, train: bool) -> Tensor {
    let conv = |x: &Tensor, n: &str| {
        x.conv2d(
            p.get(&format!("{n}.weight")),
            Some(p.get(&format!("{n}.bias"))),
            [1, 1],
            [1, 1],
            [1, 1],
            1,
        )
    };
    let lin = |x: &Tensor, n: &str| {
        x.linear(
            p.get(&format!("{n}.weight")),
            Some(p.get(&format!("{n}.bias"))),
        )
    };
    let pool = |x: Tensor| x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
    let x = pool(conv(x, "features.0").relu());
    let x = pool(conv(&x, "features.3").relu());
    let x = conv(&x, "features.6").relu().adaptive_avg_pool2d([4, 4]);
    let x = x.flatten(1, -1).dropout(0.5, train);
    let x = lin(&x, "classifier.2").relu().dropout(0.5, train);
    lin(&x, "classifier.5")
}
