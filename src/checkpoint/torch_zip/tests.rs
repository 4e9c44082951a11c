//! torch.save zip files built by hand, honest and damaged.

use std::io::{Cursor, Write};

use zip::write::FileOptions;

use super::*;
use crate::checkpoint::pickle::tests::P;

/// A zip archive of `(name, bytes, deflated)` records.
fn zip_of(records: &[(&str, Vec<u8>, bool)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes, deflate) in records {
        let method = if *deflate {
            CompressionMethod::Deflated
        } else {
            CompressionMethod::Stored
        };
        w.start_file(*name, FileOptions::default().compression_method(method))
            .unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `{'w': arange(6).view(2, 3), 'b': [7, 8, 9] (int64), 'tail': w[4:], 'e': empty}`.
fn pickle() -> Vec<u8> {
    P::new()
        .dict()
        .str("w")
        .tensor("0", "FloatStorage", 6, 0, &[2, 3], &[3, 1])
        .str("b")
        .tensor("1", "LongStorage", 3, 0, &[3], &[1])
        .str("tail")
        .tensor("0", "FloatStorage", 6, 4, &[2], &[1])
        .str("e")
        .tensor("2", "FloatStorage", 0, 0, &[0, 3], &[3, 1])
        .items()
        .0
}

fn records(pkl: Vec<u8>, w: Vec<u8>, deflate: bool) -> Vec<(&'static str, Vec<u8>, bool)> {
    let b: Vec<u8> = [7i64, 8, 9].iter().flat_map(|x| x.to_le_bytes()).collect();
    vec![
        ("m/data.pkl", pkl, deflate),
        ("m/byteorder", b"little".to_vec(), false),
        ("m/data/0", w, deflate),
        ("m/data/1", b, deflate),
        ("m/data/2", Vec::new(), false),
        ("m/version", b"3\n".to_vec(), false),
    ]
}

fn good() -> Vec<u8> {
    zip_of(&records(pickle(), f32s(&[0., 1., 2., 3., 4., 5.]), false))
}

/// Writes `bytes` to `<tmp>/<name>` and reads it.
fn read_bytes(bytes: &[u8]) -> Result<NamedTensors> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.pt");
    fs::write(&p, bytes).unwrap();
    read(&p)
}

fn err(bytes: &[u8]) -> String {
    format!("{:#}", read_bytes(bytes).unwrap_err())
}

/// The central-directory entry of `name`: its offset in `zip`.
fn central(zip: &[u8], name: &str) -> usize {
    (0..zip.len() - 46)
        .find(|&i| {
            zip[i..].starts_with(b"PK\x01\x02") && zip[i + 46..].starts_with(name.as_bytes())
        })
        .unwrap_or_else(|| panic!("no central entry {name}"))
}

/// Overwrites a 4-byte field (`crc` 16, `compressed` 20, `size` 24) of `name`'s central entry.
fn patch(zip: &mut [u8], name: &str, field: usize, v: u32) {
    let at = central(zip, name) + field;
    zip[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn an_honest_file_gives_its_values_views_included() {
    let ts = read_bytes(&good()).unwrap();
    let names: Vec<_> = ts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["b", "e", "tail", "w"], "sorted by name");
    let get = |n: &str| &ts.iter().find(|(k, _)| k == n).unwrap().1;
    assert_eq!(get("w").size(), [2, 3]);
    assert_eq!(
        Vec::<f32>::try_from(get("w").flatten(0, -1)).unwrap(),
        [0., 1., 2., 3., 4., 5.]
    );
    assert_eq!(Vec::<i64>::try_from(get("b")).unwrap(), [7, 8, 9]);
    assert_eq!(Vec::<f32>::try_from(get("tail")).unwrap(), [4., 5.]);
    assert_eq!(get("e").size(), [0, 3]);
    // Views are copies of their own: changing one leaves the other.
    let _ = get("tail").shallow_clone().fill_(-1.0);
    assert_eq!(
        Vec::<f32>::try_from(get("w").flatten(0, -1)).unwrap()[4],
        4.0
    );
    // Deflated records are legal (torch.save stores them; other writers may not).
    let deflated = zip_of(&records(pickle(), f32s(&[0., 1., 2., 3., 4., 5.]), true));
    assert_eq!(read_bytes(&deflated).unwrap().len(), 4);
}

#[test]
fn a_truncated_storage_record_is_refused_naming_the_storage() {
    let short = zip_of(&records(pickle(), f32s(&[0., 1., 2.]), false));
    let e = err(&short);
    assert!(
        e.contains("m.pt")
            && e.contains("storage 0 (6 elements of FloatStorage) needs 24 bytes")
            && e.contains("m/data/0 holds only 12")
            && e.contains("truncated"),
        "{e}"
    );
    let long = zip_of(&records(pickle(), f32s(&[0.; 7]), false));
    assert!(err(&long).contains("holds 28: the file is damaged"));
    let mut missing = records(pickle(), f32s(&[0.; 6]), false);
    missing.remove(3);
    assert!(err(&zip_of(&missing)).contains("has no record m/data/1"));
}

#[test]
fn lying_directory_sizes_are_refused() {
    // Stored, with the uncompressed size alone changed.
    let mut z = good();
    patch(&mut z, "m/data/0", 24, 16);
    assert!(err(&z).contains("two sizes"), "{}", err(&z));
    // Stored, both sizes larger: it reads into the next record, whose bytes fail the size or CRC.
    let mut z = good();
    patch(&mut z, "m/data/0", 20, 32);
    patch(&mut z, "m/data/0", 24, 32);
    assert!(err(&z).contains("m/data/0"), "{}", err(&z));
    // A record declared to run past the end of the file.
    let mut z = good();
    patch(&mut z, "m/data/1", 20, 1 << 30);
    patch(&mut z, "m/data/1", 24, 1 << 30);
    assert!(
        err(&z).contains("runs past the end of the file"),
        "{}",
        err(&z)
    );
}

#[test]
fn a_deflate_bomb_is_refused_without_inflating_it() {
    let zeros = vec![0u8; 64 << 20];
    // Declared as the 24 bytes the pickle wants, inflating to 64 MiB.
    let mut z = zip_of(&records(pickle(), zeros.clone(), true));
    patch(&mut z, "m/data/0", 24, 24);
    let t = std::time::Instant::now();
    let e = err(&z);
    assert!(
        e.contains("m/data/0 inflates to more than the 24 bytes"),
        "{e}"
    );
    assert!(t.elapsed().as_secs_f64() < 5.0, "{:?}", t.elapsed());
    // Declared honestly as 64 MiB: more than the storage needs, refused unread.
    let z = zip_of(&records(pickle(), zeros, true));
    let e = err(&z);
    assert!(
        e.contains("needs 24 bytes") && e.contains("holds 67108864"),
        "{e}"
    );
}

#[test]
fn records_declaring_more_than_the_cap_in_all_are_refused() {
    let mut recs = records(pickle(), f32s(&[0.; 6]), false);
    let names: Vec<String> = (0..5).map(|i| format!("m/pad{i}")).collect();
    for n in &names {
        recs.push((n.as_str(), vec![0; 10], true));
    }
    let mut z = zip_of(&recs);
    for n in &names {
        patch(&mut z, n, 24, 0xffff_fff0);
    }
    let e = err(&z);
    assert!(
        e.contains(&format!("more than {CHECKPOINT_MAX} bytes")),
        "{e}"
    );
}

#[test]
fn a_file_larger_than_the_cap_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.pt");
    let f = fs::File::create(&p).unwrap();
    f.set_len(CHECKPOINT_MAX + 1).unwrap(); // sparse
    let e = format!("{:#}", read(&p).unwrap_err());
    assert!(
        e.contains("huge.pt") && e.contains("more than a checkpoint may be"),
        "{e}"
    );
}

#[test]
fn crcs_are_checked_unless_torch_save_wrote_none() {
    let mut z = good();
    let b: Vec<u8> = [7i64, 8, 9].iter().flat_map(|x| x.to_le_bytes()).collect();
    let pos = z.windows(24).position(|w| w == b).unwrap();
    z[pos] = 6;
    assert!(
        err(&z).contains("m/data/1 does not match its CRC-32"),
        "{}",
        err(&z)
    );
    // torch.serialization.set_crc32_options(False) writes 0.
    let mut z = good();
    for (n, _, _) in records(Vec::new(), Vec::new(), false) {
        patch(&mut z, n, 16, 0);
    }
    assert!(read_bytes(&z).is_ok());
}

#[test]
fn what_is_not_a_zip_is_named_for_what_it_is() {
    let legacy = [
        0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
    ];
    let e = err(&legacy);
    assert!(
        e.contains("legacy format") && e.contains("torch.save(torch.load(p), q)"),
        "{e}"
    );
    assert!(e.contains("safetensors.torch.save_file"), "{e}");
    assert!(err(&pickle()).contains("bare pickle"));
    assert!(err(b"").contains("only 0 bytes"));
    assert!(err(b"\x10\0\0\0\0\0\0\0{\"a\":1}").contains("rename it"));
    assert!(err(b"hello world").contains("starts with PK"));
}

#[test]
fn torchscript_archives_and_duplicate_records_are_refused() {
    let mut recs = records(pickle(), f32s(&[0.; 6]), false);
    recs.push(("m/constants.pkl", P::new().op(b").").0, false));
    assert!(err(&zip_of(&recs)).contains("TorchScript archive"));
    // Two records named m/data/1: rename m/data/9 in both headers.
    let mut recs = records(pickle(), f32s(&[0.; 6]), false);
    recs.push(("m/data/9", vec![1; 24], false));
    let mut z = zip_of(&recs);
    let mut i = 0;
    while let Some(p) = z[i..].windows(8).position(|w| w == b"m/data/9") {
        z[i + p + 7] = b'1';
        i += p + 8;
    }
    assert!(
        err(&z).contains("two records of the same name"),
        "{}",
        err(&z)
    );
}

#[test]
fn non_finite_values_and_bad_bools_and_byte_order_are_refused() {
    let nan = zip_of(&records(
        pickle(),
        f32s(&[0., 1., f32::NAN, 3., 4., 5.]),
        false,
    ));
    assert!(err(&nan).contains("tensor w holds NaN or infinite values"));
    let bools = P::new()
        .dict()
        .str("mask")
        .tensor("0", "BoolStorage", 2, 0, &[2], &[1])
        .items()
        .0;
    let z = |data: Vec<u8>| {
        zip_of(&[
            ("m/data.pkl", bools.clone(), false),
            ("m/data/0", data, false),
        ])
    };
    assert!(read_bytes(&z(vec![0, 1])).is_ok());
    assert!(err(&z(vec![0, 7])).contains("bool tensor"));
    let mut big = records(pickle(), f32s(&[0.; 6]), false);
    big[1].1 = b"big".to_vec();
    assert!(err(&zip_of(&big)).contains("big-endian"));
}

#[test]
fn a_view_repeating_one_value_past_the_cap_is_refused_unbuilt() {
    let pkl = P::new()
        .dict()
        .str("w")
        .tensor("0", "FloatStorage", 1, 0, &[1 << 40], &[0])
        .items()
        .0;
    let z = zip_of(&[
        ("m/data.pkl", pkl, false),
        ("m/data/0", f32s(&[1.0]), false),
    ]);
    assert!(err(&z).contains("would take more than"), "{}", err(&z));
    // Repeated within reason, it is built.
    let pkl = P::new()
        .dict()
        .str("w")
        .tensor("0", "FloatStorage", 1, 0, &[3, 2], &[0, 0])
        .items()
        .0;
    let z = zip_of(&[
        ("m/data.pkl", pkl, false),
        ("m/data/0", f32s(&[1.5]), false),
    ]);
    let ts = read_bytes(&z).unwrap();
    assert_eq!(
        Vec::<f32>::try_from(ts[0].1.flatten(0, -1)).unwrap(),
        [1.5; 6]
    );
}

#[test]
fn every_cut_of_a_file_is_refused_without_panicking() {
    let z = good();
    for n in (0..z.len()).step_by(7) {
        assert!(
            read_bytes(&z[..n]).is_err(),
            "a cut at {n} of {} was accepted",
            z.len()
        );
    }
}

#[test]
fn libtorch_errors_lose_their_backtrace_unless_asked() {
    let e = "Internal torch error: PytorchStreamReader failed reading zip archive\nException raised from valid at inline_container.cc:245 (most recent call first):\nframe #0: c10::Error::Error";
    assert_eq!(
        shorten(e, false),
        "PytorchStreamReader failed reading zip archive"
    );
    assert_eq!(shorten(e, true), e);
}
