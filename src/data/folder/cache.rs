//! The cache of a decoded image folder: both splits' pixels and labels
//! with the listing's key and an MD5 of the payload, validated against the
//! listing before use.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

use super::Listing;
use crate::data::{DatasetKind, RawDataset, RawSplit};

const CACHE_MAGIC: &[u8; 8] = b"MCIMGFLD";
const CACHE_VERSION: u32 = 2;

pub(super) fn cache_path(cache_dir: &Path, key: u64) -> PathBuf {
    cache_dir.join(format!("imagefolder-{key:016x}.bin"))
}

/// MD5 of a cache's payload: both splits' pixels and labels.
fn payload_md5(train: (&[u8], &[u32]), test: (&[u8], &[u32])) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    for (images, labels) in [train, test] {
        h.update(images);
        for l in labels {
            h.update(l.to_le_bytes());
        }
    }
    h.finalize().into()
}

/// Writes the cache through the program's one atomic writer, in a private
/// directory ([`crate::files::private_dir`]), with the MD5 of its
/// payload in the header (checked on every load).
pub(super) fn write_cache(path: &Path, key: u64, ds: &RawDataset) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::files::private_dir(dir)?;
    let classes = serde_json::to_vec(&ds.classes)?;
    let sum = payload_md5(
        (&ds.train.images, &ds.train.labels),
        (&ds.test.images, &ds.test.labels),
    );
    crate::files::write_atomic_with(path, &mut |f| {
        f.write_all(CACHE_MAGIC)?;
        f.write_all(&CACHE_VERSION.to_le_bytes())?;
        f.write_all(&key.to_le_bytes())?;
        f.write_all(&sum)?;
        for v in [
            ds.height,
            ds.width,
            ds.channels,
            ds.train.n,
            ds.test.n,
            classes.len(),
        ] {
            f.write_all(&(v as u64).to_le_bytes())?;
        }
        f.write_all(&classes)?;
        for split in [&ds.train, &ds.test] {
            f.write_all(&split.images)?;
            for l in &split.labels {
                f.write_all(&l.to_le_bytes())?;
            }
        }
        Ok(())
    })
    .with_context(|| format!("cannot write cache {}", path.display()))
}

/// A bounds-checked cursor over the cache bytes.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(n <= self.0.len(), "truncated");
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    fn usize(&mut self) -> Result<usize> {
        Ok(usize::try_from(self.u64()?)?)
    }
}

/// Reads and validates a cache file against the listing.
pub(super) fn read_cache(path: &Path, listing: &Listing) -> Result<RawDataset> {
    let bytes = fs::read(path)?;
    let mut c = Cursor(&bytes);
    ensure!(c.take(8)? == CACHE_MAGIC, "bad magic");
    ensure!(
        c.take(4)? == CACHE_VERSION.to_le_bytes(),
        "unsupported version"
    );
    ensure!(c.u64()? == listing.key, "key mismatch");
    let sum: [u8; 16] = c.take(16)?.try_into()?;
    let (height, width, channels) = (c.usize()?, c.usize()?, c.usize()?);
    let (n_train, n_test, classes_len) = (c.usize()?, c.usize()?, c.usize()?);
    let classes: Vec<String> = serde_json::from_slice(c.take(classes_len)?)?;
    ensure!(classes == listing.classes, "class names differ");
    ensure!(
        n_train == listing.train.len() && n_test == listing.test.len(),
        "image counts differ"
    );
    let image_len = height
        .checked_mul(width)
        .and_then(|v| v.checked_mul(channels))
        .context("bad dimensions")?;
    let mut split = |n: usize, files: &[(PathBuf, u32)]| -> Result<RawSplit> {
        let images = c
            .take(n.checked_mul(image_len).context("bad dimensions")?)?
            .to_vec();
        let labels: Vec<u32> = c
            .take(n * 4)?
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        ensure!(
            labels.iter().zip(files).all(|(l, (_, f))| l == f),
            "labels differ"
        );
        Ok(RawSplit { images, labels, n })
    };
    let train = split(n_train, &listing.train)?;
    let test = split(n_test, &listing.test)?;
    ensure!(c.0.is_empty(), "trailing bytes");
    ensure!(
        payload_md5((&train.images, &train.labels), (&test.images, &test.labels)) == sum,
        "its pixels or labels do not match its checksum (the file was changed after it was written)"
    );
    Ok(RawDataset {
        kind: DatasetKind::ImageFolder,
        classes,
        height,
        width,
        channels,
        train,
        test,
        source: listing.root.clone(),
    })
}
