//! Tests of downloads against a loopback HTTP server.

use super::*;
use crate::data::{cifar, idx, load};
use std::io::BufRead;
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

/// Serves `files` (by URL path) over HTTP/1.1 on loopback for at most
/// `max_requests` requests or 30 s, whichever comes first. Returns the base URL.
fn serve(files: Vec<(String, Vec<u8>)>, max_requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < max_requests && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    served += 1;
                    let _ = respond(stream, &files);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(_) => break,
            }
        }
    });
    base
}

fn respond(stream: TcpStream, files: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let mut stream = stream;
    match files.iter().find(|(p, _)| p == path) {
        Some((_, body)) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(body)?;
        }
        None => stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
    }
    stream.flush()
}

fn md5_of(bytes: &[u8]) -> String {
    md5_hex(bytes).unwrap()
}

#[test]
fn loopback_download_then_load() {
    let files = idx::tiny_mnist_files(true);
    let base = serve(
        files
            .iter()
            .map(|(n, b)| (format!("/mnist/{n}"), b.clone()))
            .collect(),
        files.len(),
    );
    let remote: Vec<RemoteFile> = files
        .iter()
        .map(|(n, b)| RemoteFile {
            url: format!("{base}/mnist/{n}"),
            md5: md5_of(b),
            file_name: n.clone(),
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dl");
    download_files(&remote, &dest).unwrap();
    for (n, b) in &files {
        assert_eq!(&fs::read(dest.join(n)).unwrap(), b);
        assert!(!dest.join(format!("{n}.part")).exists());
    }
    let ds = load(DatasetKind::Mnist, Some(&dest), tmp.path()).unwrap();
    assert_eq!((ds.train.n, ds.test.n), (5, 2));
    assert_eq!(ds.train.labels, vec![0, 1, 2, 9, 3]);
    // The server has stopped (request budget spent): present files must be skipped.
    download_files(&remote, &dest).unwrap();
}

#[test]
fn wrong_md5_fails_naming_the_file() {
    let body = idx::gzip(b"not what you expected");
    let base = serve(
        vec![("/x/train-labels-idx1-ubyte.gz".into(), body.clone())],
        1,
    );
    let file = RemoteFile {
        url: format!("{base}/x/train-labels-idx1-ubyte.gz"),
        md5: "0123456789abcdef0123456789abcdef".into(),
        file_name: "train-labels-idx1-ubyte.gz".into(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let err = download_files(&[file], tmp.path()).unwrap_err().to_string();
    assert!(err.contains("train-labels-idx1-ubyte.gz"), "{err}");
    assert!(
        err.contains("0123456789abcdef0123456789abcdef") && err.contains(&md5_of(&body)),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "no file or .part may remain"
    );
}

#[test]
fn http_error_names_the_url() {
    let base = serve(Vec::new(), 1);
    let file = RemoteFile {
        url: format!("{base}/missing.gz"),
        md5: "00".into(),
        file_name: "missing.gz".into(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let err = download_files(&[file], tmp.path()).unwrap_err().to_string();
    assert!(err.contains("404") && err.contains("missing.gz"), "{err}");
}

#[test]
fn a_failed_download_leaves_no_empty_directory_behind() {
    let base = serve(Vec::new(), 1);
    let file = RemoteFile {
        url: format!("{base}/missing.gz"),
        md5: "00".into(),
        file_name: "missing.gz".into(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("new");
    assert!(download_files(&[file], &dest).is_err());
    assert!(
        !dest.exists(),
        "an empty {} was left behind",
        dest.display()
    );
}

#[test]
fn a_present_file_of_other_bytes_that_cannot_be_fetched_is_named_with_the_way_out() {
    let base = serve(Vec::new(), 1);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.gz"), b"recompressed").unwrap();
    let file = RemoteFile {
        url: format!("{base}/a.gz"),
        md5: md5_of(b"official"),
        file_name: "a.gz".into(),
    };
    let err = format!("{:#}", download_files(&[file], tmp.path()).unwrap_err());
    assert!(
        err.contains("is present but is not the official file") && err.contains("--data-dir"),
        "{err}"
    );
    // The user's file is kept.
    assert_eq!(
        std::fs::read(tmp.path().join("a.gz")).unwrap(),
        b"recompressed"
    );
}

#[test]
fn loopback_cifar_archive_is_unpacked() {
    let names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (i, name) in names.iter().enumerate() {
        let data = cifar::fake_records(2, &|_| vec![i as u8]);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder
            .append_data(
                &mut h,
                format!("cifar-10-batches-bin/{name}"),
                data.as_slice(),
            )
            .unwrap();
    }
    let archive = builder.into_inner().unwrap().finish().unwrap();
    let base = serve(vec![("/cifar-10-binary.tar.gz".into(), archive.clone())], 1);
    let file = RemoteFile {
        url: format!("{base}/cifar-10-binary.tar.gz"),
        md5: md5_of(&archive),
        file_name: "cifar-10-binary.tar.gz".into(),
    };
    let tmp = tempfile::tempdir().unwrap();
    download_files(&[file], tmp.path()).unwrap();
    assert!(tmp
        .path()
        .join("cifar-10-batches-bin/test_batch.bin")
        .is_file());
    let ds = load(DatasetKind::Cifar10, Some(tmp.path()), tmp.path()).unwrap();
    assert_eq!(ds.source, tmp.path().join("cifar-10-batches-bin"));
    assert_eq!(ds.train.labels, vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
    assert_eq!(ds.test.labels, vec![5, 5]);
}

#[test]
fn official_urls_and_override() {
    let official = official_files_with_base(DatasetKind::FashionMnist, None).unwrap();
    assert_eq!(official.len(), 4);
    assert_eq!(
        official[0].url,
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz"
    );
    let mirrored = official_files_with_base(
        DatasetKind::FashionMnist,
        Some("http://127.0.0.1:9/mirror/"),
    )
    .unwrap();
    for (m, o) in mirrored.iter().zip(&official) {
        assert_eq!(m.url, format!("http://127.0.0.1:9/mirror/{}", o.file_name));
        assert_eq!((&m.md5, &m.file_name), (&o.md5, &o.file_name));
    }
    let cifar = official_files_with_base(DatasetKind::Cifar100, Some("file-server")).unwrap();
    assert_eq!(cifar[0].url, "file-server/cifar-100-binary.tar.gz");
    assert_eq!(
        official_files_with_base(DatasetKind::Cifar10, None).unwrap()[0].url,
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    );
    assert!(official_files(DatasetKind::ImageFolder).is_err());
    for kind in [
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
    ] {
        let files = official_files_with_base(kind, None).unwrap();
        assert!(files
            .iter()
            .all(|f| f.md5.len() == 32 && f.url.ends_with(&f.file_name)));
    }
}

/// `download()` end to end through `MODECONN_DOWNLOAD_BASE`: the loopback
/// server only answers the rewritten path, with content that cannot match
/// the real md5, so reaching the md5 check proves the URL was rewritten.
/// (No other test reads this variable.)
#[test]
fn download_uses_base_override() {
    let base = serve(
        vec![(
            "/mirror/train-images-idx3-ubyte.gz".into(),
            b"fake".to_vec(),
        )],
        1,
    );
    std::env::set_var(BASE_ENV, format!("{base}/mirror/"));
    let urls: Vec<String> = official_files(DatasetKind::FashionMnist)
        .unwrap()
        .into_iter()
        .map(|f| f.url)
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let result = download(DatasetKind::FashionMnist, tmp.path());
    std::env::remove_var(BASE_ENV);
    assert_eq!(urls[3], format!("{base}/mirror/t10k-labels-idx1-ubyte.gz"));
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("md5 mismatch for train-images-idx3-ubyte.gz"),
        "{err}"
    );
    assert!(
        err.contains("8d4fb7e6c68d591d4c3dfef9ec88bf0d") && err.contains(&md5_of(b"fake")),
        "{err}"
    );
}
