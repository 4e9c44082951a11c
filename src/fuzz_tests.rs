//! Property tests of every reader of outside bytes: for valid files made
//! here, random truncations, flipped bytes and absurd header values must
//! give `Ok` or `Err`, never a panic. A seeded generator keeps every run
//! reproducible (the failing seed and mutation are in the message).

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use crate::data::DatasetKind;

use crate::rng::SplitMix64 as Rng;

/// One random damage: a truncation, flipped bytes, or an absurd 4- or
/// 8-byte value (a length or dimension field) written somewhere.
fn mutate(rng: &mut Rng, good: &[u8]) -> (Vec<u8>, String) {
    let mut b = good.to_vec();
    match rng.below(3) {
        0 => {
            let n = rng.below(b.len());
            b.truncate(n);
            (b, format!("truncated to {n} bytes"))
        }
        1 => {
            let k = 1 + rng.below(8);
            for _ in 0..k {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            (b, format!("{k} bits flipped"))
        }
        _ => {
            let absurd: [&[u8]; 4] = [
                &u32::MAX.to_be_bytes(),
                &u32::MAX.to_le_bytes(),
                &u64::MAX.to_le_bytes(),
                &(1u64 << 40).to_le_bytes(),
            ];
            let v = absurd[rng.below(absurd.len())];
            // Headers live at the start: aim there most of the time.
            let span = if rng.below(4) == 0 {
                b.len()
            } else {
                b.len().min(64)
            };
            let at = rng.below(span.saturating_sub(v.len()).max(1));
            for (i, x) in v.iter().enumerate() {
                if at + i < b.len() {
                    b[at + i] = *x;
                }
            }
            (b, format!("absurd value at byte {at}"))
        }
    }
}

/// Writes `good` damaged `rounds` times to `path` and calls `read` on it;
/// fails on the first panic.
fn fuzz(name: &str, path: &Path, good: &[u8], rounds: usize, read: &dyn Fn(&Path)) {
    let mut rng = Rng(0xC0FFEE ^ name.len() as u64);
    for round in 0..rounds {
        let (bytes, what) = mutate(&mut rng, good);
        fs::write(path, &bytes).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| read(path)));
        assert!(r.is_ok(), "{name}: round {round} ({what}) panicked");
    }
    // The undamaged file still reads: the harness itself is sound.
    fs::write(path, good).unwrap();
}

#[test]
fn idx_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = crate::data::idx::encode_idx(&[20, 28, 28], &vec![3u8; 20 * 784]);
    let labels = crate::data::idx::encode_idx(&[20], &(0..20).map(|i| i % 10).collect::<Vec<u8>>());
    fs::write(dir.path().join("t10k-images-idx3-ubyte"), &imgs).unwrap();
    fs::write(dir.path().join("t10k-labels-idx1-ubyte"), &labels).unwrap();
    fs::write(dir.path().join("train-labels-idx1-ubyte"), &labels).unwrap();
    let target = dir.path().join("train-images-idx3-ubyte");
    let dirs = vec![dir.path().to_path_buf()];
    let load = |_: &Path| {
        let _ = crate::data::idx::load(DatasetKind::FashionMnist, &dirs, None);
    };
    fuzz("idx", &target, &imgs, 300, &load);
    assert!(crate::data::idx::load(DatasetKind::FashionMnist, &dirs, None).is_ok());
    // gzip: damage the compressed bytes.
    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
        e.write_all(&imgs).unwrap();
        e.finish().unwrap();
    }
    fs::remove_file(&target).unwrap();
    let target_gz = dir.path().join("train-images-idx3-ubyte.gz");
    fuzz("idx.gz", &target_gz, &gz, 200, &load);
}

#[test]
fn cifar_batches_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = crate::data::cifar::fake_records(4, &|i| vec![i as u8]);
    for name in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ] {
        fs::write(dir.path().join(name), &good).unwrap();
    }
    let dirs = vec![dir.path().to_path_buf()];
    let load = |_: &Path| {
        let _ = crate::data::cifar::load(DatasetKind::Cifar10, &dirs, None);
    };
    assert!(crate::data::cifar::load(DatasetKind::Cifar10, &dirs, None).is_ok());
    let target = dir.path().join("data_batch_1.bin");
    fuzz("cifar", &target, &good, 300, &load);
}

#[test]
fn checkpoints_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let t = vec![
        (
            "w".to_string(),
            tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]),
        ),
        ("n".to_string(), tch::Tensor::from_slice(&[7i64])),
    ];
    let meta = crate::checkpoint::tests::sample_meta();
    crate::checkpoint::write_tensors(&p, &t, Some(&meta)).unwrap();
    let good = fs::read(&p).unwrap();
    let read = |p: &Path| {
        let _ = crate::checkpoint::read_meta(p);
        let _ = crate::checkpoint::read_tensors(p);
    };
    fuzz("safetensors", &p, &good, 400, &read);
    assert!(crate::checkpoint::read_tensors(&p).is_ok());
}

#[test]
fn experiment_json_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path();
    crate::report::testdata::write_all(exp, 100.0);
    // The report reads every file through Inputs::load; the eval files also
    // through their typed schema.
    type Reader<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Reader); 5] = [
        ("eval/along.json", &|p| {
            let _ = crate::schema::read_versioned::<crate::schema::AlongFile>(p, "x");
        }),
        ("eval/ensemble.json", &|p| {
            let _ = crate::schema::read_versioned::<crate::schema::EnsembleFile>(p, "x");
        }),
        ("config.json", &|p| {
            let exp = p.parent().unwrap();
            let _ = crate::experiment::read_config(exp);
            let _ = crate::experiment::section::<crate::config::CurveConfig>(exp, "curve");
        }),
        ("start_model/log.jsonl", &|p| {
            let _ = crate::schema::read_log(p);
        }),
        ("landscape/plane.json", &|p| {
            // The report's reader, then the landscape's own resume reader.
            let exp = p.parent().and_then(Path::parent).unwrap();
            let _ = crate::report::data::Inputs::load(exp);
            let _ = crate::files::read_text(p, crate::files::JSON_MAX)
                .map(|s| serde_json::from_str::<crate::schema::PlaneFile>(&s));
        }),
    ];
    for (rel, read) in cases {
        let p = exp.join(rel);
        let good = fs::read(&p).unwrap();
        fuzz(rel, &p, &good, 300, read);
    }
}
