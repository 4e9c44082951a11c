//! CIFAR-10 and CIFAR-100, binary versions.
//!
//! Records are a label byte (CIFAR-100: coarse then fine label byte) followed
//! by 3072 bytes of 32x32 planar R, G, B; they are converted to HWC here.
//! A source is a directory holding the batch files, the `cifar-10-batches-bin/`
//! (`cifar-100-binary/`) directory inside a search directory, or the official
//! `.tar.gz`, which is read in place without extracting it.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::read::GzDecoder;

use super::{check_labels, not_found, DatasetKind, RawDataset, RawSplit};

const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;
const PIXELS: usize = 3 * PLANE;

const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The layout of one of the two CIFAR binary distributions.
struct Spec {
    subdir: &'static str,
    archive: &'static str,
    train: &'static [&'static str],
    test: &'static str,
    meta: &'static str,
    /// Bytes before the pixels; the label used is the last of them.
    label_bytes: usize,
    num_classes: usize,
}

const CIFAR10: Spec = Spec {
    subdir: "cifar-10-batches-bin",
    archive: "cifar-10-binary.tar.gz",
    train: &[
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
    ],
    test: "test_batch.bin",
    meta: "batches.meta.txt",
    label_bytes: 1,
    num_classes: 10,
};

const CIFAR100: Spec = Spec {
    subdir: "cifar-100-binary",
    archive: "cifar-100-binary.tar.gz",
    train: &["train.bin"],
    test: "test.bin",
    meta: "fine_label_names.txt",
    label_bytes: 2,
    num_classes: 100,
};

impl Spec {
    fn for_kind(kind: DatasetKind) -> &'static Spec {
        if kind == DatasetKind::Cifar100 {
            &CIFAR100
        } else {
            &CIFAR10
        }
    }

    fn default_classes(&self) -> Vec<String> {
        if self.num_classes == 10 {
            CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
        } else {
            (0..self.num_classes)
                .map(|i| format!("class_{i}"))
                .collect()
        }
    }
}

/// Member files by name, each with the path to show in messages.
type Members = HashMap<String, (PathBuf, Vec<u8>)>;

fn read_dir_members(dir: &Path, spec: &Spec, kind: DatasetKind) -> Result<Members> {
    let mut out = Members::new();
    for &name in spec.train.iter().chain([spec.test, spec.meta].iter()) {
        let path = dir.join(name);
        if !path.is_file() {
            if name == spec.meta {
                continue;
            }
            bail!(
                "{kind} in {} is incomplete: {name} is missing; fix: `modeconn download {kind} --data-dir {}`",
                dir.display(),
                dir.display()
            );
        }
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        out.insert(name.to_string(), (path, bytes));
    }
    Ok(out)
}

/// The largest archive member read (CIFAR-100's train.bin is 150 MB).
const MEMBER_MAX: u64 = 512 << 20;

fn read_archive_members(archive: &Path, spec: &Spec, kind: DatasetKind) -> Result<Members> {
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let corrupt = || format!("{}: corrupt or truncated archive", archive.display());
    let wanted: Vec<&str> = spec
        .train
        .iter()
        .copied()
        .chain([spec.test, spec.meta])
        .collect();
    let mut out = Members::new();
    for entry in tar.entries().with_context(corrupt)? {
        let mut entry = entry.with_context(corrupt)?;
        let path = entry.path().with_context(corrupt)?.into_owned();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| wanted.contains(n))
        else {
            continue;
        };
        let name = name.to_string();
        // The size a tar header claims is not trusted for an allocation.
        if entry.size() > MEMBER_MAX {
            bail!(
                "{}: member {name} claims {} bytes, more than any {kind} file holds (at most {MEMBER_MAX}); the archive is damaged",
                archive.display(),
                entry.size()
            );
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        (&mut entry)
            .take(MEMBER_MAX)
            .read_to_end(&mut bytes)
            .with_context(corrupt)?;
        out.insert(name, (archive.join(path), bytes));
    }
    if let Some(missing) = wanted
        .iter()
        .find(|&&n| n != spec.meta && !out.contains_key(n))
    {
        bail!(
            "{}: archive has no {missing}; is it the {kind} binary version? fix: `modeconn download {kind} --data-dir {}`",
            archive.display(),
            archive.parent().unwrap_or(Path::new(".")).display()
        );
    }
    Ok(out)
}

/// Decodes fixed-size records into an HWC split.
fn parse_records(bytes: &[u8], spec: &Spec, file: &Path) -> Result<RawSplit> {
    let rec_len = spec.label_bytes + PIXELS;
    if bytes.is_empty() || !bytes.len().is_multiple_of(rec_len) {
        bail!(
            "{}: truncated or corrupt CIFAR batch: {} bytes is not a positive multiple of the {rec_len}-byte record",
            file.display(),
            bytes.len()
        );
    }
    let n = bytes.len() / rec_len;
    let mut images = vec![0u8; n * PIXELS];
    let mut labels = Vec::with_capacity(n);
    for (rec, out) in bytes
        .chunks_exact(rec_len)
        .zip(images.chunks_exact_mut(PIXELS))
    {
        labels.push(u32::from(rec[spec.label_bytes - 1]));
        let px = &rec[spec.label_bytes..];
        for (p, hwc) in out.chunks_exact_mut(3).enumerate() {
            hwc.copy_from_slice(&[px[p], px[PLANE + p], px[2 * PLANE + p]]);
        }
    }
    check_labels(&labels, spec.num_classes, file)?;
    Ok(RawSplit { images, labels, n })
}

fn class_names(members: &Members, spec: &Spec) -> Result<Vec<String>> {
    let Some((path, bytes)) = members.get(spec.meta) else {
        return Ok(spec.default_classes());
    };
    let text = String::from_utf8_lossy(bytes);
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != spec.num_classes {
        bail!(
            "{}: lists {} class names, expected {}",
            path.display(),
            names.len(),
            spec.num_classes
        );
    }
    Ok(names)
}

pub(crate) fn load(
    kind: DatasetKind,
    dirs: &[PathBuf],
    data_dir: Option<&Path>,
) -> Result<RawDataset> {
    let spec = Spec::for_kind(kind);
    let mut searched = Vec::new();
    let mut members = None;
    for d in dirs {
        for cand in [d.clone(), d.join(spec.subdir)] {
            let found = cand.join(spec.test).is_file() || cand.join(spec.train[0]).is_file();
            searched.push(cand.clone());
            if found {
                members = Some((read_dir_members(&cand, spec, kind)?, cand));
                break;
            }
        }
        if members.is_some() {
            break;
        }
        let archive = d.join(spec.archive);
        searched.push(archive.clone());
        if archive.is_file() {
            members = Some((read_archive_members(&archive, spec, kind)?, archive));
            break;
        }
    }
    let Some((members, source)) = members else {
        return Err(not_found(kind, &searched, data_dir));
    };
    let split = |names: &[&str]| -> Result<RawSplit> {
        let mut out = RawSplit::default();
        for name in names {
            let (path, bytes) = &members[*name];
            let part = parse_records(bytes, spec, path)?;
            out.images.extend_from_slice(&part.images);
            out.labels.extend_from_slice(&part.labels);
            out.n += part.n;
        }
        Ok(out)
    };
    Ok(RawDataset {
        kind,
        classes: class_names(&members, spec)?,
        height: SIDE,
        width: SIDE,
        channels: 3,
        train: split(spec.train)?,
        test: split(&[spec.test])?,
        source,
    })
}

/// Builds `n` records with labels `label_of(i)`; pixel (y, x, c) of record i is
/// `(i + 7*c + y + 3*x) mod 256` so HWC conversion can be checked (test helper).
#[cfg(test)]
pub(crate) fn fake_records(n: usize, label_bytes: &dyn Fn(usize) -> Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        out.extend(label_bytes(i));
        for c in 0..3 {
            for y in 0..SIDE {
                for x in 0..SIDE {
                    out.push((i + 7 * c + y + 3 * x) as u8);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
