//! Checkpoints: safetensors files with PyTorch state-dict keys and a JSON
//! metadata entry, always written atomically (temp file, fsync, rename).
//!
//! * `model.safetensors`: one network, keys exactly as `nn.Module.state_dict()`
//!   (`features.0.weight`, `bn.running_mean`, ...), loadable with
//!   `safetensors.torch.load_file` + `load_state_dict`.
//! * `curve.safetensors`: every bend of a curve, keys `bend<k>.<param>`.
//! * `state.safetensors`: parameters plus optimiser state for `--resume`.
//!
//! Imports also read PyTorch `.pt`/`.pth` state dicts (`torch.save`'s zip
//! format) through libtorch's pickle loader.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::curve::{Curve, CurveKind};
use crate::model::{ArchConfig, Params};

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

/// What marks modeconn's temporary files: `.<name>.modeconn-tmp.<pid>.<n>`.
const TMP_TAG: &str = ".modeconn-tmp.";

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory with a name no other write uses, created exclusively (an
/// existing file or a planted link there is an error, never followed),
/// flushed and synced, then renamed over the target (a link at the target
/// is replaced, not followed). The temporary file is removed on any error;
/// one left by a killed process is removed by [`sweep_temp_files`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}{TMP_TAG}{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_new(&tmp, bytes).and_then(|_| {
        fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
    });
    if written.is_err() {
        // Best effort: the error that matters is the one returned.
        fs::remove_file(&tmp).ok();
    }
    written
}

/// Creates `path` (which must not exist, and is never followed if it is a
/// link) and writes `bytes` to disk.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Removes the temporary files of processes that no longer run (killed, or
/// stopped by a full disk, in the middle of a write) from `dir` and its
/// subfolders, two levels deep. Returns what it removed.
pub fn sweep_temp_files(dir: &Path) -> Vec<PathBuf> {
    fn stale(name: &str) -> bool {
        let Some((_, rest)) = name.split_once(TMP_TAG) else {
            return false;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<i32>().ok()) else {
            return false;
        };
        // kill(pid, 0) fails with ESRCH when no such process exists.
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        !alive
    }
    let mut removed = Vec::new();
    let mut dirs = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name().to_string_lossy().into_owned();
            if ft.is_dir() && depth < 2 {
                dirs.push((e.path(), depth + 1));
            } else if ft.is_file() && stale(&name) && fs::remove_file(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
    }
    removed
}

/// The bytes of a regular file of at most `max` bytes. Anything else a
/// hostile directory may hold in its place (a FIFO that would block, a
/// device, a directory, a file far larger than such a file can be) is an
/// error naming it.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a regular file; remove it (modeconn rewrites it when the step that makes it runs)",
            path.display()
        );
    }
    if meta.len() > max {
        bail!(
            "{} is {} bytes, far more than such a file holds (at most {max}); remove it",
            path.display(),
            meta.len()
        );
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut buf))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(buf)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> Result<String> {
    String::from_utf8(read_regular(path, max)?)
        .map_err(|_| anyhow!("{} is not UTF-8 text; remove it", path.display()))
}

/// The size limit for the JSON files of an experiment (config, logs, eval
/// results, planes): far above any real one.
pub const JSON_MAX: u64 = 256 << 20;

/// The size limit for a checkpoint: far above any network modeconn builds.
pub const CHECKPOINT_MAX: u64 = 16 << 30;

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
    let bytes: Vec<(String, TensorBytes)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), to_bytes(t)?)))
        .collect::<Result<_>>()?;
    let views: Vec<(&str, &TensorBytes)> = bytes.iter().map(|(n, b)| (n.as_str(), b)).collect();
    let mut header = HashMap::new();
    if let Some(m) = meta {
        header.insert(META_KEY.to_string(), serde_json::to_string(m)?);
        header.insert("format".to_string(), "pt".to_string());
    }
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
        "pt" | "pth" | "bin" => {
            let ts = Tensor::loadz_multi(path).map_err(|e| {
                anyhow!("cannot read {} as a PyTorch state dict ({e}); save it with torch.save(model.state_dict(), path) or as safetensors", path.display())
            })?;
            Ok((ts, None))
        }
        _ => {
            let buf = read_regular(path, CHECKPOINT_MAX)?;
            let st = SafeTensors::deserialize(&buf).map_err(|e| {
                anyhow!("{} is not a valid safetensors file ({e:?}); it may be truncated or of another format", path.display())
            })?;
            let (_, header) = SafeTensors::read_metadata(&buf)
                .map_err(|e| anyhow!("{}: {e:?}", path.display()))?;
            let meta = match header.metadata().as_ref().and_then(|m| m.get(META_KEY)) {
                Some(s) => Some(serde_json::from_str(s).with_context(|| {
                    format!("{}: unreadable modeconn metadata", path.display())
                })?),
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

/// The modeconn metadata of a `.safetensors` checkpoint, read from its
/// header alone (no tensor data is read); `None` for files without it and
/// for `.pt`/`.pth` files.
pub fn read_meta(path: &Path) -> Result<Option<Meta>> {
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
    match v
        .get("__metadata__")
        .and_then(|m| m.get(META_KEY))
        .and_then(|s| s.as_str())
    {
        Some(s) => Ok(Some(serde_json::from_str(s).with_context(|| {
            format!("{}: unreadable modeconn metadata", path.display())
        })?)),
        None => Ok(None),
    }
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
pub(crate) mod tests {
    use super::*;
    use crate::model::{ArchConfig, ArchKind};

    pub(crate) fn sample_meta() -> Meta {
        Meta {
            arch: ArchConfig::new(ArchKind::SeedConvnet, 1, 10, 28, 28),
            dataset: crate::data::DatasetKind::FashionMnist,
            normalize: crate::loader::Normalize::None,
            norm_mean: vec![0.0],
            norm_std: vec![1.0],
            classes: (0..10).map(|i| i.to_string()).collect(),
            epoch: 3,
            curve: None,
            note: String::new(),
        }
    }

    #[test]
    fn metadata_is_read_from_the_header_alone_and_matches_the_full_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let meta = sample_meta();
        let t = vec![("w".to_string(), Tensor::from_slice(&[1.0f32, 2.0]))];
        write_tensors(&p, &t, Some(&meta)).unwrap();
        assert_eq!(read_meta(&p).unwrap(), Some(meta.clone()));
        assert_eq!(read_tensors(&p).unwrap().1, Some(meta));
        // a truncated header is an error naming the file, not a panic
        let bytes = fs::read(&p).unwrap();
        let q = dir.path().join("cut.safetensors");
        fs::write(&q, &bytes[..20]).unwrap();
        let e = read_meta(&q).unwrap_err().to_string();
        assert!(e.contains("cut.safetensors"), "{e}");
    }

    #[test]
    fn identical_checkpoints_are_identical_files() {
        let dir = tempfile::tempdir().unwrap();
        let t = vec![
            ("b".to_string(), Tensor::from_slice(&[1.0f32, 2.0])),
            ("a".to_string(), Tensor::from_slice(&[3i64])),
        ];
        let first = dir.path().join("0.safetensors");
        write_tensors(&first, &t, Some(&sample_meta())).unwrap();
        let bytes = fs::read(&first).unwrap();
        // The metadata map's order was random per HashMap: 16 tries.
        for i in 1..16 {
            let p = dir.path().join(format!("{i}.safetensors"));
            write_tensors(&p, &t, Some(&sample_meta())).unwrap();
            assert_eq!(fs::read(&p).unwrap(), bytes, "write {i} differs");
        }
        assert_eq!(read_tensors(&first).unwrap().1, Some(sample_meta()));
    }

    #[test]
    fn a_header_longer_than_its_file_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("liar.safetensors");
        let mut bytes = (90u64 << 20).to_le_bytes().to_vec(); // claims 90 MiB
        bytes.extend_from_slice(b"{}      ");
        fs::write(&p, &bytes).unwrap();
        let e = read_meta(&p).unwrap_err().to_string();
        assert!(
            e.contains("liar.safetensors") && e.contains("claims"),
            "{e}"
        );
        assert!(read_tensors(&p).is_err());
    }

    #[test]
    fn writes_never_follow_a_planted_link_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let planted = dir.path().join(".x.modeconn-tmp.1.0");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(write_new(&planted, b"evil").is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");

        // A link at the target is replaced, not written through.
        let target = dir.path().join("config.json");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_atomic(&target, b"{}").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(!target.is_symlink());

        // A write that fails (the target is a directory) removes its temp file.
        let sub = dir.path().join("sub");
        fs::create_dir_all(sub.join("busy")).unwrap();
        fs::write(sub.join("busy/x"), b"").unwrap();
        assert!(write_atomic(&sub.join("busy"), b"data").is_err());
        let left: Vec<_> = fs::read_dir(&sub)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("busy")],
            "temp file left: {left:?}"
        );
    }

    #[test]
    fn stale_temporary_files_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dead = {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        let sub = dir.path().join("eval");
        fs::create_dir_all(&sub).unwrap();
        let stale = sub.join(format!(".along.json{TMP_TAG}{dead}.3"));
        let live = sub.join(format!(".along.json{TMP_TAG}{}.4", std::process::id()));
        let other = sub.join("notes.tmp");
        for p in [&stale, &live, &other] {
            fs::write(p, b"x").unwrap();
        }
        assert_eq!(sweep_temp_files(dir.path()), vec![stale.clone()]);
        assert!(!stale.exists() && live.exists() && other.exists());
    }

    #[test]
    fn only_regular_files_of_sane_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.json");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success());
        let e = read_text(&fifo, JSON_MAX).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let big = dir.path().join("big.json");
        fs::write(&big, vec![b' '; 100]).unwrap();
        let e = read_text(&big, 10).unwrap_err().to_string();
        assert!(e.contains("100 bytes"), "{e}");
        assert_eq!(read_text(&big, 100).unwrap().len(), 100);
    }
}
