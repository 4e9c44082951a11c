//! What a TorchScript archive holds and which archives may be opened: the
//! exporter's metadata (`modeconn_meta`), checked before the module's
//! tensors are used, and the archives the user named on the command line.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The archive's prefix for the user's module (`torch.jit.load(f).net`).
pub(super) const NET: &str = "net.";
pub(super) const META: &str = "modeconn_meta";

/// Which archive a configuration uses: where it is and what it held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptRef {
    /// The archive's absolute path.
    pub path: PathBuf,
    /// MD5 of the archive's bytes, checked on every load.
    pub md5: String,
}

impl ScriptRef {
    /// The reference to the archive at `path` as it is now.
    pub fn of(path: &Path) -> Result<ScriptRef> {
        let abs = std::fs::canonicalize(path).with_context(|| {
            format!(
                "--model-file {}: no such file. Export the network with python/modeconn_export.py first (see docs/GUIDE.md)",
                path.display()
            )
        })?;
        Ok(ScriptRef {
            md5: crate::data::file_md5(&abs)?,
            path: abs,
        })
    }
}

/// What a state-dict entry is to modeconn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryRole {
    /// Trained (a curve's bends hold it).
    Weight,
    /// A BatchNorm running statistic (re-estimated for new points).
    Bn,
    /// Kept at the archive's value: other buffers, frozen parameters.
    Fixed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<i64>,
    pub dtype: String,
    pub role: EntryRole,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BnLayer {
    pub prefix: String,
    /// PyTorch's momentum; None means a cumulative average.
    pub momentum: Option<f64>,
    pub eps: f64,
    #[serde(rename = "type")]
    pub kind: String,
}

/// The exporter's description of the network (`modeconn_meta` in the archive).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScriptMeta {
    pub format: u32,
    pub factory: String,
    #[serde(default)]
    pub kwargs: serde_json::Value,
    pub input_shape: Vec<i64>,
    pub classes: i64,
    pub entries: Vec<Entry>,
    pub batchnorm: Vec<BnLayer>,
    pub method: String,
    #[serde(default)]
    pub torch: String,
}

/// The module's tensor of every metadata entry, in entry order (the
/// archive stores the user's network under `net.`), checked by shape.
pub(super) fn slots_of(
    named: &[(String, Tensor)],
    meta: &ScriptMeta,
    path: &Path,
) -> Result<Vec<Tensor>> {
    meta.entries
        .iter()
        .map(|e| {
            let key = format!("{NET}{}", e.name);
            let t = named
                .iter()
                .find(|(n, _)| *n == key)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| {
                    anyhow!(
                        "{}: the archive lacks '{}', which its metadata lists; export the network again",
                        path.display(),
                        e.name
                    )
                })?;
            if t.size() != e.shape {
                bail!(
                    "{}: '{}' has shape {:?} in the archive but {:?} in its metadata; export the network again",
                    path.display(),
                    e.name,
                    t.size(),
                    e.shape
                );
            }
            Ok(t)
        })
        .collect()
}

pub(super) fn kind_of(dtype: &str) -> Kind {
    match dtype {
        "float64" => Kind::Double,
        "float16" => Kind::Half,
        "bfloat16" => Kind::BFloat16,
        "int64" => Kind::Int64,
        "int32" => Kind::Int,
        "int16" => Kind::Int16,
        "int8" => Kind::Int8,
        "uint8" => Kind::Uint8,
        "bool" => Kind::Bool,
        _ => Kind::Float,
    }
}

pub(super) fn check_meta(meta: &ScriptMeta, path: &Path) -> Result<()> {
    let p = path.display();
    if meta.format != 1 {
        bail!(
            "{p}: archive format {} is newer than this modeconn reads (1); update modeconn",
            meta.format
        );
    }
    if meta.input_shape.len() != 3 || meta.input_shape.iter().any(|&s| s < 1) || meta.classes < 2 {
        bail!(
            "{p}: its metadata gives input shape {:?} and {} classes; export the network again",
            meta.input_shape,
            meta.classes
        );
    }
    if !meta.entries.iter().any(|e| e.role == EntryRole::Weight) {
        bail!(
            "{p}: the network has no trainable parameters, so there is nothing to train or connect"
        );
    }
    for e in &meta.entries {
        if e.role == EntryRole::Weight && e.dtype != "float32" {
            bail!(
                "{p}: parameter '{}' is {}; modeconn trains float32 parameters. Call .float() on the module in its factory and export again",
                e.name,
                e.dtype
            );
        }
        if e.name.is_empty() || e.shape.iter().any(|&s| s < 0) {
            bail!(
                "{p}: its metadata lists a malformed entry '{}'; export the network again",
                e.name
            );
        }
    }
    Ok(())
}

/// Archives the user named on this command line (`--model-file`): the only
/// ones [`ScriptNet::load`] opens, since loading one can run its code.
static TRUSTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Allows [`ScriptNet::load`] to open the archive at `path` (canonical).
pub fn trust(path: &Path) {
    if let Ok(mut t) = TRUSTED.lock() {
        if !t.iter().any(|p| p == path) {
            t.push(path.to_path_buf());
        }
    }
}

pub(super) fn trusted(path: &Path) -> bool {
    TRUSTED
        .lock()
        .map(|t| t.iter().any(|p| p == path))
        .unwrap_or(false)
}

/// Did this command name a TorchScript archive (`--model-file`)?
pub fn any_trusted() -> bool {
    TRUSTED.lock().map(|t| !t.is_empty()).unwrap_or(false)
}
