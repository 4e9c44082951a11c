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

use super::layers::{Fwd, SpecBuilder};
use super::ArchConfig;

pub(crate) fn spec(c: &ArchConfig, b: &mut SpecBuilder) {
    let (c1, c2, c3, h) = (c.ch(16), c.ch(32), c.ch(64), c.ch(256));
    b.conv("features.0", c.in_channels, c1, 3, true, false);
    b.conv("features.3", c1, c2, 3, true, false);
    b.conv("features.6", c2, c3, 3, true, false);
    b.linear("classifier.2", c3 * 16, h);
    b.linear("classifier.5", h, c.num_classes);
}

pub(crate) fn forward(c: &ArchConfig, f: &Fwd, x: &Tensor) -> Tensor {
    let x = f.relu_max_pool(&f.conv(x, "features.0", 1, 1), 2, 2);
    let x = f.relu_max_pool(&f.conv(&x, "features.3", 1, 1), 2, 2);
    let x = f.adaptive_avg_pool(&f.conv(&x, "features.6", 1, 1).relu(), 4, 4);
    let x = f.flatten_linear(&x, "classifier.2", c.dropout);
    let x = f.dropout(&x.relu(), c.dropout);
    f.linear(&x, "classifier.5")
}
