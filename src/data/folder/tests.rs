//! Tests of image folders and their cache on generated trees (and the real CIFAR-10 JPEG copy when present).

use super::*;
use image::{GrayImage, Luma, Rgb, RgbImage};
use std::fs::File;
use std::time::{Duration, Instant, SystemTime};

/// Pixel (x, y) of image `seed`.
fn rgb(seed: u32, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(seed * 40 + x) as u8, (y * 10) as u8, (x + y + seed) as u8])
    })
}

/// train: cat has 2 PNGs + 1 JPEG, dog 1 PNG; test: one PNG each.
fn make_tree(root: &Path) {
    for (split, class, name, seed) in [
        ("train", "dog", "b.png", 1),
        ("train", "cat", "b.png", 2),
        ("train", "cat", "a.PNG", 3),
        ("train", "cat", "c.JPG", 4),
        ("test", "cat", "x.png", 5),
        ("test", "dog", "y.png", 6),
    ] {
        let dir = root.join(split).join(class);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let fmt = if name.ends_with("JPG") {
            image::ImageFormat::Jpeg
        } else {
            image::ImageFormat::Png
        };
        rgb(seed, 6, 4).save_with_format(&path, fmt).unwrap();
    }
    fs::write(root.join("train/cat/notes.txt"), "ignored").unwrap();
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "bin"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn loads_sorted_rgb_and_caches() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, cache) = (tmp.path().join("root"), tmp.path().join("cache"));
    make_tree(&root);
    let (ds, hit) = load_with_status(&root, &cache).unwrap();
    assert!(!hit);
    assert_eq!(ds.classes, vec!["cat", "dog"]);
    assert_eq!((ds.height, ds.width, ds.channels), (4, 6, 3));
    assert_eq!((ds.train.n, ds.test.n), (4, 2));
    assert_eq!(ds.train.labels, vec![0, 0, 0, 1]);
    assert_eq!(ds.test.labels, vec![0, 1]);
    assert_eq!(ds.train.images.len(), 4 * 72);
    // First train image is cat/a.PNG (seed 3): pixel (x=5, y=2) in HWC.
    let off = (2 * 6 + 5) * 3;
    assert_eq!(
        &ds.train.images[off..off + 3],
        &[(3 * 40 + 5) as u8, 20, 10]
    );
    // Last train image is dog/b.png (seed 1).
    assert_eq!(&ds.train.images[3 * 72..3 * 72 + 3], &[40, 0, 1]);
    assert_eq!(ds.source, root);
    assert_eq!(cache_files(&cache).len(), 1);

    // Second load: cache hit with identical data.
    let (again, hit) = load_with_status(&root, &cache).unwrap();
    assert!(hit);
    assert_eq!(
        (again.train, again.test, again.classes),
        (ds.train.clone(), ds.test.clone(), ds.classes.clone())
    );

    // Garbage of the same size and mtime is not noticed: proof that nothing is decoded.
    let victim = root.join("test/dog/y.png");
    let (orig, mtime) = (
        fs::read(&victim).unwrap(),
        fs::metadata(&victim).unwrap().modified().unwrap(),
    );
    let set = |bytes: &[u8], t: SystemTime| {
        fs::write(&victim, bytes).unwrap();
        File::options()
            .write(true)
            .open(&victim)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    set(&vec![0u8; orig.len()], mtime);
    assert!(load_with_status(&root, &cache).unwrap().1);

    // Touching a file changes the key and rebuilds.
    set(&orig, mtime + Duration::from_secs(10));
    let (touched, hit) = load_with_status(&root, &cache).unwrap();
    assert!(!hit);
    assert_eq!(touched.test, ds.test);
    assert!(load_with_status(&root, &cache).unwrap().1);

    // Adding a file rebuilds.
    rgb(9, 6, 4).save(root.join("test/dog/z.png")).unwrap();
    let (added, hit) = load_with_status(&root, &cache).unwrap();
    assert!(!hit);
    assert_eq!(added.test.n, 3);

    // A truncated cache is rebuilt, not trusted.
    let path = cache_path(&cache, list(&root).unwrap().key);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let (rebuilt, hit) = load_with_status(&root, &cache).unwrap();
    assert!(!hit);
    assert_eq!(rebuilt.test, added.test);
    assert_eq!(fs::read(&path).unwrap(), bytes);

    // Pixels overwritten in place (same length, a valid header) are caught
    // by the checksum: the folder is decoded again.
    let mut poisoned = bytes.clone();
    let n = poisoned.len();
    for b in &mut poisoned[n / 2..n - 100] {
        *b = 0;
    }
    fs::write(&path, &poisoned).unwrap();
    let (rebuilt, hit) = load_with_status(&root, &cache).unwrap();
    assert!(!hit, "a poisoned cache was used");
    assert_eq!(rebuilt.test, added.test);
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_cache_directory_others_may_write_to_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (root, cache) = (tmp.path().join("root"), tmp.path().join("cache"));
    make_tree(&root);
    fs::create_dir(&cache).unwrap();
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).unwrap();
    let (ds, hit) = load_with_status(&root, &cache).unwrap();
    assert!(!hit && ds.train.n > 0);
    assert!(
        cache_files(&cache).is_empty(),
        "wrote into a shared directory"
    );
    // A cache directory it creates is private.
    let own = tmp.path().join("own");
    load_with_status(&root, &own).unwrap();
    assert_eq!(
        fs::metadata(&own).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(cache_files(&own).len(), 1);
}

#[test]
fn grayscale_folder_has_one_channel() {
    let tmp = tempfile::tempdir().unwrap();
    for (split, i) in [("train", 0u8), ("test", 1)] {
        let dir = tmp.path().join(split).join("only");
        fs::create_dir_all(&dir).unwrap();
        GrayImage::from_fn(3, 2, |x, y| Luma([i * 100 + (x + 3 * y) as u8]))
            .save(dir.join("g.png"))
            .unwrap();
    }
    let ds = load(tmp.path(), &tmp.path().join("cache")).unwrap();
    assert_eq!((ds.height, ds.width, ds.channels), (2, 3, 1));
    assert_eq!(ds.train.images, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(ds.test.images, vec![100, 101, 102, 103, 104, 105]);
}

fn err_for(edit: impl FnOnce(&Path)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    make_tree(&root);
    edit(&root);
    format!("{:#}", load(&root, &tmp.path().join("cache")).unwrap_err())
}

#[test]
fn folder_errors_name_the_culprit() {
    let err = err_for(|r| fs::create_dir(r.join("test/cow")).unwrap());
    assert!(err.contains("cow") && err.contains("differ"), "{err}");
    let err = err_for(|r| {
        fs::create_dir(r.join("train/cow")).unwrap();
        fs::create_dir(r.join("test/cow")).unwrap();
    });
    assert!(
        err.contains("empty class folder") && err.contains("train/cow"),
        "{err}"
    );
    let err = err_for(|r| rgb(0, 5, 4).save(r.join("train/dog/c.png")).unwrap());
    assert!(
        err.contains("train/dog/c.png") && err.contains("5x4") && err.contains("6x4"),
        "{err}"
    );
    let err =
        err_for(|r| fs::write(r.join("train/dog/broken.jpeg"), b"\xff\xd8\xffnot a jpeg").unwrap());
    assert!(
        err.contains("broken.jpeg") && err.contains("decode"),
        "{err}"
    );
    let err = err_for(|r| fs::remove_dir_all(r.join("test")).unwrap());
    assert!(err.contains("test/"), "{err}");
}

#[test]
fn unwritable_cache_still_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    make_tree(&root);
    let blocker = tmp.path().join("file");
    fs::write(&blocker, "x").unwrap();
    let ds = load(&root, &blocker.join("cache")).unwrap();
    assert_eq!(ds.train.n, 4);
}

#[test]
fn real_cifar10_jpg() {
    let root = Path::new("/work/shared/datasets/cifar10-jpg");
    if !root.join("train").is_dir() {
        eprintln!("note: {} absent; skipping", root.display());
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let (ds, hit) = load_with_status(root, cache.path()).unwrap();
    let cold = t.elapsed();
    assert!(!hit);
    assert_eq!(
        (ds.train.n, ds.test.n, ds.classes.len()),
        (50000, 10000, 10)
    );
    assert_eq!((ds.height, ds.width, ds.channels), (32, 32, 3));
    assert_eq!(ds.classes[0], "airplane");
    let t = Instant::now();
    let (again, hit) = load_with_status(root, cache.path()).unwrap();
    eprintln!("cifar10-jpg: cold {cold:?}, cached {:?}", t.elapsed());
    assert!(hit);
    assert!(again.train == ds.train && again.test == ds.test);
}
