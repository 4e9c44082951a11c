//! From decoded datasets to model inputs.
//!
//! Images stay in memory as uint8 `[N, H, W, C]` (HWC, as decoded) and are
//! converted per batch: one fused scale-and-shift to float, then a permute
//! that gives the NCHW shape with channels-last strides, the layout oneDNN's
//! convolutions prefer. Augmentation (random crop with zero padding and
//! horizontal flip) is one gather over the whole batch.

use std::path::Path;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::{self, DatasetKind, RawDataset, RawSplit};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// pixels / 255 (what the seed checkpoints expect).
    None,
    /// per-channel mean/std of the training set.
    Standard,
}

impl Normalize {
    pub fn name(self) -> &'static str {
        match self {
            Normalize::None => "none",
            Normalize::Standard => "standard",
        }
    }
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Normalize::None),
            "standard" => Ok(Normalize::Standard),
            _ => bail!("unknown normalisation '{s}' (expected none or standard)"),
        }
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
}

/// Per-channel affine map from uint8 pixels to network inputs.
#[derive(Debug)]
pub struct Normalizer {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    scale: Tensor,
    shift: Tensor,
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

/// Options that decide which data is loaded and how.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DataConfig {
    pub dataset: String,
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
    let kind = DatasetKind::parse(&cfg.dataset)?;
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

/// Random crop (zero padding `pad` on each side) and horizontal flip for the
/// images `idx` of a dataset, as ONE gather from the padded uint8 dataset
/// `[N, H+2p, W+2p, C]` (see [`Split::padded`]): per image a random offset
/// (oy, ox) ∈ [0, 2·pad]² and a coin for the flip, drawn from tch's RNG.
pub fn augment(padded: &Tensor, idx: &Tensor, pad: i64) -> Tensor {
    let size = padded.size();
    let (h, w) = (size[1] - 2 * pad, size[2] - 2 * pad);
    let b = idx.size()[0];
    let dev = padded.device();
    let oy = Tensor::randint(2 * pad + 1, [b, 1], (Kind::Int64, dev));
    let ox = Tensor::randint(2 * pad + 1, [b, 1], (Kind::Int64, dev));
    let flip = Tensor::randint(2, [b, 1], (Kind::Int64, dev)).eq(1);
    let ry = Tensor::arange(h, (Kind::Int64, dev)).unsqueeze(0);
    let rx = Tensor::arange(w, (Kind::Int64, dev)).unsqueeze(0);
    let rows = &oy + ry; // [B,H]
                         // flipped: column j reads source column (W-1-j); then shifted by ox.
    let cols = &ox + rx.flip([1]).where_self(&flip, &rx); // [B,W]
    padded.index(&[
        Some(idx.view([b, 1, 1])),
        Some(rows.unsqueeze(2)),
        Some(cols.unsqueeze(1)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn augmentation_is_a_shifted_and_possibly_flipped_crop() {
        // 2 images 4x4x1 with distinct pixel values; every augmented image must be
        // a 4x4 window of the zero-padded original, flipped or not.
        let imgs = Tensor::arange(32, (Kind::Uint8, Device::Cpu)).view([2, 4, 4, 1]) + 1;
        let split = Split::new(imgs.shallow_clone(), Tensor::from_slice(&[0i64, 1]));
        tch::manual_seed(5);
        for _ in 0..20 {
            let idx = Tensor::from_slice(&[1i64, 0]);
            let out = augment(split.padded(2), &idx, 2);
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
