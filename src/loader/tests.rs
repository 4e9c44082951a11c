//! Tests of batch assembly and normalisation, and the toy datasets other
//! modules' tests use.

use super::*;
use crate::data::DatasetKind;

#[test]
fn host_batches_equal_the_tensor_op_path() {
    // The CPU fast path (one Rust pass) must give exactly the batch that
    // the device path (gather from the padded copy, scale-and-shift,
    // permute) gives for the same RNG state: same crops, flips, values
    // and layout.
    for (c, mean, std) in [
        (3, vec![0.49, 0.48, 0.45], vec![0.25, 0.24, 0.26]),
        (1, vec![0.29], vec![0.35]),
    ] {
        // 20 images (≥ 16, so the two-thread split is exercised), with repeats.
        let picks: Vec<i64> = (0..20).map(|i| (i * 7 + 3) % 9).collect();
        let idx = Tensor::from_slice(&picks);
        for cl in [false, true] {
            for pad in [None, Some(2), Some(4)] {
                // (a split keeps one padded copy, so one toy set per pad)
                let d = toy_data(9, 7, 5, c, mean.clone(), std.clone());
                let draws = pad.map(|p| CropDraws::new(20, p, Device::Cpu));
                let (x, y) = d.batch_with(&d.train, &idx, draws.as_ref(), cl).unwrap();
                let imgs = match &draws {
                    Some(dr) => dr.gather(d.train.padded(dr.pad), &idx),
                    None => d.train.images.index_select(0, &idx),
                };
                let want = d.norm.apply(&imgs, cl);
                assert_eq!(x.size(), vec![20, c, 7, 5]);
                if c > 1 {
                    assert_eq!(crate::model::is_channels_last(&x), cl);
                }
                let diff = (&x - &want).abs().max().double_value(&[]);
                assert!(diff < 1e-6, "c={c} cl={cl} pad={pad:?}: {diff}");
                assert_eq!(y, d.train.labels.index_select(0, &idx));
            }
            let d = toy_data(9, 7, 5, c, mean.clone(), std.clone());
            let (x, y) = d.batch_range(&d.test, 2, 4, cl).unwrap();
            let want = d.norm.apply(&d.test.images.narrow(0, 2, 4), cl);
            assert_eq!((&x - &want).abs().max().double_value(&[]), 0.0);
            assert_eq!(y, d.test.labels.narrow(0, 2, 4));
        }
    }
}

#[test]
fn augmentation_is_a_shifted_and_possibly_flipped_crop() {
    // 2 images 4x4x1 with distinct pixel values; every augmented image must be
    // a 4x4 window of the zero-padded original, flipped or not.
    let imgs = Tensor::arange(32, (Kind::Uint8, Device::Cpu)).view([2, 4, 4, 1]) + 1;
    let split = Split::new(imgs.shallow_clone(), Tensor::from_slice(&[0i64, 1]));
    tch::manual_seed(5);
    for _ in 0..20 {
        let idx = Tensor::from_slice(&[1i64, 0]);
        let out = CropDraws::new(2, 2, Device::Cpu).gather(split.padded(2), &idx);
        assert_eq!(out.size(), vec![2, 4, 4, 1]);
        for (b, src) in [(0i64, 1i64), (1, 0)] {
            let o = out.get(b).squeeze_dim(2);
            let padded = split.padded(2).get(src).squeeze_dim(2);
            let mut found = false;
            for oy in 0..5 {
                for ox in 0..5 {
                    let win = padded.narrow(0, oy, 4).narrow(1, ox, 4);
                    if win.equal(&o) || win.flip([1]).equal(&o) {
                        found = true;
                    }
                }
            }
            assert!(found, "not a crop of image {src}");
        }
    }
}

#[test]
fn normalizer_maps_pixels_and_gives_channels_last_strides() {
    let n = Normalizer::new(vec![0.5, 0.25], vec![0.5, 0.25], Device::Cpu);
    let imgs = Tensor::from_slice(&[0u8, 255, 255, 0]).view([1, 1, 2, 2]); // N,H,W,C with C=2
    let x = n.apply(&imgs, true);
    assert_eq!(x.size(), vec![1, 2, 1, 2]);
    // channel 0: (0/255-0.5)/0.5 = -1, (255/255-0.5)/0.5 = 1; channel 1: (1-0.25)/0.25 = 3, (0-0.25)/0.25 = -1
    let v = Vec::<f32>::try_from(x.contiguous().flatten(0, -1)).unwrap();
    let want = [-1.0f32, 1.0, 3.0, -1.0];
    for (a, b) in v.iter().zip(want) {
        assert!((a - b).abs() < 1e-5);
    }
    assert!(crate::model::is_channels_last(&x));
}

/// A small random dataset in memory (3 classes), for unit tests.
pub(crate) fn toy_data(n: i64, h: i64, w: i64, c: i64, mean: Vec<f64>, std: Vec<f64>) -> Data {
    tch::manual_seed(11);
    let imgs = Tensor::randint(256, [n, h, w, c], (Kind::Uint8, Device::Cpu));
    let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(3);
    Data {
        kind: DatasetKind::Cifar10,
        classes: vec!["a".into(), "b".into(), "c".into()],
        channels: c,
        height: h,
        width: w,
        train: Split::new(imgs.shallow_clone(), labels.shallow_clone()),
        test: Split::new(imgs, labels),
        norm: Normalizer::new(mean, std, Device::Cpu),
        normalize: Normalize::Standard,
        full_train: n as usize,
        full_test: n as usize,
    }
}

/// A learnable toy dataset (3 classes, pixels/255): noise in [0, 100)
/// with channel `class` raised by 150, so a small ConvNet can separate
/// the classes within a few epochs. Train and test hold the same images.
pub(crate) fn separable_toy_data(n: i64, hw: i64) -> Data {
    let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(3);
    let noise = Tensor::randint(100, [n, hw, hw, 3], (Kind::Int64, Device::Cpu));
    let bright = labels.one_hot(3).view([n, 1, 1, 3]) * 150;
    let imgs = (noise + bright).to_kind(Kind::Uint8);
    Data {
        normalize: Normalize::None,
        norm: Normalizer::new(vec![0.0; 3], vec![1.0; 3], Device::Cpu),
        train: Split::new(imgs.shallow_clone(), labels.shallow_clone()),
        test: Split::new(imgs, labels),
        ..toy_data(1, hw, hw, 3, vec![0.0; 3], vec![1.0; 3])
    }
}
