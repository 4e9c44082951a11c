//! Tests of the CIFAR readers on generated files and archives.

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

#[test]
fn a_tar_header_claiming_a_huge_member_is_refused_before_allocating() {
    // A valid one-member tar whose size field is then made to claim 8 GiB.
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        let data = fake_records(2, &|i| vec![i as u8]);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(
            &mut h,
            "cifar-10-batches-bin/data_batch_1.bin",
            data.as_slice(),
        )
        .unwrap();
        b.finish().unwrap();
    }
    let size = format!("{:011o}\0", (1u64 << 33) - 1);
    tar_bytes[124..136].copy_from_slice(size.as_bytes());
    tar_bytes[148..156].copy_from_slice(b"        ");
    let sum: u32 = tar_bytes[..512].iter().map(|&b| u32::from(b)).sum();
    tar_bytes[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    let mut gz =
        flate2::write::GzEncoder::new(File::create(&archive).unwrap(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar_bytes).unwrap();
    gz.finish().unwrap();
    let err = format!(
        "{:#}",
        load(DatasetKind::Cifar10, &[dir.path().to_path_buf()], None).unwrap_err()
    );
    assert!(
        err.contains("claims") && err.contains("cifar-10-binary.tar.gz"),
        "{err}"
    );
}
