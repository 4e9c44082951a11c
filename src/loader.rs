//! From decoded datasets to model inputs.
//!
//! Images stay in memory as uint8 `[N, H, W, C]` (HWC, as decoded) and are
//! turned into a model input per batch by [`Data::batch`]: crop/flip,
//! scale-and-shift to float and the memory layout in one step.
//!
//! On the CPU that step is a single pass in Rust that reads each source
//! pixel once and writes the float input straight into its final layout
//! (channels-last or NCHW), about ten times cheaper than the equivalent
//! chain of tensor ops (gather, cast, multiply, add, permute). On other
//! devices the same batch is built from tensor ops on the device: one gather
//! from a zero-padded copy, one fused scale-and-shift, one permute. Both
//! paths draw the random crop offsets and flips from tch's RNG in the same
//! order, so they produce the same batch.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::{self, DatasetKind, RawDataset, RawSplit};

crate::choice! {
    pub enum Normalize {
        /// pixels / 255 (what the seed checkpoints expect).
        None = "none",
        /// per-channel mean/std of the training set.
        Standard = "standard",
    }
}

/// One split on the compute device: uint8 images `[N,H,W,C]`, int64 labels `[N]`.
pub struct Split {
    pub images: Tensor,
    pub labels: Tensor,
    padded: std::sync::OnceLock<(i64, Tensor)>,
}

impl Split {
    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn new(images: Tensor, labels: Tensor) -> Split {
        Split {
            images,
            labels,
            padded: std::sync::OnceLock::new(),
        }
    }
    /// The images zero-padded by `pad` pixels on each side, made once and
    /// kept, so that augmentation is a single gather per batch.
    pub fn padded(&self, pad: i64) -> &Tensor {
        let (p, t) = self
            .padded
            .get_or_init(|| (pad, self.images.constant_pad_nd([0, 0, pad, pad, pad, pad])));
        assert_eq!(*p, pad, "one padding per split");
        t
    }
    /// Images `[start, start+len)` as a uint8 batch.
    pub fn slice(&self, start: i64, len: i64) -> (Tensor, Tensor) {
        (
            self.images.narrow(0, start, len),
            self.labels.narrow(0, start, len),
        )
    }

    /// The images as host bytes `[N·H·W·C]`, when they live in contiguous
    /// CPU memory (the fast batch path); `None` on an accelerator.
    fn host_bytes(&self) -> Option<&[u8]> {
        let t = &self.images;
        if t.device() != Device::Cpu || t.kind() != Kind::Uint8 || !t.is_contiguous() {
            return None;
        }
        let n = t.numel();
        if n == 0 {
            return Some(&[]);
        }
        // SAFETY: `images` is a contiguous uint8 CPU tensor of `n` elements
        // owned by this split and never written after construction; the
        // slice borrows `self`, so the storage outlives it.
        Some(unsafe { std::slice::from_raw_parts(t.data_ptr() as *const u8, n) })
    }
}

/// Where one output image of a batch reads from: source image `index`,
/// top-left corner at (`oy`, `ox`) relative to the source (may be negative
/// or run past the edge: those pixels are zero, i.e. zero padding), mirrored
/// left-right when `flip`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Crop {
    index: usize,
    oy: i64,
    ox: i64,
    flip: bool,
}

/// Builds a float batch `[B, C, H, W]` from uint8 HWC images in one pass:
/// crop/flip, `pixel·scale + shift` per channel, and the memory layout
/// (channels-last strides when `channels_last`, plain NCHW otherwise). The
/// two halves of the batch are filled by two threads.
fn assemble(
    src: &[u8],
    (h, w, c): (usize, usize, usize),
    crops: &[Crop],
    scale: &[f32],
    shift: &[f32],
    channels_last: bool,
) -> Tensor {
    let (bi, hi, wi, ci) = (crops.len() as i64, h as i64, w as i64, c as i64);
    let lut: Vec<f32> = (0..c)
        .flat_map(|ch| (0..256).map(move |v| v as f32 * scale[ch] + shift[ch]))
        .collect();
    let zero: Vec<f32> = (0..c).map(|ch| lut[ch * 256]).collect();
    let img = h * w * c;
    let shape = if channels_last {
        [bi, hi, wi, ci]
    } else {
        [bi, ci, hi, wi]
    };
    let out = Tensor::empty(shape, (Kind::Float, Device::Cpu));
    if img > 0 && !crops.is_empty() {
        // SAFETY: `out` is a freshly allocated contiguous float CPU tensor of
        // exactly crops.len()·img elements, not shared with anything yet.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, crops.len() * img)
        };
        let fill = |crops: &[Crop], buf: &mut [f32]| {
            for (cr, dst) in crops.iter().zip(buf.chunks_exact_mut(img)) {
                let image = &src[cr.index * img..(cr.index + 1) * img];
                fill_one(image, (h, w, c), cr, &lut, &zero, channels_last, dst);
            }
        };
        let half = crops.len().div_ceil(2);
        if crops.len() >= 16 {
            let (c0, c1) = crops.split_at(half);
            let (b0, b1) = buf.split_at_mut(half * img);
            std::thread::scope(|s| {
                s.spawn(|| fill(c1, b1));
                fill(c0, b0);
            });
        } else {
            fill(crops, buf);
        }
    }
    if channels_last {
        out.permute([0, 3, 1, 2])
    } else {
        out
    }
}

/// One image of [`assemble`]: `dst` is `[H, W, C]` (channels-last) or
/// `[C, H, W]`. `lut[ch·256 + v]` is `v·scale[ch] + shift[ch]` (so the
/// result is bit-identical to computing it), and `zero[ch]` the value of a
/// padding pixel (v = 0).
#[allow(clippy::too_many_arguments)]
fn fill_one(
    image: &[u8],
    (h, w, c): (usize, usize, usize),
    cr: &Crop,
    lut: &[f32],
    zero: &[f32],
    channels_last: bool,
    dst: &mut [f32],
) {
    let (hi, wi) = (h as i64, w as i64);
    for y in 0..h {
        let sy = y as i64 + cr.oy;
        let row = (0..hi)
            .contains(&sy)
            .then(|| &image[sy as usize * w * c..(sy as usize + 1) * w * c]);
        for x in 0..w {
            let sx = if cr.flip { w - 1 - x } else { x } as i64 + cr.ox;
            let px = match row {
                Some(r) if (0..wi).contains(&sx) => Some(&r[sx as usize * c..sx as usize * c + c]),
                _ => None,
            };
            if channels_last {
                let d = &mut dst[(y * w + x) * c..(y * w + x + 1) * c];
                match px {
                    Some(p) => {
                        for ((d, &v), l) in d.iter_mut().zip(p).zip(lut.chunks_exact(256)) {
                            *d = l[v as usize];
                        }
                    }
                    None => d.copy_from_slice(zero),
                }
            } else {
                for ch in 0..c {
                    dst[(ch * h + y) * w + x] = match px {
                        Some(p) => lut[ch * 256 + p[ch] as usize],
                        None => zero[ch],
                    };
                }
            }
        }
    }
}

/// Per-channel affine map from uint8 pixels to network inputs.
#[derive(Debug)]
pub struct Normalizer {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    scale: Tensor,
    shift: Tensor,
    scale_host: Vec<f32>,
    shift_host: Vec<f32>,
}

impl Normalizer {
    pub fn new(mean: Vec<f64>, std: Vec<f64>, device: Device) -> Normalizer {
        let scale: Vec<f32> = std.iter().map(|s| (1.0 / (255.0 * s)) as f32).collect();
        let shift: Vec<f32> = mean
            .iter()
            .zip(&std)
            .map(|(m, s)| (-m / s) as f32)
            .collect();
        Normalizer {
            scale: Tensor::from_slice(&scale).to_device(device),
            shift: Tensor::from_slice(&shift).to_device(device),
            scale_host: scale,
            shift_host: shift,
            mean,
            std,
        }
    }

    /// uint8 `[B,H,W,C]` → float `[B,C,H,W]`; channels-last strides when
    /// `channels_last`, plain NCHW-contiguous otherwise.
    pub fn apply(&self, images: &Tensor, channels_last: bool) -> Tensor {
        let x = images.to_kind(Kind::Float) * &self.scale + &self.shift;
        let x = x.permute([0, 3, 1, 2]);
        if channels_last {
            x
        } else {
            x.contiguous()
        }
    }
}

/// A loaded dataset on the compute device.
pub struct Data {
    pub kind: DatasetKind,
    pub classes: Vec<String>,
    pub channels: i64,
    pub height: i64,
    pub width: i64,
    pub train: Split,
    pub test: Split,
    pub norm: Normalizer,
    pub normalize: Normalize,
    /// Sizes before subsetting.
    pub full_train: usize,
    pub full_test: usize,
}

impl Data {
    /// Model input `[B, C, H, W]` and labels `[B]` for the images `idx` of
    /// `split`, randomly cropped (zero padding `pad`) and flipped when
    /// `augment_pad` is `Some(pad)`. Channels-last strides when
    /// `channels_last`.
    pub fn batch(
        &self,
        split: &Split,
        idx: &Tensor,
        augment_pad: Option<i64>,
        channels_last: bool,
    ) -> (Tensor, Tensor) {
        let draws = augment_pad.map(|pad| CropDraws::new(idx.size()[0], pad, idx.device()));
        self.batch_with(split, idx, draws.as_ref(), channels_last)
    }

    /// [`Data::batch`] with given crop draws (`None`: no augmentation).
    fn batch_with(
        &self,
        split: &Split,
        idx: &Tensor,
        draws: Option<&CropDraws>,
        channels_last: bool,
    ) -> (Tensor, Tensor) {
        let labels = split.labels.index_select(0, idx);
        let Some(src) = split.host_bytes() else {
            let imgs = match draws {
                Some(d) => d.gather(split.padded(d.pad), idx),
                None => split.images.index_select(0, idx),
            };
            return (self.norm.apply(&imgs, channels_last), labels);
        };
        let index = Vec::<i64>::try_from(idx.to_kind(Kind::Int64)).unwrap_or_default();
        let crops: Vec<Crop> = match draws {
            Some(d) => {
                let v = |t: &Tensor| Vec::<i64>::try_from(t.view([-1])).unwrap_or_default();
                let (oy, ox, flip) = (v(&d.oy), v(&d.ox), v(&d.flip.to_kind(Kind::Int64)));
                (0..index.len())
                    .map(|k| Crop {
                        index: index[k] as usize,
                        oy: oy[k] - d.pad,
                        ox: ox[k] - d.pad,
                        flip: flip[k] != 0,
                    })
                    .collect()
            }
            None => index
                .iter()
                .map(|&i| Crop {
                    index: i as usize,
                    oy: 0,
                    ox: 0,
                    flip: false,
                })
                .collect(),
        };
        let x = assemble(
            src,
            (
                self.height as usize,
                self.width as usize,
                self.channels as usize,
            ),
            &crops,
            &self.norm.scale_host,
            &self.norm.shift_host,
            channels_last,
        );
        (x, labels)
    }

    /// Model input and labels for images `[start, start+len)` of `split`,
    /// without augmentation (evaluation).
    pub fn batch_range(
        &self,
        split: &Split,
        start: i64,
        len: i64,
        channels_last: bool,
    ) -> (Tensor, Tensor) {
        if split.host_bytes().is_none() {
            let (imgs, labels) = split.slice(start, len);
            return (self.norm.apply(&imgs, channels_last), labels);
        }
        let idx = Tensor::arange_start(start, start + len, (Kind::Int64, Device::Cpu));
        self.batch(split, &idx, None, channels_last)
    }
}

/// Options that decide which data is loaded and how.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DataConfig {
    pub dataset: crate::data::DatasetKind,
    pub data_dir: Option<std::path::PathBuf>,
    pub normalize: Normalize,
    pub train_subset: Option<usize>,
    pub test_subset: Option<usize>,
}

fn to_split(raw: &RawSplit, h: usize, w: usize, c: usize, device: Device) -> Split {
    let images = Tensor::from_slice(&raw.images)
        .view([raw.n as i64, h as i64, w as i64, c as i64])
        .to_device(device);
    let labels: Vec<i64> = raw.labels.iter().map(|&l| l as i64).collect();
    Split::new(images, Tensor::from_slice(&labels).to_device(device))
}

/// Per-channel mean and std of uint8 HWC images, in pixel/255 units.
fn channel_stats(raw: &RawSplit, c: usize) -> (Vec<f64>, Vec<f64>) {
    let mut sum = vec![0f64; c];
    let mut sq = vec![0f64; c];
    for px in raw.images.chunks_exact(c) {
        for (i, &v) in px.iter().enumerate() {
            let v = v as f64 / 255.0;
            sum[i] += v;
            sq[i] += v * v;
        }
    }
    let n = (raw.images.len() / c).max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q / n - m * m).max(1e-12).sqrt())
        .collect();
    (mean, std)
}

pub fn cache_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("MODECONN_CACHE") {
        return d.into();
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Path::new(&d).join("modeconn");
    }
    match std::env::var_os("HOME") {
        Some(h) => Path::new(&h).join(".cache").join("modeconn"),
        None => std::env::temp_dir().join("modeconn-cache"),
    }
}

/// Loads, subsets and moves a dataset to `device`. `norm_override` reuses
/// the normalisation stored in a checkpoint instead of recomputing it.
pub fn load(
    cfg: &DataConfig,
    device: Device,
    norm_override: Option<(Vec<f64>, Vec<f64>)>,
) -> Result<Data> {
    let kind = cfg.dataset;
    let raw: RawDataset = data::load(kind, cfg.data_dir.as_deref(), &cache_dir())?;
    let (h, w, c) = (raw.height, raw.width, raw.channels);
    let (mean, std) = match (cfg.normalize, norm_override) {
        (Normalize::None, _) => (vec![0.0; c], vec![1.0; c]),
        (Normalize::Standard, Some(ms)) => ms,
        (Normalize::Standard, None) => channel_stats(&raw.train, c),
    };
    let nc = raw.classes.len();
    let img_len = h * w * c;
    let pick = |s: &RawSplit, n: Option<usize>, seed: u64| match n {
        Some(n) if n < s.n => s.select(&data::balanced_subset(&s.labels, nc, n, seed), img_len),
        _ => s.select(&(0..s.n).collect::<Vec<_>>(), img_len),
    };
    let train_raw = pick(&raw.train, cfg.train_subset, 1);
    let test_raw = pick(&raw.test, cfg.test_subset, 2);
    Ok(Data {
        kind,
        classes: raw.classes.clone(),
        channels: c as i64,
        height: h as i64,
        width: w as i64,
        train: to_split(&train_raw, h, w, c, device),
        test: to_split(&test_raw, h, w, c, device),
        norm: Normalizer::new(mean, std, device),
        normalize: cfg.normalize,
        full_train: raw.train.n,
        full_test: raw.test.n,
    })
}

/// The random part of augmentation for a batch of `b` images: offsets
/// `[b, 1]` in [0, 2·pad] into the zero-padded image (rows, columns) and
/// flip coins `[b, 1]` (bool), drawn from tch's RNG.
struct CropDraws {
    pad: i64,
    oy: Tensor,
    ox: Tensor,
    flip: Tensor,
}

impl CropDraws {
    fn new(b: i64, pad: i64, dev: Device) -> CropDraws {
        let oy = Tensor::randint(2 * pad + 1, [b, 1], (Kind::Int64, dev));
        let ox = Tensor::randint(2 * pad + 1, [b, 1], (Kind::Int64, dev));
        let flip = Tensor::randint(2, [b, 1], (Kind::Int64, dev)).eq(1);
        CropDraws { pad, oy, ox, flip }
    }

    /// The crops as ONE gather from the padded uint8 images
    /// `[N, H+2p, W+2p, C]` (see [`Split::padded`]).
    fn gather(&self, padded: &Tensor, idx: &Tensor) -> Tensor {
        let size = padded.size();
        let (h, w) = (size[1] - 2 * self.pad, size[2] - 2 * self.pad);
        let b = idx.size()[0];
        let dev = padded.device();
        let ry = Tensor::arange(h, (Kind::Int64, dev)).unsqueeze(0);
        let rx = Tensor::arange(w, (Kind::Int64, dev)).unsqueeze(0);
        let rows = &self.oy + ry; // [B,H]
                                  // flipped: column j reads source column (W-1-j); then shifted by ox.
        let cols = &self.ox + rx.flip([1]).where_self(&self.flip, &rx); // [B,W]
        padded.index(&[
            Some(idx.view([b, 1, 1])),
            Some(rows.unsqueeze(2)),
            Some(cols.unsqueeze(1)),
        ])
    }
}

/// A small random dataset in memory (3 classes), for unit tests.
#[cfg(test)]
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
#[cfg(test)]
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

#[cfg(test)]
mod tests {
    use super::*;

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
                    let (x, y) = d.batch_with(&d.train, &idx, draws.as_ref(), cl);
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
                let (x, y) = d.batch_range(&d.test, 2, 4, cl);
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
}
