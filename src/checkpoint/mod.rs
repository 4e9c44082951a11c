//! Checkpoints: safetensors files with PyTorch state-dict keys and a JSON
//! metadata entry, always written atomically (temp file, fsync, rename).
//!
//! * `model.safetensors`: one network, keys exactly as `nn.Module.state_dict()`
//!   (`features.0.weight`, `bn.running_mean`, ...), loadable with
//!   `safetensors.torch.load_file` + `load_state_dict`.
//! * `curve.safetensors`: every bend of a curve, keys `bend<k>.<param>`.
//! * `state.safetensors`: parameters plus optimiser state for `--resume`.
//!
//! Imports also read PyTorch `.pt`/`.pth`/`.bin` state dicts (`torch.save`'s
//! zip format), checked and built by [`torch_zip`], never by libtorch's
//! unpickler.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::curve::{Curve, CurveKind};
use crate::model::{ArchConfig, Params};

mod pickle;
mod torch_zip;
use crate::files::{read_regular, write_atomic, CHECKPOINT_MAX};

/// Key of the JSON metadata inside the safetensors header.
const META_KEY: &str = "modeconn";

/// What a checkpoint was made from; enough to rebuild its model and data.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub arch: ArchConfig,
    pub dataset: crate::data::DatasetKind,
    pub normalize: crate::loader::Normalize,
    /// Per-channel mean and std used for `--normalize standard` (pixel/255 units).
    pub norm_mean: Vec<f64>,
    pub norm_std: Vec<f64>,
    pub classes: Vec<String>,
    /// Completed epochs.
    pub epoch: usize,
    #[serde(default)]
    pub curve: Option<CurveMeta>,
    /// Free-form provenance (seed, source files of an import, ...).
    #[serde(default)]
    pub note: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CurveMeta {
    pub kind: CurveKind,
    pub bends: usize,
}

/// A contiguous CPU tensor viewed for safetensors serialisation.
struct TensorBytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &TensorBytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_bytes(t: &Tensor) -> Result<TensorBytes> {
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let dtype = match t.kind() {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Uint8 => Dtype::U8,
        k => bail!("cannot save tensors of kind {k:?}"),
    };
    let numel = t.numel();
    let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut data, numel)?;
    Ok(TensorBytes {
        dtype,
        shape: t.size().iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Writes named tensors (and optional metadata) as safetensors, atomically.
pub fn write_tensors(path: &Path, tensors: &[(String, Tensor)], meta: Option<&Meta>) -> Result<()> {
    let mut header = HashMap::new();
    if let Some(m) = meta {
        header.insert(META_KEY.to_string(), serde_json::to_string(m)?);
        header.insert("format".to_string(), "pt".to_string());
    }
    write_tensors_with(path, tensors, header)
}

/// Writes named tensors with the given header metadata as safetensors
/// (keys sorted, so equal contents are equal files), atomically.
pub fn write_tensors_with(
    path: &Path,
    tensors: &[(String, Tensor)],
    header: HashMap<String, String>,
) -> Result<()> {
    let bytes: Vec<(String, TensorBytes)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), to_bytes(t)?)))
        .collect::<Result<_>>()?;
    let views: Vec<(&str, &TensorBytes)> = bytes.iter().map(|(n, b)| (n.as_str(), b)).collect();
    let buf = safetensors::tensor::serialize(views, &Some(header))
        .map_err(|e| anyhow!("cannot serialise {}: {e:?}", path.display()))?;
    write_atomic(path, &canonical_header(buf)?)
}

/// The same safetensors bytes with the JSON header's keys in sorted order
/// (the serialiser takes a HashMap, whose order changes from run to run), so
/// identical checkpoints are identical files. Offsets are relative to the
/// data, which is unchanged; the header stays padded to 8 bytes.
fn canonical_header(buf: Vec<u8>) -> Result<Vec<u8>> {
    let n = u64::from_le_bytes(buf[..8].try_into()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(&buf[8..8 + n])?;
    // serde_json's maps are sorted by key.
    let mut text = serde_json::to_vec(&header)?;
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + buf.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&buf[8 + n..]);
    Ok(out)
}

/// Named tensors, in file order.
pub type NamedTensors = Vec<(String, Tensor)>;

/// Reads every tensor of a `.safetensors`, `.pt` or `.pth` file, with the
/// modeconn metadata when present.
pub fn read_tensors(path: &Path) -> Result<(NamedTensors, Option<Meta>)> {
    if !path.exists() {
        bail!("checkpoint {} does not exist", path.display());
    }
    if !path.is_file() {
        bail!("checkpoint {} is not a regular file", path.display());
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "pt" | "pth" | "bin" => Ok((torch_zip::read(path)?, None)),
        _ => {
            let buf = read_regular(path, CHECKPOINT_MAX)?;
            let st =
                SafeTensors::deserialize(&buf).map_err(|e| safetensors_error(path, &buf, e))?;
            let (_, header) = SafeTensors::read_metadata(&buf)
                .map_err(|e| anyhow!("{}: {e:?}", path.display()))?;
            let meta = match header.metadata().as_ref().and_then(|m| m.get(META_KEY)) {
                Some(s) => Some(parse_meta(s, path)?),
                None => None,
            };
            let mut out = Vec::new();
            for (name, view) in st.tensors() {
                let t: Tensor = view
                    .try_into()
                    .map_err(|e| anyhow!("{}: tensor {name}: {e}", path.display()))?;
                out.push((name, t));
            }
            // safetensors does not keep insertion order; the spec order is restored by the caller.
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok((out, meta))
        }
    }
}

/// What is wrong with a file `SafeTensors::deserialize` refused, in words
/// naming it.
fn safetensors_error(path: &Path, buf: &[u8], e: safetensors::SafeTensorError) -> anyhow::Error {
    use safetensors::SafeTensorError as E;
    let p = path.display();
    let len = buf.len();
    let claim = buf
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    let why = match e {
        E::HeaderTooSmall => format!("is {len} bytes, too short for the 8-byte header length a safetensors file starts with"),
        E::HeaderTooLarge => format!("has a header length field that claims {claim} bytes, more than the 100 MB a safetensors header may have; it is damaged or of another format"),
        E::InvalidHeaderLength => format!("has a header length field that claims {claim} bytes, more than the file holds ({len} bytes in all): it is truncated or of another format"),
        E::InvalidHeader => "has a header that is not UTF-8 text; it is damaged or of another format".into(),
        E::InvalidHeaderStart => "has a header that does not start with '{'; it is damaged or of another format".into(),
        E::InvalidHeaderDeserialization => "has a header that is not the JSON a safetensors file holds; it is damaged".into(),
        E::MetadataIncompleteBuffer => format!("is {len} bytes, but its header places its tensors' data elsewhere: it is truncated, or has bytes past its data"),
        E::InvalidOffset(name) => format!("gives tensor {name} a byte range that does not follow the previous tensor's: its header is damaged"),
        E::TensorInvalidInfo => "has a tensor whose byte range does not fit its shape and dtype: its header is damaged".into(),
        E::ValidationOverflow => "has a tensor whose shape or byte range overflows: its header is damaged".into(),
        other => format!("cannot be read ({other:?})"),
    };
    anyhow!("{p} is not a valid safetensors file: it {why}")
}

/// The modeconn metadata of a `.safetensors` checkpoint, read from its
/// header alone (no tensor data is read); `None` for files without it and
/// for `.pt`/`.pth` files.
pub fn read_meta(path: &Path) -> Result<Option<Meta>> {
    match header_entry(path, META_KEY)? {
        Some(s) => Ok(Some(parse_meta(&s, path)?)),
        None => Ok(None),
    }
}

/// The modeconn metadata of `path`, parsed and checked: a normalisation
/// whose std is 0 (or not finite) would turn every metric into inf or NaN.
fn parse_meta(s: &str, path: &Path) -> Result<Meta> {
    let m: Meta = serde_json::from_str(s)
        .with_context(|| format!("{}: unreadable modeconn metadata", path.display()))?;
    let bad =
        |v: &[f64], positive: bool| v.iter().any(|x| !x.is_finite() || (positive && *x <= 0.0));
    if m.norm_mean.len() != m.norm_std.len() || bad(&m.norm_mean, false) || bad(&m.norm_std, true) {
        bail!(
            "{}: its metadata records the normalisation mean {:?} and std {:?}; each channel needs a finite mean and a positive, finite std. Fix the metadata, or import the weights without it",
            path.display(),
            m.norm_mean,
            m.norm_std
        );
    }
    if m.classes.is_empty() {
        bail!("{}: its metadata lists no classes", path.display());
    }
    Ok(m)
}

/// The header metadata entry `key` of a `.safetensors` file, read from its
/// header alone; `None` when absent (and for `.pt`/`.pth` files).
pub fn header_entry(path: &Path, key: &str) -> Result<Option<String>> {
    use std::io::Read;
    if matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("pt" | "pth" | "bin")
    ) {
        return Ok(None);
    }
    if !path.is_file() {
        bail!("checkpoint {} is not a regular file", path.display());
    }
    let mut f = fs::File::open(path)
        .with_context(|| format!("checkpoint {} cannot be opened", path.display()))?;
    let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .with_context(|| format!("{} is too short to be a safetensors file", path.display()))?;
    let n = u64::from_le_bytes(len);
    // A header can be no longer than the file (nor than 100 MiB): nothing
    // is allocated for a length the file cannot back.
    if n > (100 << 20) || n > file_len.saturating_sub(8) {
        bail!(
            "{} is not a valid safetensors file (its header claims {n} bytes; the file has {file_len})",
            path.display()
        );
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .with_context(|| format!("{} is truncated (incomplete header)", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&header)
        .with_context(|| format!("{} has an unreadable safetensors header", path.display()))?;
    Ok(v.get("__metadata__")
        .and_then(|m| m.get(key))
        .and_then(|s| s.as_str())
        .map(str::to_string))
}

/// Orders loaded tensors as `order` lists them (spec order); unknown keys go last.
pub fn in_order(tensors: Vec<(String, Tensor)>, order: &[String]) -> Params {
    let mut map: HashMap<String, Tensor> = tensors.into_iter().collect();
    let mut entries = Vec::new();
    for n in order {
        if let Some(t) = map.remove(n) {
            entries.push((n.clone(), t));
        }
    }
    let mut rest: Vec<_> = map.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    entries.extend(rest);
    Params::new(entries)
}

pub fn save_model(path: &Path, params: &Params, meta: &Meta) -> Result<()> {
    write_tensors(path, &params.to_state_dict(), Some(meta))
}

/// Saves every bend of a curve (weights) plus metadata.
pub fn save_curve(path: &Path, curve: &Curve, meta: &Meta) -> Result<()> {
    let mut all = Vec::new();
    for (k, b) in curve.bends.iter().enumerate() {
        for (n, t) in b.to_state_dict() {
            all.push((format!("bend{k}.{n}"), t));
        }
    }
    write_tensors(path, &all, Some(meta))
}

/// Splits `bend<k>.<param>` keys back into bends.
pub fn split_bends(
    tensors: Vec<(String, Tensor)>,
    n: usize,
    path: &Path,
) -> Result<Vec<Vec<(String, Tensor)>>> {
    let mut bends: Vec<Vec<(String, Tensor)>> = (0..n).map(|_| Vec::new()).collect();
    for (name, t) in tensors {
        let rest = name.strip_prefix("bend").ok_or_else(|| {
            anyhow!(
                "{}: key {name} is not of the form bend<k>.<param>",
                path.display()
            )
        })?;
        let (k, p) = rest
            .split_once('.')
            .ok_or_else(|| anyhow!("{}: malformed key {name}", path.display()))?;
        let k: usize = k
            .parse()
            .map_err(|_| anyhow!("{}: malformed key {name}", path.display()))?;
        if k >= n {
            bail!(
                "{}: key {name} refers to bend {k}, but the metadata says {n} bends",
                path.display()
            );
        }
        bends[k].push((p.to_string(), t));
    }
    Ok(bends)
}

/// Standard file names inside an experiment directory.
pub fn model_file(dir: &Path) -> PathBuf {
    dir.join("model.safetensors")
}
pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.safetensors")
}
pub fn curve_file(dir: &Path) -> PathBuf {
    dir.join("curve.safetensors")
}

#[cfg(test)]
pub(crate) mod tests;
