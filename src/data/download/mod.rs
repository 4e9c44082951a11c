//! Downloading the official dataset files, with md5 verification.
//!
//! URLs and checksums are the ones torchvision uses. Setting
//! `MODECONN_DOWNLOAD_BASE` replaces the scheme, host and directory of every
//! official URL (the file name is kept), e.g. to use a mirror.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use flate2::read::GzDecoder;
use md5::{Digest, Md5};

use super::DatasetKind;

/// Environment variable replacing the base of every official URL.
pub const BASE_ENV: &str = "MODECONN_DOWNLOAD_BASE";

/// One file to fetch: where from, its md5 (lowercase hex) and its name in the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    pub url: String,
    pub md5: String,
    pub file_name: String,
}

/// Bytes between progress lines.
const PROGRESS_STEP: u64 = 8 << 20;

/// (base URL, [(file name, md5)]) of the official distribution.
fn official_table(
    kind: DatasetKind,
) -> Result<(&'static str, &'static [(&'static str, &'static str)])> {
    Ok(match kind {
        DatasetKind::Mnist => (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            &[
                (
                    "train-images-idx3-ubyte.gz",
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "9fb629c4189551a2d022fa330f9573f3",
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
            ],
        ),
        // S3 *website* endpoints serve plain HTTP only; this is torchvision's URL.
        DatasetKind::FashionMnist => (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            &[
                (
                    "train-images-idx3-ubyte.gz",
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "25c81989df183df01b3e8a0aad5dffbe",
                ),
                (
                    "t10k-images-idx3-ubyte.gz",
                    "bef4ecab320f06d8554ea6380940ec79",
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
            ],
        ),
        DatasetKind::Cifar10 => (
            "https://www.cs.toronto.edu/~kriz/",
            &[("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530")],
        ),
        DatasetKind::Cifar100 => (
            "https://www.cs.toronto.edu/~kriz/",
            &[(
                "cifar-100-binary.tar.gz",
                "03b5dce01913d631647c71ecec9e9cb8",
            )],
        ),
        DatasetKind::ImageFolder => {
            bail!(
                "image-folder is a local dataset and cannot be downloaded; point --data-dir at it"
            )
        }
    })
}

/// The official files, with `base` (if given) replacing the URL base.
fn official_files_with_base(kind: DatasetKind, base: Option<&str>) -> Result<Vec<RemoteFile>> {
    let (official, files) = official_table(kind)?;
    let base = base.map_or(official, |b| b.trim_end_matches('/'));
    Ok(files
        .iter()
        .map(|(name, md5)| RemoteFile {
            url: format!("{}/{name}", base.trim_end_matches('/')),
            md5: md5.to_string(),
            file_name: name.to_string(),
        })
        .collect())
}

/// The official files of a dataset (honouring `MODECONN_DOWNLOAD_BASE`);
/// an error for `image-folder`.
pub fn official_files(kind: DatasetKind) -> Result<Vec<RemoteFile>> {
    let base = std::env::var(BASE_ENV)
        .ok()
        .filter(|b| !b.trim().is_empty());
    official_files_with_base(kind, base.as_deref())
}

/// Downloads the official files of `kind` into `dest` and unpacks archives.
pub fn download(kind: DatasetKind, dest: &Path) -> Result<()> {
    download_files(&official_files(kind)?, dest)
}

/// The MD5 of the file at `path`, as lowercase hex; the error names the file.
pub fn file_md5(path: &Path) -> anyhow::Result<String> {
    File::open(path)
        .and_then(|f| md5_hex(BufReader::new(f)))
        .with_context(|| format!("cannot read {}", path.display()))
}

/// The MD5 of everything `reader` yields, as lowercase hex.
pub fn md5_hex(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match reader.read(&mut buf)? {
            0 => return Ok(format!("{:x}", hasher.finalize())),
            k => hasher.update(&buf[..k]),
        }
    }
}

/// Streams `file.url` into `part`, printing progress; returns the md5 of what was written.
fn fetch(agent: &ureq::Agent, file: &RemoteFile, part: &Path) -> Result<String> {
    let resp = agent
        .get(&file.url)
        .set("Accept-Encoding", "identity")
        .call()
        .map_err(|e| match e {
            ureq::Error::Status(code, r) => {
                anyhow!("downloading {}: HTTP {code} {}", file.url, r.status_text())
            }
            e => anyhow!(e).context(format!("downloading {}", file.url)),
        })?;
    let total = resp
        .header("Content-Length")
        .and_then(|v| v.parse::<u64>().ok());
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let of_total = total.map_or(String::new(), |t| format!(" of {:.1} MiB", mib(t)));
    eprintln!(
        "downloading {} ({})",
        file.url,
        total.map_or("size unknown".into(), |t| format!("{t} bytes"))
    );
    let mut reader = resp.into_reader();
    // A new file, never a planted link: an old partial file (or a link in
    // its place) is removed first, and the open refuses to follow one.
    let _ = std::fs::remove_file(part);
    let mut out = BufWriter::new({
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(part)
            .with_context(|| format!("cannot create {}", part.display()))?
    });
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let (mut done, mut next_report) = (0u64, PROGRESS_STEP);
    loop {
        let k = reader
            .read(&mut buf)
            .with_context(|| format!("downloading {}", file.url))?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        out.write_all(&buf[..k])
            .with_context(|| format!("cannot write {}", part.display()))?;
        done += k as u64;
        if done >= next_report {
            eprintln!("  {}: {:.1} MiB{of_total}", file.file_name, mib(done));
            next_report += PROGRESS_STEP;
        }
    }
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {}", part.display()))?;
    eprintln!("  {}: done, {done} bytes", file.file_name);
    Ok(format!("{:x}", hasher.finalize()))
}

/// Downloads each file into `dest` (to `<name>.part`, renamed once its md5 is
/// verified), skipping files already present with the right md5, then unpacks
/// `.tar.gz` archives into `dest`. Gzipped IDX files stay as they are.
pub fn download_files(files: &[RemoteFile], dest: &Path) -> Result<()> {
    let created = !dest.exists();
    fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let r = download_into(files, dest);
    // A failed download leaves no empty directory that a later --data-dir
    // would take for a dataset.
    if r.is_err() && created && fs::read_dir(dest).is_ok_and(|mut d| d.next().is_none()) {
        let _ = fs::remove_dir(dest);
    }
    r
}

fn download_into(files: &[RemoteFile], dest: &Path) -> Result<()> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(120))
        .build();
    for file in files {
        let name = &file.file_name;
        if name.is_empty()
            || Path::new(name)
                .file_name()
                .is_none_or(|n| n != name.as_str())
        {
            bail!("download file name {name:?} must be a plain file name");
        }
        let expected = file.md5.to_ascii_lowercase();
        let path = dest.join(name);
        let differs = path.is_file() && file_md5(&path)? != expected;
        let present = path.is_file() && !differs;
        if differs {
            eprintln!(
                "{}: md5 differs from the official {expected}; downloading again",
                path.display()
            );
        }
        if present {
            eprintln!("{}: already present, md5 ok", path.display());
        } else {
            let part = dest.join(format!("{name}.part"));
            let got = match fetch(&agent, file, &part) {
                Ok(got) => got,
                Err(e) if differs => {
                    let _ = fs::remove_file(&part);
                    return Err(e.context(format!(
                        "{} is present but is not the official file (its MD5 differs; a recompressed copy such as \
                         Debian's has other bytes). The training commands read it as it is: pass --data-dir {}",
                        path.display(),
                        dest.display()
                    )));
                }
                Err(e) => {
                    let _ = fs::remove_file(&part);
                    return Err(e);
                }
            };
            if got != expected {
                let _ = fs::remove_file(&part);
                bail!(
                    "md5 mismatch for {name} from {}: expected {expected}, got {got}",
                    file.url
                );
            }
            fs::rename(&part, &path).with_context(|| {
                format!("cannot rename {} to {}", part.display(), path.display())
            })?;
        }
        if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            eprintln!("unpacking {} into {}", path.display(), dest.display());
            let f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            tar::Archive::new(GzDecoder::new(BufReader::new(f)))
                .unpack(dest)
                .with_context(|| {
                    format!("cannot unpack {} into {}", path.display(), dest.display())
                })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
