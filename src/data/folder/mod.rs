//! Generic image folders: `<root>/{train,test}/<class>/*.{jpg,jpeg,png}`.
//!
//! Classes are the sorted subdirectory names of `train/` (`test/` must have the
//! same ones); files are sorted by name within a class. All images must share
//! one size; they are converted to RGB, or to grayscale when the first image is
//! grayscale. Decoding runs on all cores, and the decoded splits are cached in
//! `cache_dir/imagefolder-<key>.bin`, where the key hashes the canonical root
//! and every file's relative path, size and mtime, so any change to the tree
//! selects a fresh cache file.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::UNIX_EPOCH;

use anyhow::{bail, ensure, Context, Result};
use image::DynamicImage;

use super::{DatasetKind, RawDataset, RawSplit};

mod cache;
use cache::{cache_path, read_cache, write_cache};

const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// 64-bit FNV-1a.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    /// Writes a length-prefixed field so that concatenations cannot collide.
    fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
}

/// The files of the tree, in dataset order, with the cache key.
struct Listing {
    root: PathBuf,
    classes: Vec<String>,
    train: Vec<(PathBuf, u32)>,
    test: Vec<(PathBuf, u32)>,
    key: u64,
}

/// Sorted names of the non-hidden subdirectories of `dir`.
fn subdirs(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in
        fs::read_dir(dir).with_context(|| format!("cannot read directory {}", dir.display()))?
    {
        let entry = entry.with_context(|| format!("cannot read directory {}", dir.display()))?;
        if !entry.path().is_dir() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            bail!(
                "{}: class folder name is not valid UTF-8",
                entry.path().display()
            );
        };
        if !name.starts_with('.') {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The images of one class folder as (name, size, mtime in ns), sorted by
/// name; an empty folder is an error.
fn class_files(dir: &Path) -> Result<Vec<(std::ffi::OsString, u64, u128)>> {
    let read_err = || format!("cannot read directory {}", dir.display());
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(read_err)? {
        let entry = entry.with_context(read_err)?;
        let path = entry.path();
        if !is_image(&path) {
            continue;
        }
        let meta =
            fs::metadata(&path).with_context(|| format!("cannot stat {}", path.display()))?;
        if meta.is_file() {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .unwrap_or_default();
            files.push((entry.file_name(), meta.len(), mtime.as_nanos()));
        }
    }
    ensure!(
        !files.is_empty(),
        "empty class folder {}: it holds no .jpg/.jpeg/.png images",
        dir.display()
    );
    files.sort();
    Ok(files)
}

fn list(root: &Path) -> Result<Listing> {
    ensure!(
        root.is_dir(),
        "image-folder root {} is not a directory (expected train/<class>/*.jpg|png and test/<class>/*.jpg|png)",
        root.display()
    );
    let canonical =
        fs::canonicalize(root).with_context(|| format!("cannot resolve {}", root.display()))?;
    for split in ["train", "test"] {
        ensure!(
            root.join(split).is_dir(),
            "image-folder root {} has no {split}/ directory (expected {split}/<class>/*.jpg|png)",
            root.display()
        );
    }
    let classes = subdirs(&root.join("train"))?;
    ensure!(
        !classes.is_empty(),
        "{}: no class subdirectories",
        root.join("train").display()
    );
    let test_classes = subdirs(&root.join("test"))?;
    if test_classes != classes {
        let only = |a: &[String], b: &[String]| -> Vec<String> {
            a.iter().filter(|c| !b.contains(c)).cloned().collect()
        };
        bail!(
            "{}: class folders differ from train/: only in train/: {:?}; only in test/: {:?}",
            root.join("test").display(),
            only(&classes, &test_classes),
            only(&test_classes, &classes)
        );
    }
    let mut hash = Fnv::new();
    hash.field(b"modeconn image-folder");
    hash.field(canonical.as_os_str().as_encoded_bytes());
    let mut splits = [Vec::new(), Vec::new()];
    for (split, out) in ["train", "test"].into_iter().zip(splits.iter_mut()) {
        for (label, class) in classes.iter().enumerate() {
            let dir = root.join(split).join(class);
            for (name, size, mtime) in class_files(&dir)? {
                hash.field(format!("{split}/{class}").as_bytes());
                hash.field(name.as_encoded_bytes());
                hash.write(&size.to_le_bytes());
                hash.write(&mtime.to_le_bytes());
                out.push((dir.join(name), label as u32));
            }
        }
    }
    let [train, test] = splits;
    Ok(Listing {
        root: root.to_path_buf(),
        classes,
        train,
        test,
        key: hash.0,
    })
}

fn decode(path: &Path) -> Result<DynamicImage> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    image::load_from_memory(&bytes)
        .with_context(|| format!("{}: cannot decode image", path.display()))
}

/// Decodes every file into one buffer: (images, height, width, channels).
fn decode_all(files: &[&Path]) -> Result<(Vec<u8>, usize, usize, usize)> {
    let first = decode(files[0])?;
    let (w, h) = (first.width(), first.height());
    let channels = if first.color().has_color() { 3 } else { 1 };
    let image_len = w as usize * h as usize * channels;
    let threads = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    let per_thread = files.len().div_ceil(threads);
    let mut images = vec![0u8; files.len() * image_len];
    let convert_into = |path: &Path, out: &mut [u8]| -> Result<()> {
        let img = decode(path)?;
        if (img.width(), img.height()) != (w, h) {
            bail!(
                "{}: image is {}x{} but {} is {w}x{h}; all images must have the same size",
                path.display(),
                img.width(),
                img.height(),
                files[0].display()
            );
        }
        if channels == 3 {
            out.copy_from_slice(img.into_rgb8().as_raw());
        } else {
            out.copy_from_slice(img.into_luma8().as_raw());
        }
        Ok(())
    };
    thread::scope(|s| {
        let workers: Vec<_> = files
            .chunks(per_thread)
            .zip(images.chunks_mut(per_thread * image_len))
            .map(|(paths, out)| {
                s.spawn(move || {
                    paths
                        .iter()
                        .zip(out.chunks_exact_mut(image_len))
                        .try_for_each(|(p, o)| convert_into(p, o))
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| bail!("image decoding thread panicked"))
        })
    })?;
    Ok((images, h as usize, w as usize, channels))
}

pub(crate) fn load(root: &Path, cache_dir: &Path) -> Result<RawDataset> {
    load_with_status(root, cache_dir).map(|(ds, _)| ds)
}

/// Loads the folder; the flag says whether the cache was used.
fn load_with_status(root: &Path, cache_dir: &Path) -> Result<(RawDataset, bool)> {
    let listing = list(root)?;
    let cache = cache_path(cache_dir, listing.key);
    let private = crate::files::private_dir(cache_dir);
    if let Err(e) = &private {
        eprintln!("warning: not using the decoded-image cache: {e:#}");
    }
    if private.is_ok() && cache.is_file() {
        match read_cache(&cache, &listing) {
            Ok(ds) => return Ok((ds, true)),
            Err(e) => eprintln!(
                "warning: ignoring unusable cache {} ({e:#}); rebuilding",
                cache.display()
            ),
        }
    }
    let files: Vec<&Path> = listing
        .train
        .iter()
        .chain(&listing.test)
        .map(|(p, _)| p.as_path())
        .collect();
    eprintln!(
        "decoding {} images under {} ...",
        files.len(),
        root.display()
    );
    let (mut images, height, width, channels) = decode_all(&files)?;
    let test_images = images.split_off(listing.train.len() * height * width * channels);
    let split = |images: Vec<u8>, files: &[(PathBuf, u32)]| RawSplit {
        images,
        labels: files.iter().map(|(_, l)| *l).collect(),
        n: files.len(),
    };
    let ds = RawDataset {
        kind: DatasetKind::ImageFolder,
        classes: listing.classes.clone(),
        height,
        width,
        channels,
        train: split(images, &listing.train),
        test: split(test_images, &listing.test),
        source: listing.root.clone(),
    };
    if let Err(e) = private.and_then(|_| write_cache(&cache, listing.key, &ds)) {
        eprintln!("warning: {e:#}; continuing without a cache");
    }
    Ok((ds, false))
}

#[cfg(test)]
mod tests;
