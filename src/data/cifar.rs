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
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).with_context(corrupt)?;
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
mod tests {
    use super::*;

    fn pixel(split: &RawSplit, i: usize, y: usize, x: usize, c: usize) -> u8 {
        split.images[i * PIXELS + (y * SIDE + x) * 3 + c]
    }

    /// CIFAR-10 files: train batch b has 2 records with labels (2b, 2b+1), test 3 records.
    fn cifar10_files(with_meta: bool) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = CIFAR10
            .train
            .iter()
            .enumerate()
            .map(|(b, name)| {
                (
                    name.to_string(),
                    fake_records(2, &|i| vec![(2 * b + i) as u8]),
                )
            })
            .collect();
        files.push((
            "test_batch.bin".into(),
            fake_records(3, &|i| vec![9 - i as u8]),
        ));
        if with_meta {
            let meta = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n";
            files.push(("batches.meta.txt".into(), meta.into()));
        }
        files
    }

    fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) {
        fs::create_dir_all(dir).unwrap();
        for (name, bytes) in files {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }

    fn write_tar_gz(path: &Path, prefix: &str, files: &[(String, Vec<u8>)]) {
        let gz =
            flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("{prefix}/{name}"), bytes.as_slice())
                .unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }

    fn check_cifar10(ds: &RawDataset) {
        assert_eq!((ds.height, ds.width, ds.channels), (32, 32, 3));
        assert_eq!((ds.train.n, ds.test.n), (10, 3));
        assert_eq!(ds.train.labels, (0..10).collect::<Vec<u32>>());
        assert_eq!(ds.test.labels, vec![9, 8, 7]);
        assert_eq!(ds.train.images.len(), 10 * PIXELS);
        // Record 3 (batch 2, second record), y=5, x=4, blue.
        assert_eq!(pixel(&ds.train, 3, 5, 4, 2), (1 + 14 + 5 + 12) as u8);
        assert_eq!(pixel(&ds.test, 2, 31, 31, 0), (2 + 31 + 93) as u8);
    }

    #[test]
    fn cifar10_dir_subdir_and_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = vec![tmp.path().to_path_buf()];

        write_files(
            &tmp.path().join("cifar-10-batches-bin"),
            &cifar10_files(false),
        );
        let ds = load(DatasetKind::Cifar10, &dirs, None).unwrap();
        check_cifar10(&ds);
        assert_eq!(ds.source, tmp.path().join("cifar-10-batches-bin"));
        assert_eq!(ds.classes[1], "automobile");

        let flat = tempfile::tempdir().unwrap();
        write_files(flat.path(), &cifar10_files(true));
        let ds = load(DatasetKind::Cifar10, &[flat.path().to_path_buf()], None).unwrap();
        check_cifar10(&ds);
        assert_eq!(
            ds.classes,
            "abcdefghij".chars().map(String::from).collect::<Vec<_>>()
        );

        let arch = tempfile::tempdir().unwrap();
        let archive = arch.path().join("cifar-10-binary.tar.gz");
        write_tar_gz(&archive, "cifar-10-batches-bin", &cifar10_files(true));
        let ds = load(DatasetKind::Cifar10, &[arch.path().to_path_buf()], None).unwrap();
        check_cifar10(&ds);
        assert_eq!(ds.source, archive);
        assert_eq!(ds.classes[9], "j");
    }

    #[test]
    fn cifar100_fine_labels() {
        let files = vec![
            (
                "train.bin".to_string(),
                fake_records(4, &|i| vec![i as u8, 50 + i as u8]),
            ),
            ("test.bin".to_string(), fake_records(1, &|_| vec![19, 99])),
        ];
        let tmp = tempfile::tempdir().unwrap();
        write_files(&tmp.path().join("cifar-100-binary"), &files);
        let ds = load(DatasetKind::Cifar100, &[tmp.path().to_path_buf()], None).unwrap();
        assert_eq!(ds.train.labels, vec![50, 51, 52, 53]);
        assert_eq!(ds.test.labels, vec![99]);
        assert_eq!(ds.classes.len(), 100);
        assert_eq!(ds.classes[7], "class_7");
        assert_eq!(pixel(&ds.train, 1, 0, 1, 1), (1 + 7 + 3) as u8);

        let arch = tempfile::tempdir().unwrap();
        let mut with_names = files.clone();
        let names: String = (0..100).map(|i| format!("fine{i}\n")).collect();
        with_names.push(("fine_label_names.txt".into(), names.into()));
        write_tar_gz(
            &arch.path().join("cifar-100-binary.tar.gz"),
            "cifar-100-binary",
            &with_names,
        );
        let ds = load(DatasetKind::Cifar100, &[arch.path().to_path_buf()], None).unwrap();
        assert_eq!(ds.train.labels, vec![50, 51, 52, 53]);
        assert_eq!(ds.classes[99], "fine99");
    }

    fn load_err(files: &[(String, Vec<u8>)]) -> String {
        let tmp = tempfile::tempdir().unwrap();
        write_files(tmp.path(), files);
        format!(
            "{:#}",
            load(DatasetKind::Cifar10, &[tmp.path().to_path_buf()], None).unwrap_err()
        )
    }

    #[test]
    fn bad_cifar_files_are_named() {
        let mut files = cifar10_files(false);
        files[2].1.truncate(PIXELS + 10);
        let err = load_err(&files);
        assert!(
            err.contains("data_batch_3.bin") && err.contains("truncated"),
            "{err}"
        );

        let mut files = cifar10_files(false);
        files[5].1[0] = 10;
        let err = load_err(&files);
        assert!(
            err.contains("test_batch.bin") && err.contains("out of range"),
            "{err}"
        );

        let mut files = cifar10_files(false);
        files.remove(4);
        let err = load_err(&files);
        assert!(
            err.contains("data_batch_5.bin") && err.contains("incomplete"),
            "{err}"
        );

        let mut files = cifar10_files(false);
        files.push(("batches.meta.txt".into(), b"a\nb\n".to_vec()));
        let err = load_err(&files);
        assert!(
            err.contains("batches.meta.txt") && err.contains("class names"),
            "{err}"
        );

        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("cifar-10-binary.tar.gz");
        write_tar_gz(&archive, "x", &cifar10_files(false));
        let bytes = fs::read(&archive).unwrap();
        fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
        let err = format!(
            "{:#}",
            load(DatasetKind::Cifar10, &[tmp.path().to_path_buf()], None).unwrap_err()
        );
        assert!(err.contains("cifar-10-binary.tar.gz"), "{err}");
    }
}
