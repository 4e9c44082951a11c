//! Wide ResNet (Zagoruyko & Komodakis), as in the reference implementation
//! (`models/wide_resnet.py`): depth 6n+4, widen factor k, stages of 16k, 32k
//! and 64k planes; pre-activation blocks bn1-ReLU-conv1-dropout-bn2-ReLU-conv2
//! (3×3 with bias), a 1×1 `shortcut.0` convolution where shapes change; final
//! `bn1`, ReLU, global average pooling, `linear`.

use tch::Tensor;

use super::layers::{Ch, Fwd, SpecBuilder};
use super::ArchConfig;

fn blocks(c: &ArchConfig) -> Vec<(String, i64, i64, i64, bool)> {
    let n = (c.depth - 4) / 6;
    let k = c.widen;
    let mut cin = 16;
    let mut out = Vec::new();
    for (stage, (planes, stride)) in [(16 * k, 1), (32 * k, 2), (64 * k, 2)]
        .into_iter()
        .enumerate()
    {
        for i in 0..n {
            let s = if i == 0 { stride } else { 1 };
            out.push((
                format!("layer{}.{i}", stage + 1),
                cin,
                planes,
                s,
                s != 1 || cin != planes,
            ));
            cin = planes;
        }
    }
    out
}

/// One permutation per residual stream (from the stem, or from a block
/// with a `shortcut` convolution, to the next such block) and one for each
/// block's inner channels.
pub(crate) fn spec(c: &ArchConfig, b: &mut SpecBuilder) {
    let mut stream = b.perm("conv1", 16);
    b.conv("conv1", Ch::fixed(c.in_channels), stream, 3, true, false);
    for (p, cin, planes, _, short) in blocks(c) {
        debug_assert_eq!(cin, stream.n);
        let input = stream;
        let out = if short {
            b.perm(&format!("{p}.shortcut.0"), planes)
        } else {
            input
        };
        let inner = b.perm(&format!("{p}.conv1"), planes);
        b.bn(&format!("{p}.bn1"), input);
        b.conv(&format!("{p}.conv1"), input, inner, 3, true, false);
        b.bn(&format!("{p}.bn2"), inner);
        b.conv(&format!("{p}.conv2"), inner, out, 3, true, false);
        if short {
            b.conv(&format!("{p}.shortcut.0"), input, out, 1, true, false);
        }
        stream = out;
    }
    b.bn("bn1", stream);
    b.linear("linear", stream, Ch::fixed(c.num_classes));
}

/// The strided 1×1 shortcut convolutions: (name, in, out, stride).
pub(crate) fn strided_pointwise(c: &ArchConfig) -> Vec<(String, i64, i64, i64)> {
    blocks(c)
        .into_iter()
        .filter(|b| b.4 && b.3 > 1)
        .map(|(p, cin, planes, s, _)| (format!("{p}.shortcut.0"), cin, planes, s))
        .collect()
}

pub(crate) fn forward(c: &ArchConfig, f: &Fwd, x: &Tensor) -> Tensor {
    let mut x = f.conv(x, "conv1", 1, 1);
    for (p, _, _, stride, short) in blocks(c) {
        let o = f.conv(
            &f.bn(&x, &format!("{p}.bn1")).relu(),
            &format!("{p}.conv1"),
            1,
            1,
        );
        let o = f.dropout(&o, c.dropout);
        let o = f.conv(
            &f.bn(&o, &format!("{p}.bn2")).relu(),
            &format!("{p}.conv2"),
            stride,
            1,
        );
        let residual = if short {
            f.conv(&x, &format!("{p}.shortcut.0"), stride, 0)
        } else {
            x
        };
        x = o + residual;
    }
    let x = f
        .adaptive_avg_pool(&f.bn(&x, "bn1").relu(), 1, 1)
        .flatten(1, -1);
    f.linear(&x, "linear")
}
