//! MNIST and Fashion-MNIST: the IDX file format (plain or gzipped).
//!
//! A dataset directory holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each optionally with
//! a `.gz` suffix. Gzip is detected from the content, not only the name.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::read::MultiGzDecoder;

use super::{check_labels, not_found, DatasetKind, RawDataset, RawSplit};

pub(crate) const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The largest expansion accepted from a gzipped IDX file.
const GZ_MAX_RATIO: u64 = 256;

/// Reads a whole file, transparently gunzipping it when it starts with the gzip magic.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    // Real IDX files compress about 2-5 fold; far beyond that is a
    // decompression bomb, refused before it fills the memory.
    let limit = (raw.len() as u64).saturating_mul(GZ_MAX_RATIO) + (1 << 20);
    let mut out = Vec::with_capacity(raw.len() * 4);
    MultiGzDecoder::new(raw.as_slice())
        .take(limit + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("{}: gzip data is corrupt or truncated", path.display()))?;
    if out.len() as u64 > limit {
        bail!(
            "{}: gzip data expands more than {GZ_MAX_RATIO}-fold ({} bytes compressed); refusing what looks like a decompression bomb",
            path.display(),
            raw.len()
        );
    }
    Ok(out)
}

/// Parses an unsigned-byte IDX buffer with `ndim` dimensions; returns the dims and the payload.
fn parse_idx<'a>(bytes: &'a [u8], ndim: usize, file: &Path) -> Result<(Vec<usize>, &'a [u8])> {
    let expected_magic = 0x0800 | ndim as u32;
    let header_len = 4 + 4 * ndim;
    if bytes.len() < header_len {
        bail!(
            "{}: truncated IDX file: {} bytes, shorter than the {header_len}-byte header",
            file.display(),
            bytes.len()
        );
    }
    let word = |i: usize| {
        u32::from_be_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    };
    let magic = word(0);
    if magic != expected_magic {
        bail!(
            "{}: wrong IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} \
             (unsigned bytes, {ndim} dimension(s)); is this the right file, fully downloaded?",
            file.display()
        );
    }
    let dims: Vec<usize> = (1..=ndim).map(|i| word(i) as usize).collect();
    let payload = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .with_context(|| format!("{}: IDX dimensions {dims:?} overflow", file.display()))?;
    let body = &bytes[header_len..];
    if body.len() < payload {
        bail!(
            "{}: truncated IDX file: dimensions {dims:?} need {payload} data bytes, found {}",
            file.display(),
            body.len()
        );
    }
    if body.len() > payload {
        bail!(
            "{}: IDX file has {} bytes of trailing data after the {payload} bytes for dimensions {dims:?}",
            file.display(),
            body.len() - payload
        );
    }
    Ok((dims, body))
}

/// `dir/base` or `dir/base.gz`, whichever exists (plain first).
fn find_file(dir: &Path, base: &str) -> Option<PathBuf> {
    [dir.join(base), dir.join(format!("{base}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// Reads one split; returns it with (rows, cols).
fn read_split(images_path: &Path, labels_path: &Path) -> Result<(RawSplit, usize, usize)> {
    let image_bytes = read_maybe_gz(images_path)?;
    let (dims, images) = parse_idx(&image_bytes, 3, images_path)?;
    let label_bytes = read_maybe_gz(labels_path)?;
    let (ldims, labels) = parse_idx(&label_bytes, 1, labels_path)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if ldims[0] != n {
        bail!(
            "image/label count mismatch: {} holds {n} images but {} holds {} labels",
            images_path.display(),
            labels_path.display(),
            ldims[0]
        );
    }
    let labels: Vec<u32> = labels.iter().map(|&l| u32::from(l)).collect();
    check_labels(&labels, 10, labels_path)?;
    Ok((
        RawSplit {
            images: images.to_vec(),
            labels,
            n,
        },
        rows,
        cols,
    ))
}

pub(crate) fn load(
    kind: DatasetKind,
    dirs: &[PathBuf],
    data_dir: Option<&Path>,
) -> Result<RawDataset> {
    let Some(dir) = dirs.iter().find(|d| find_file(d, FILES[0]).is_some()) else {
        return Err(not_found(kind, dirs, data_dir));
    };
    let mut paths = Vec::with_capacity(4);
    for base in FILES {
        match find_file(dir, base) {
            Some(p) => paths.push(p),
            None => bail!(
                "{kind} in {} is incomplete: neither {base} nor {base}.gz exists; \
                 fix: `modeconn download {kind} --data-dir {}`",
                dir.display(),
                dir.display()
            ),
        }
    }
    let (train, rows, cols) = read_split(&paths[0], &paths[1])?;
    let (test, trows, tcols) = read_split(&paths[2], &paths[3])?;
    if (rows, cols) != (trows, tcols) {
        bail!(
            "{}: test images are {trows}x{tcols} but training images ({}) are {rows}x{cols}",
            paths[2].display(),
            paths[0].display()
        );
    }
    let classes = match kind {
        DatasetKind::FashionMnist => FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
        _ => (0..10).map(|i| i.to_string()).collect(),
    };
    Ok(RawDataset {
        kind,
        classes,
        height: rows,
        width: cols,
        channels: 1,
        train,
        test,
        source: dir.clone(),
    })
}

/// Encodes an unsigned-byte IDX buffer (test helper, also used by the download tests).
#[cfg(test)]
pub(crate) fn encode_idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Gzips a buffer (test helper).
#[cfg(test)]
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A tiny 4x3 MNIST-like dataset: (file name, bytes) for the four files, gzipped or not.
#[cfg(test)]
pub(crate) fn tiny_mnist_files(gz: bool) -> Vec<(String, Vec<u8>)> {
    let (rows, cols) = (4u32, 3u32);
    let img = |n: u32, off: u8| -> Vec<u8> {
        (0..n * rows * cols)
            .map(|i| (i as u8).wrapping_add(off))
            .collect()
    };
    let contents = [
        encode_idx(&[5, rows, cols], &img(5, 0)),
        encode_idx(&[5], &[0, 1, 2, 9, 3]),
        encode_idx(&[2, rows, cols], &img(2, 100)),
        encode_idx(&[2], &[7, 8]),
    ];
    FILES
        .iter()
        .zip(contents)
        .map(|(name, c)| {
            if gz {
                (format!("{name}.gz"), gzip(&c))
            } else {
                (name.to_string(), c)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_all(dir: &Path, files: &[(String, Vec<u8>)]) {
        fs::create_dir_all(dir).unwrap();
        for (name, bytes) in files {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }

    fn load_dir(kind: DatasetKind, dir: &Path) -> Result<RawDataset> {
        load(kind, &[dir.to_path_buf()], Some(dir))
    }

    #[test]
    fn round_trip_plain_and_gz() {
        for gz in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            write_all(tmp.path(), &tiny_mnist_files(gz));
            let ds = load_dir(DatasetKind::Mnist, tmp.path()).unwrap();
            assert_eq!((ds.height, ds.width, ds.channels), (4, 3, 1));
            assert_eq!(ds.train.n, 5);
            assert_eq!(ds.train.images.len(), 5 * 12);
            assert_eq!(ds.train.images[13], 13);
            assert_eq!(ds.train.labels, vec![0, 1, 2, 9, 3]);
            assert_eq!(ds.test.labels, vec![7, 8]);
            assert_eq!(ds.test.images[0], 100);
            assert_eq!(ds.classes[9], "9");
            assert_eq!(ds.source, tmp.path());
        }
    }

    #[test]
    fn subdirectory_and_fashion_classes() {
        let tmp = tempfile::tempdir().unwrap();
        write_all(&tmp.path().join("fashion-mnist"), &tiny_mnist_files(true));
        let dirs = super::super::default_search_dirs(DatasetKind::FashionMnist, Some(tmp.path()));
        let ds = load(DatasetKind::FashionMnist, &dirs, Some(tmp.path())).unwrap();
        assert_eq!(ds.source, tmp.path().join("fashion-mnist"));
        assert_eq!(ds.classes[0], "T-shirt/top");
        assert_eq!(ds.classes[9], "Ankle boot");
    }

    /// Writes the tiny dataset with file `which` replaced by `bytes`; returns the load error.
    fn error_with(which: usize, bytes: Vec<u8>) -> String {
        let tmp = tempfile::tempdir().unwrap();
        let mut files = tiny_mnist_files(false);
        files[which].1 = bytes;
        write_all(tmp.path(), &files);
        let err = format!(
            "{:#}",
            load_dir(DatasetKind::Mnist, tmp.path()).unwrap_err()
        );
        assert!(
            err.contains(FILES[which]),
            "error does not name {}: {err}",
            FILES[which]
        );
        err
    }

    #[test]
    fn bad_files_are_named() {
        let good = tiny_mnist_files(false);
        let err = error_with(0, good[0].1[..good[0].1.len() - 5].to_vec());
        assert!(err.contains("truncated"), "{err}");
        let err = error_with(1, vec![0, 0, 8]);
        assert!(err.contains("truncated"), "{err}");
        let mut bad_magic = good[0].1.clone();
        bad_magic[3] = 1;
        let err = error_with(0, bad_magic);
        assert!(err.contains("magic"), "{err}");
        let err = error_with(3, encode_idx(&[3], &[1, 2, 3]));
        assert!(err.contains("mismatch") && err.contains(FILES[2]), "{err}");
        let err = error_with(1, encode_idx(&[5], &[0, 1, 10, 2, 3]));
        assert!(err.contains("out of range"), "{err}");
        let gz = gzip(&good[2].1);
        let err = error_with(2, gz[..gz.len() / 2].to_vec());
        assert!(err.contains("gzip"), "{err}");
        // A bomb: 16 MiB of zeros, compressed about 1000-fold.
        let bomb = encode_idx(&[1 << 14, 32, 32], &vec![0u8; 1 << 24]);
        let mut packed = Vec::new();
        {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(&mut packed, flate2::Compression::best());
            e.write_all(&bomb).unwrap();
            e.finish().unwrap();
        }
        assert!(packed.len() * 512 < bomb.len(), "{} bytes", packed.len());
        let err = error_with(0, packed);
        assert!(err.contains("decompression bomb"), "{err}");
    }

    #[test]
    fn incomplete_dir_names_missing_file() {
        let tmp = tempfile::tempdir().unwrap();
        write_all(tmp.path(), &tiny_mnist_files(false)[..3]);
        let err = load_dir(DatasetKind::Mnist, tmp.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t10k-labels-idx1-ubyte") && err.contains("incomplete"),
            "{err}"
        );
    }

    #[test]
    fn debian_fashion_mnist() {
        let dir = Path::new("/usr/share/datasets/fashion-mnist");
        if find_file(dir, FILES[0]).is_none() {
            eprintln!(
                "note: {} absent (apt-get install dataset-fashion-mnist); skipping",
                dir.display()
            );
            return;
        }
        let ds = load(DatasetKind::FashionMnist, &[dir.to_path_buf()], None).unwrap();
        assert_eq!((ds.train.n, ds.test.n), (60000, 10000));
        assert_eq!((ds.height, ds.width, ds.channels), (28, 28, 1));
        assert_eq!(ds.train.images.len(), 60000 * 784);
        let mut counts = [0usize; 10];
        ds.train
            .labels
            .iter()
            .for_each(|&l| counts[l as usize] += 1);
        assert!(counts.iter().all(|&c| c == 6000), "{counts:?}");
    }
}
