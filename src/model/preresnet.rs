//! Pre-activation ResNet for CIFAR, as in the reference implementation
//! (`models/preresnet.py`, after bearpaw/pytorch-classification): depth 6n+2
//! uses basic blocks (3×3 convolutions with bias), depth 9n+2 from 44 up uses
//! bottlenecks (1×1, 3×3, 1×1 without bias, expansion 4). Stages of 16, 32
//! and 64 planes; a 1×1 strided `downsample.0` convolution on the shortcut
//! where shapes change; final `bn`, ReLU, global average pooling, `fc`.

use tch::Tensor;

use super::layers::{Ch, Fwd, SpecBuilder};
use super::ArchConfig;

struct Layout {
    bottleneck: bool,
    blocks: i64,
}

fn layout(c: &ArchConfig) -> Layout {
    if c.depth >= 44 {
        Layout {
            bottleneck: true,
            blocks: (c.depth - 2) / 9,
        }
    } else {
        Layout {
            bottleneck: false,
            blocks: (c.depth - 2) / 6,
        }
    }
}

/// (name prefix, in planes, planes, stride, has downsample) for every block.
fn blocks(c: &ArchConfig) -> Vec<(String, i64, i64, i64, bool)> {
    let l = layout(c);
    let exp = if l.bottleneck { 4 } else { 1 };
    let mut inplanes = c.ch(16);
    let mut out = Vec::new();
    for (stage, (planes, stride)) in [(16, 1), (32, 2), (64, 2)].into_iter().enumerate() {
        let planes = c.ch(planes);
        for i in 0..l.blocks {
            let s = if i == 0 { stride } else { 1 };
            let down = i == 0 && (s != 1 || inplanes != planes * exp);
            out.push((format!("layer{}.{i}", stage + 1), inplanes, planes, s, down));
            inplanes = planes * exp;
        }
    }
    out
}

/// The residual stream keeps one permutation from the stem to the next
/// block with a `downsample` shortcut, which starts a new one; each block's
/// inner channels have their own.
pub(crate) fn spec(c: &ArchConfig, b: &mut SpecBuilder) {
    let l = layout(c);
    let exp = if l.bottleneck { 4 } else { 1 };
    let mut stream = b.perm("conv1", c.ch(16));
    b.conv("conv1", Ch::fixed(c.in_channels), stream, 3, false, true);
    for (p, cin, planes, _, down) in blocks(c) {
        debug_assert_eq!(cin, stream.n);
        let input = stream;
        let out = if down {
            b.perm(&format!("{p}.downsample.0"), planes * exp)
        } else {
            input
        };
        b.bn(&format!("{p}.bn1"), input);
        let inner1 = b.perm(&format!("{p}.conv1"), planes);
        if l.bottleneck {
            let inner2 = b.perm(&format!("{p}.conv2"), planes);
            b.conv(&format!("{p}.conv1"), input, inner1, 1, false, true);
            b.bn(&format!("{p}.bn2"), inner1);
            b.conv(&format!("{p}.conv2"), inner1, inner2, 3, false, true);
            b.bn(&format!("{p}.bn3"), inner2);
            b.conv(&format!("{p}.conv3"), inner2, out, 1, false, true);
        } else {
            b.conv(&format!("{p}.conv1"), input, inner1, 3, true, true);
            b.bn(&format!("{p}.bn2"), inner1);
            b.conv(&format!("{p}.conv2"), inner1, out, 3, true, true);
        }
        if down {
            b.conv(&format!("{p}.downsample.0"), input, out, 1, false, true);
        }
        stream = out;
    }
    b.bn("bn", stream);
    b.linear("fc", stream, Ch::fixed(c.num_classes));
}

/// The strided 1×1 shortcut convolutions: (name, in, out, stride).
pub(crate) fn strided_pointwise(c: &ArchConfig) -> Vec<(String, i64, i64, i64)> {
    let exp = if layout(c).bottleneck { 4 } else { 1 };
    blocks(c)
        .into_iter()
        .filter(|b| b.4 && b.3 > 1)
        .map(|(p, cin, planes, s, _)| (format!("{p}.downsample.0"), cin, planes * exp, s))
        .collect()
}

pub(crate) fn forward(c: &ArchConfig, f: &Fwd, x: &Tensor) -> Tensor {
    let bottleneck = layout(c).bottleneck;
    let mut x = f.conv(x, "conv1", 1, 1);
    for (p, _, _, stride, down) in blocks(c) {
        let out = f.bn(&x, &format!("{p}.bn1")).relu();
        let out = if bottleneck {
            let o = f.conv(&out, &format!("{p}.conv1"), 1, 0);
            let o = f.bn(&o, &format!("{p}.bn2")).relu();
            let o = f.conv(&o, &format!("{p}.conv2"), stride, 1);
            let o = f.bn(&o, &format!("{p}.bn3")).relu();
            f.conv(&o, &format!("{p}.conv3"), 1, 0)
        } else {
            let o = f.conv(&out, &format!("{p}.conv1"), stride, 1);
            let o = f.bn(&o, &format!("{p}.bn2")).relu();
            f.conv(&o, &format!("{p}.conv2"), 1, 1)
        };
        let residual = if down {
            f.conv(&x, &format!("{p}.downsample.0"), stride, 0)
        } else {
            x
        };
        x = out.to_kind(residual.kind()) + residual;
    }
    let x = f
        .adaptive_avg_pool(&f.bn(&x, "bn").relu(), 1, 1)
        .flatten(1, -1);
    f.linear(&x, "fc")
}
