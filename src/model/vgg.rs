//! VGG16 with and without BatchNorm, as in the reference implementation
//! (`models/vgg.py`): five blocks of 3×3 convolutions (64, 64 | 128, 128 |
//! 256×3 | 512×3 | 512×3), each block closed by 2×2 max-pooling, then
//! Dropout-Linear(512,512)-ReLU-Dropout-Linear(512,512)-ReLU-Linear(512,classes).
//! Keys: `layer_blocks.<block>.<i>` (conv at even i and BN at odd i with BN,
//! conv at every i without), `classifier.1`, `classifier.4`, `classifier.6`.
//! A final spatial map larger than 1×1 (inputs above 32×32) is average-pooled.

use tch::Tensor;

use super::layers::{Ch, Fwd, SpecBuilder};
use super::{ArchConfig, ArchKind};

const BLOCKS: [&[i64]; 5] = [
    &[64, 64],
    &[128, 128],
    &[256, 256, 256],
    &[512, 512, 512],
    &[512, 512, 512],
];

fn layer_names(bn: bool, block: usize, j: usize) -> (String, Option<String>) {
    if bn {
        (
            format!("layer_blocks.{block}.{}", 2 * j),
            Some(format!("layer_blocks.{block}.{}", 2 * j + 1)),
        )
    } else {
        (format!("layer_blocks.{block}.{j}"), None)
    }
}

pub(crate) fn spec(c: &ArchConfig, b: &mut SpecBuilder) {
    let bn = c.arch == ArchKind::Vgg16Bn;
    let mut cin = Ch::fixed(c.in_channels);
    for (bi, sizes) in BLOCKS.iter().enumerate() {
        for (j, &ch) in sizes.iter().enumerate() {
            let (conv, norm) = layer_names(bn, bi, j);
            let ch = b.perm(&conv, c.ch(ch));
            b.conv(&conv, cin, ch, 3, true, true);
            if let Some(norm) = norm {
                b.bn(&norm, ch);
            }
            cin = ch;
        }
    }
    // The last map is pooled to 1×1, so flattening keeps one feature per channel.
    let h1 = b.perm("classifier.1", c.ch(512));
    let h2 = b.perm("classifier.4", c.ch(512));
    b.linear("classifier.1", cin, h1);
    b.linear("classifier.4", h1, h2);
    b.linear("classifier.6", h2, Ch::fixed(c.num_classes));
}

pub(crate) fn forward(c: &ArchConfig, f: &Fwd, x: &Tensor) -> Tensor {
    let bn = c.arch == ArchKind::Vgg16Bn;
    let mut x = x.shallow_clone();
    for (bi, sizes) in BLOCKS.iter().enumerate() {
        for j in 0..sizes.len() {
            let (conv, norm) = layer_names(bn, bi, j);
            x = f.conv(&x, &conv, 1, 1);
            if let Some(norm) = norm {
                x = f.bn(&x, &norm);
            }
            // The block's last ReLU is applied after its max-pool (same result).
            if j + 1 < sizes.len() {
                x = x.relu();
            }
        }
        x = f.relu_max_pool(&x, 2, 2);
    }
    if x.size()[2] > 1 || x.size()[3] > 1 {
        x = f.adaptive_avg_pool(&x, 1, 1);
    }
    let x = f.dropout(&x.flatten(1, -1), c.dropout);
    let x = f.dropout(&f.linear(&x, "classifier.1").relu(), c.dropout);
    let x = f.linear(&x, "classifier.4").relu();
    f.linear(&x, "classifier.6")
}
