//! Augmentation and batch assembly: random crops (zero padding) and flips,
//! drawn from tch's RNG, applied either in one pass in Rust on the CPU
//! ([`assemble`]) or as one gather on other devices ([`CropDraws::gather`]).

use tch::{Device, Kind, Tensor};

/// Where one output image of a batch reads from: source image `index`,
/// top-left corner at (`oy`, `ox`) relative to the source (may be negative
/// or run past the edge: those pixels are zero, i.e. zero padding), mirrored
/// left-right when `flip`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Crop {
    pub(super) index: usize,
    pub(super) oy: i64,
    pub(super) ox: i64,
    pub(super) flip: bool,
}

/// Builds a float batch `[B, C, H, W]` from uint8 HWC images in one pass:
/// crop/flip, `pixel·scale + shift` per channel, and the memory layout
/// (channels-last strides when `channels_last`, plain NCHW otherwise). The
/// two halves of the batch are filled by two threads.
pub(super) fn assemble(
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

/// The random part of augmentation for a batch of `b` images: offsets
/// `[b, 1]` in [0, 2·pad] into the zero-padded image (rows, columns) and
/// flip coins `[b, 1]` (bool), drawn from tch's RNG.
pub(super) struct CropDraws {
    pub(super) pad: i64,
    pub(super) oy: Tensor,
    pub(super) ox: Tensor,
    pub(super) flip: Tensor,
}

impl CropDraws {
    pub(super) fn new(b: i64, pad: i64, dev: Device) -> CropDraws {
        let oy = Tensor::randint(2 * pad + 1, [b, 1], (Kind::Int64, dev));
        let ox = Tensor::randint(2 * pad + 1, [b, 1], (Kind::Int64, dev));
        let flip = Tensor::randint(2, [b, 1], (Kind::Int64, dev)).eq(1);
        CropDraws { pad, oy, ox, flip }
    }

    /// The crops as ONE gather from the padded uint8 images
    /// `[N, H+2p, W+2p, C]` (see [`Split::padded`]).
    pub(super) fn gather(&self, padded: &Tensor, idx: &Tensor) -> Tensor {
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
