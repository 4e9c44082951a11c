//! `torch.save` state dicts, read without libtorch's unpickler, which
//! trusts a file's pickle (a storage record shorter than its tensors is
//! read past its end, giving values that are not in the file; a deflated
//! record is inflated whole) and cannot read `model.state_dict()` at all
//! (an OrderedDict). The zip directory is read here, the pickle is scanned
//! without running it ([`super::pickle`]), every storage must have a record
//! of exactly its size and every tensor must lie inside its storage; every
//! record is inflated within its declared size (all of them within
//! [`CHECKPOINT_MAX`]) and checked against its CRC-32. The tensors are then
//! built from the records, and must be finite.

use std::collections::HashMap;
use std::fs;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::{Kind, Tensor};
use zip::{CompressionMethod, ZipArchive};

use super::pickle::{self, Scan, TensorRef};
use super::{NamedTensors, CHECKPOINT_MAX};

/// The size limit for a state dict's pickle: far above any real one (tens
/// of bytes per tensor).
const PICKLE_MAX: u64 = 256 << 20;

const FIX: &str = "save it again with torch.save(model.state_dict(), path), or as safetensors";

/// One record as the zip's central directory declares it.
struct Entry {
    name: String,
    deflated: bool,
    size: u64,
    crc: u32,
}

type Zip = ZipArchive<BufReader<fs::File>>;

/// The tensors of a `torch.save` state dict, sorted by name, each a
/// contiguous CPU tensor of its own.
pub(crate) fn read(path: &Path) -> Result<NamedTensors> {
    let p = path.display();
    let (scan, records) = verify(path)?;
    let mut out = Vec::with_capacity(scan.entries.len());
    for (name, t) in &scan.entries {
        let bytes = records
            .get(&t.storage.key)
            .ok_or_else(|| anyhow!("{p}: storage {} was not read", t.storage.key))?;
        let tensor =
            build(t, bytes).map_err(|e| anyhow!("{p}: tensor {name} cannot be built: {e}"))?;
        let floating = matches!(
            t.kind,
            Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double
        );
        let finite =
            || -> Result<bool> { Ok(tensor.f_isfinite()?.f_all()?.f_int64_value(&[])? == 1) };
        if floating
            && !finite().map_err(|e| anyhow!("{p}: tensor {name}: {}", libtorch_message(&e)))?
        {
            bail!("{p}: tensor {name} holds NaN or infinite values, so no network built from it can be evaluated; save finite weights");
        }
        out.push((name.clone(), tensor));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The view `t` describes, copied out of its storage's bytes (checked to
/// hold it) into a contiguous tensor.
fn build(t: &TensorRef, bytes: &[u8]) -> Result<Tensor, String> {
    let dims = |v: &[u64]| {
        v.iter()
            .map(|&x| i64::try_from(x).ok())
            .collect::<Option<Vec<i64>>>()
    };
    let (size, stride) = dims(&t.size)
        .zip(dims(&t.stride))
        .ok_or("its shape is too large")?;
    let torch = |e: tch::TchError| libtorch_message(&e);
    if t.numel() == Some(0) {
        return Tensor::f_zeros(size.as_slice(), (t.kind, tch::Device::Cpu)).map_err(torch);
    }
    // The elements it reaches, [first, end) in bytes (check_extent bounds them).
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .map(|(&n, &s)| (n - 1) * s)
        .sum::<u64>();
    let (first, end) = (t.offset * t.elem, (t.offset + last + 1) * t.elem);
    let span = usize::try_from(first)
        .ok()
        .zip(usize::try_from(end).ok())
        .and_then(|(a, b)| bytes.get(a..b))
        .ok_or("it reaches past its storage")?;
    if t.kind == Kind::Bool && span.iter().any(|&b| b > 1) {
        return Err(
            "it is a bool tensor with bytes other than 0 and 1: the file is damaged".into(),
        );
    }
    let n = (span.len() as u64 / t.elem) as i64;
    let flat = Tensor::f_from_data_size(span, &[n], t.kind).map_err(torch)?;
    flat.f_as_strided(size.as_slice(), stride.as_slice(), 0)
        .and_then(|v| v.f_contiguous())
        .map_err(torch)
}

/// libtorch's error without its C++ backtrace (all of it with
/// `MODECONN_BACKTRACE=1` or `RUST_BACKTRACE` set).
pub(crate) fn libtorch_message(e: &dyn std::fmt::Display) -> String {
    let full = std::env::var("MODECONN_BACKTRACE").is_ok_and(|v| v == "1")
        || std::env::var_os("RUST_BACKTRACE").is_some_and(|v| !v.is_empty() && v != "0");
    shorten(&e.to_string(), full)
}

/// The first line of a libtorch error, or all of it when `full`.
fn shorten(s: &str, full: bool) -> String {
    if full {
        return s.to_string();
    }
    let first = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    first
        .strip_prefix("Internal torch error: ")
        .unwrap_or(first)
        .to_string()
}

/// The bytes of each storage, by key.
pub(crate) type Records = HashMap<String, Vec<u8>>;

/// Checks `path` as a `torch.save` zip file; returns what its pickle
/// describes and the bytes of its storages.
pub(crate) fn verify(path: &Path) -> Result<(Scan, Records)> {
    let p = path.display();
    let meta = fs::metadata(path).with_context(|| format!("cannot read {p}"))?;
    if !meta.is_file() {
        bail!("checkpoint {p} is not a regular file");
    }
    let len = meta.len();
    if len > CHECKPOINT_MAX {
        bail!("{p} is {len} bytes, more than a checkpoint may be ({CHECKPOINT_MAX}); refused");
    }
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {p}"))?;
    let mut head = Vec::with_capacity(16);
    (&mut f)
        .take(16)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {p}"))?;
    if !head.starts_with(b"PK\x03\x04") {
        return Err(not_zip(path, &head));
    }
    let mut zip = ZipArchive::new(BufReader::new(f)).map_err(|e| {
        anyhow!(
            "{p}: its zip directory cannot be read ({e}): the file is truncated or damaged; {FIX}"
        )
    })?;
    if zip.offset() != 0 {
        bail!("{p} has bytes before its zip archive, which torch.save never writes; {FIX}");
    }
    let entries = directory(&mut zip, path, len)?;
    let index: HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    if index.len() != entries.len() {
        bail!("{p} has two records of the same name; {FIX}");
    }
    // torch.save puts every record in one folder; the first record's is it.
    let prefix = entries
        .first()
        .and_then(|e| e.name.split_once('/'))
        .map(|(d, _)| d.to_string())
        .ok_or_else(|| anyhow!("{p} is a zip archive, but not one torch.save wrote (no records in a folder); {FIX}"))?;
    let has = |n: &str| index.contains_key(format!("{prefix}/{n}").as_str());
    if has("constants.pkl")
        || entries
            .iter()
            .any(|e| e.name.starts_with(&format!("{prefix}/code/")))
    {
        bail!("{p} is a TorchScript archive (torch.jit.save), not a state dict: use it with --arch torchscript --model-file {p}, or save model.state_dict() with torch.save");
    }
    let pkl_name = format!("{prefix}/data.pkl");
    let &pi = index.get(pkl_name.as_str()).ok_or_else(|| {
        anyhow!("{p} has no {pkl_name}, so it is not a file torch.save wrote; {FIX}")
    })?;
    if entries[pi].size > PICKLE_MAX {
        bail!(
            "{p}: its pickle {pkl_name} is {} bytes, far more than a state dict's; refused",
            entries[pi].size
        );
    }
    let mut pkl = Vec::new();
    check_record(&mut zip, pi, &entries[pi], Some(&mut pkl))
        .map_err(|why| anyhow!("{p}: record {pkl_name} {why}; {FIX}"))?;
    let scan = pickle::scan(&pkl).map_err(|why| anyhow!("{p}: its pickle ({pkl_name}) {why}"))?;
    // A view may repeat few stored values many times (stride 0): what the
    // tensors take once copied out is bounded too.
    let built = scan.entries.iter().try_fold(0u64, |a, (_, t)| {
        t.numel()?.checked_mul(t.elem)?.checked_add(a)
    });
    if built.is_none_or(|b| b > CHECKPOINT_MAX) {
        bail!("{p}: its tensors would take more than {CHECKPOINT_MAX} bytes once built (views that repeat their values?); refused");
    }
    let mut storage_of: HashMap<usize, &str> = HashMap::new();
    for s in &scan.storages {
        let name = format!("{prefix}/data/{}", s.key);
        let what = format!(
            "storage {} ({} elements of {})",
            s.key, s.numel, s.kind_name
        );
        let &i = index.get(name.as_str()).ok_or_else(|| {
            anyhow!("{p}: {what} has no record {name}: the file is incomplete; {FIX}")
        })?;
        let need = s
            .bytes()
            .ok_or_else(|| anyhow!("{p}: {what} is larger than any file"))?;
        let have = entries[i].size;
        if have < need {
            bail!("{p}: {what} needs {need} bytes, but its record {name} holds only {have}: the file is truncated; {FIX}");
        }
        if have > need {
            bail!("{p}: {what} needs {need} bytes, but its record {name} holds {have}: the file is damaged; {FIX}");
        }
        storage_of.insert(i, &s.key);
    }
    let mut records = Records::new();
    let order_name = format!("{prefix}/byteorder");
    for (i, e) in entries.iter().enumerate().filter(|&(i, _)| i != pi) {
        let key = storage_of.get(&i);
        let mut bytes = Vec::new();
        let keep = (key.is_some() || e.name == order_name).then_some(&mut bytes);
        check_record(&mut zip, i, e, keep)
            .map_err(|why| anyhow!("{p}: record {} {why}; {FIX}", e.name))?;
        if let Some(k) = key {
            records.insert(k.to_string(), bytes);
        } else if e.name == order_name && bytes.trim_ascii() != b"little" {
            bail!(
                "{p} was written on a big-endian machine ({order_name} says {:?}); save it again on a little-endian one",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    Ok((scan, records))
}

/// The records of the central directory, each stored or deflated, inside
/// the file, and all of them together no larger than [`CHECKPOINT_MAX`].
fn directory(zip: &mut Zip, path: &Path, file_len: u64) -> Result<Vec<Entry>> {
    let p = path.display();
    let mut out = Vec::new();
    let mut total = 0u64;
    for i in 0..zip.len() {
        let f = zip.by_index(i).map_err(|e| {
            anyhow!(
                "{p}: zip record {i} cannot be read ({e}): the file is truncated or damaged; {FIX}"
            )
        })?;
        let name = f.name().to_string();
        let deflated = match f.compression() {
            CompressionMethod::Stored => false,
            CompressionMethod::Deflated => true,
            m => bail!("{p}: record {name} is compressed with {m}; torch.save stores records as they are (libtorch reads only stored or deflated ones); {FIX}"),
        };
        if !deflated && f.compressed_size() != f.size() {
            bail!("{p}: record {name} is stored, but its directory entry gives it two sizes ({} and {}): the file is damaged; {FIX}", f.compressed_size(), f.size());
        }
        if f.data_start()
            .checked_add(f.compressed_size())
            .is_none_or(|end| end > file_len)
        {
            bail!("{p}: record {name} runs past the end of the file: it is truncated; {FIX}");
        }
        total = total
            .checked_add(f.size())
            .filter(|&t| t <= CHECKPOINT_MAX)
            .ok_or_else(|| anyhow!("{p}: its records would inflate to more than {CHECKPOINT_MAX} bytes, far more than any network's; refused"))?;
        out.push(Entry {
            name,
            deflated,
            size: f.size(),
            crc: f.crc32(),
        });
    }
    Ok(out)
}

/// Reads record `i` through: it must inflate to exactly its declared size
/// (never more is inflated) and match its CRC-32 (torch.save writes 0
/// when told not to compute it). `keep` receives its bytes.
fn check_record(
    zip: &mut Zip,
    i: usize,
    e: &Entry,
    mut keep: Option<&mut Vec<u8>>,
) -> Result<(), String> {
    let raw = zip
        .by_index_raw(i)
        .map_err(|err| format!("cannot be read ({err})"))?;
    let inner: Box<dyn Read + '_> = if e.deflated {
        Box::new(flate2::read::DeflateDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let mut r = inner.take(e.size.saturating_add(1));
    let mut crc = flate2::Crc::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = r
            .read(&mut buf)
            .map_err(|err| format!("cannot be inflated ({err}): the file is damaged"))?;
        if k == 0 {
            break;
        }
        crc.update(&buf[..k]);
        if let Some(v) = keep.as_deref_mut() {
            v.extend_from_slice(&buf[..k]);
        }
        n += k as u64;
    }
    if n > e.size {
        return Err(format!(
            "inflates to more than the {} bytes its directory entry declares (a zip bomb?)",
            e.size
        ));
    }
    if n < e.size {
        return Err(format!(
            "holds {n} of the {} bytes its directory entry declares: the file is truncated or damaged",
            e.size
        ));
    }
    if e.crc != 0 && crc.sum() != e.crc {
        return Err("does not match its CRC-32: the file is damaged".into());
    }
    Ok(())
}

/// Why a file that is not a zip archive is no state dict modeconn reads.
fn not_zip(path: &Path, head: &[u8]) -> anyhow::Error {
    let p = path.display();
    // pickle.dump of torch's legacy magic number, 0x1950a86a20f9469cfc6c.
    const LEGACY: [u8; 14] = [
        0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
    ];
    let convert = "convert it with PyTorch 1.6 or later: torch.save(torch.load(p), q) writes the zip format modeconn reads, and safetensors.torch.save_file(torch.load(p), 'model.safetensors') writes safetensors";
    if head.starts_with(&LEGACY) {
        anyhow!("{p} is in PyTorch's legacy format (torch.save before PyTorch 1.6, or with _use_new_zipfile_serialization=False), which modeconn does not read; {convert}")
    } else if head.first() == Some(&0x80) {
        anyhow!("{p} is a bare pickle, not the zip archive torch.save writes since PyTorch 1.6; if it is a state dict, {convert}")
    } else if head.len() > 8 && head[8] == b'{' {
        anyhow!("{p} looks like a safetensors file: rename it to end in .safetensors")
    } else if head.len() < 4 {
        anyhow!(
            "{p} is only {} bytes long, so it is no state dict; {FIX}",
            head.len()
        )
    } else {
        anyhow!("{p} is not a PyTorch state dict (torch.save writes a zip archive, which starts with PK; this file starts with {:02x?}); {FIX}", &head[..4])
    }
}

#[cfg(test)]
mod tests;
