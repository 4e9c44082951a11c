//! Tests of checkpoints and of safe file handling.

use super::*;
use crate::files::{read_text, sweep_temp_files, write_new_with, JSON_MAX, TMP_TAG};
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
    assert!(write_new_with(&planted, &mut |w| Ok(w.write_all(b"evil")?)).is_err());
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

#[test]
fn safetensors_refusals_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        fs::write(&p, bytes).unwrap();
        format!("{:#}", read_tensors(&p).unwrap_err())
    };
    let mut big = 200_000_000u64.to_le_bytes().to_vec();
    big.extend_from_slice(b"{}      ");
    let e = write("big.safetensors", &big);
    assert!(
        e.contains("big.safetensors")
            && e.contains("claims 200000000 bytes, more than the 100 MB")
            && !e.contains("truncated"),
        "{e}"
    );
    let mut long = 1000u64.to_le_bytes().to_vec();
    long.extend_from_slice(b"{}      ");
    let e = write("long.safetensors", &long);
    assert!(
        e.contains("claims 1000 bytes, more than the file holds (16 bytes"),
        "{e}"
    );
    let good = dir.path().join("good.safetensors");
    let t = vec![("w".to_string(), Tensor::from_slice(&[1.0f32, 2.0]))];
    write_tensors(&good, &t, None).unwrap();
    let bytes = fs::read(&good).unwrap();
    let e = write("cut.safetensors", &bytes[..bytes.len() - 4]);
    assert!(
        e.contains("cut.safetensors") && e.contains("truncated"),
        "{e}"
    );
    assert!(write("tiny.safetensors", b"abc").contains("too short"));
}
