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

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::{self, DatasetKind, RawDataset, RawSplit};

mod augment;
use augment::{assemble, Crop, CropDraws};

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
    ) -> Result<(Tensor, Tensor)> {
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
    ) -> Result<(Tensor, Tensor)> {
        let labels = split.labels.index_select(0, idx);
        let Some(src) = split.host_bytes() else {
            let imgs = match draws {
                Some(d) => d.gather(split.padded(d.pad), idx),
                None => split.images.index_select(0, idx),
            };
            return Ok((self.norm.apply(&imgs, channels_last), labels));
        };
        let index = Vec::<i64>::try_from(idx.to_kind(Kind::Int64))?;
        let crops: Vec<Crop> = match draws {
            Some(d) => {
                let v = |t: &Tensor| Vec::<i64>::try_from(t.view([-1]));
                let (oy, ox, flip) = (v(&d.oy)?, v(&d.ox)?, v(&d.flip.to_kind(Kind::Int64))?);
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
        Ok((x, labels))
    }

    /// Model input and labels for images `[start, start+len)` of `split`,
    /// without augmentation (evaluation).
    pub fn batch_range(
        &self,
        split: &Split,
        start: i64,
        len: i64,
        channels_last: bool,
    ) -> Result<(Tensor, Tensor)> {
        if split.host_bytes().is_none() {
            let (imgs, labels) = split.slice(start, len);
            return Ok((self.norm.apply(&imgs, channels_last), labels));
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

impl DataConfig {
    /// Subsets hold at least one image (0 would train or test on nothing).
    pub fn validate(&self) -> Result<()> {
        for (flag, n) in [
            ("--train-subset", self.train_subset),
            ("--test-subset", self.test_subset),
        ] {
            if n == Some(0) {
                anyhow::bail!("{flag} must be at least 1 (it is a number of images), got 0");
            }
        }
        Ok(())
    }
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
        // A per-user folder, created 0700 and checked before use
        // (crate::files::private_dir), never one shared with other users.
        // SAFETY: geteuid has no preconditions and cannot fail.
        None => std::env::temp_dir().join(format!("modeconn-cache-{}", unsafe { libc::geteuid() })),
    }
}

/// Loads, subsets and moves a dataset to `device`. `norm_override` reuses
/// the normalisation stored in a checkpoint instead of recomputing it.
pub fn load(
    cfg: &DataConfig,
    device: Device,
    norm_override: Option<(Vec<f64>, Vec<f64>)>,
) -> Result<Data> {
    cfg.validate()?;
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
    for (flag, split, n, s) in [
        ("--train-subset", "training", cfg.train_subset, &raw.train),
        ("--test-subset", "test", cfg.test_subset, &raw.test),
    ] {
        if let Some(n) = n.filter(|&n| n > s.n) {
            bail!(
                "{flag} {n} asks for more images than the {split} split of {kind} holds ({}); pass at most {}, or leave {flag} out to use them all",
                s.n,
                s.n
            );
        }
    }
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

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::{separable_toy_data, toy_data};
