//! Dataset loading for modeconn, independent of any tensor library.
//!
//! Every loader produces a [`RawDataset`]: `u8` images in HWC order, laid out
//! image after image, plus `u32` labels, for a train and a test split.
//! Supported sources are MNIST / Fashion-MNIST (IDX files, optionally
//! gzipped), CIFAR-10 / CIFAR-100 (the official binary versions, as a
//! directory or read straight from the `.tar.gz`) and a generic
//! `<root>/{train,test}/<class>/*.{jpg,png}` image folder with a decoded cache.
//! [`download`] fetches the official files; [`balanced_subset`] picks
//! deterministic class-balanced subsets.

pub(crate) mod cifar;
mod download;
mod folder;
pub(crate) mod idx;
mod subset;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Result};

pub use download::{download, download_files, file_md5, md5_hex, official_files, RemoteFile};
pub use subset::balanced_subset;

/// The datasets modeconn knows how to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    Mnist,
    FashionMnist,
    Cifar10,
    Cifar100,
    ImageFolder,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 5] = [
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::ImageFolder,
    ];

    /// Parses a CLI name (`mnist`, `fashion-mnist`, `cifar10`, `cifar100`,
    /// `image-folder`); case-insensitive, `_` accepted for `-`.
    pub fn parse(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        match Self::ALL.iter().find(|k| k.name() == norm) {
            Some(k) => Ok(*k),
            None => {
                let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
                bail!(
                    "unknown dataset '{s}'; expected one of: {}",
                    names.join(", ")
                )
            }
        }
    }

    /// The CLI name, also used as the per-dataset directory name.
    pub fn name(&self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::ImageFolder => "image-folder",
        }
    }
}

impl crate::choice::Choice for DatasetKind {
    const ALL: &'static [Self] = &DatasetKind::ALL;
    fn name(self) -> &'static str {
        DatasetKind::name(&self)
    }
    fn help(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "MNIST digits (IDX files)",
            DatasetKind::FashionMnist => {
                "Fashion-MNIST (IDX files; Debian's copy is found by itself)"
            }
            DatasetKind::Cifar10 => "CIFAR-10 (the binary version)",
            DatasetKind::Cifar100 => "CIFAR-100 (the binary version)",
            DatasetKind::ImageFolder => {
                "a directory of train/ and test/ folders, one subfolder per class"
            }
        }
    }
}

impl FromStr for DatasetKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Images in HWC byte order, image after image: images.len() == n*height*width*channels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawSplit {
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub n: usize,
}

impl RawSplit {
    /// The images and labels at `idx`, in that order. `image_len` is
    /// height*width*channels.
    ///
    /// # Panics
    /// If an index is out of range (indices are program-generated, not data).
    pub fn select(&self, idx: &[usize], image_len: usize) -> RawSplit {
        let mut images = Vec::with_capacity(idx.len() * image_len);
        for &i in idx {
            images.extend_from_slice(&self.images[i * image_len..(i + 1) * image_len]);
        }
        RawSplit {
            images,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            n: idx.len(),
        }
    }
}

/// A decoded dataset with both splits.
#[derive(Clone, Debug)]
pub struct RawDataset {
    pub kind: DatasetKind,
    pub classes: Vec<String>,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub train: RawSplit,
    pub test: RawSplit,
    /// The directory (or archive) actually read.
    pub source: PathBuf,
}

impl RawDataset {
    /// Bytes per image: height * width * channels.
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
}

/// Loads a dataset. `data_dir` is the `--data-dir` flag (required for
/// `image-folder`, where it is the root); `cache_dir` is where decoded caches
/// may be written (never inside the dataset dir, which may be read-only).
pub fn load(kind: DatasetKind, data_dir: Option<&Path>, cache_dir: &Path) -> Result<RawDataset> {
    // A --data-dir that does not exist is a mistake, not a reason to use
    // some other copy found elsewhere.
    if let Some(d) = data_dir.filter(|d| !d.exists()) {
        bail!(
            "--data-dir {} does not exist. Pass the directory that holds {}, fetch it with `modeconn download {} --data-dir {}`, or leave --data-dir out to search data/{} and the system copies",
            d.display(),
            kind.name(),
            kind.name(),
            d.display(),
            kind.name()
        );
    }
    if let Some(d) = data_dir.filter(|d| !d.is_dir()) {
        bail!(
            "--data-dir {} is not a directory; pass the directory that holds the {} files",
            d.display(),
            kind.name()
        );
    }
    let raw = match kind {
        DatasetKind::Mnist | DatasetKind::FashionMnist => {
            idx::load(kind, &default_search_dirs(kind, data_dir), data_dir)
        }
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
            cifar::load(kind, &default_search_dirs(kind, data_dir), data_dir)
        }
        DatasetKind::ImageFolder => match data_dir {
            Some(root) => folder::load(root, cache_dir),
            None => bail!(
                "the image-folder dataset needs --data-dir <root>, a directory with \
                 train/<class>/*.jpg|png and test/<class>/*.jpg|png"
            ),
        },
    }?;
    if raw.classes.len() < 2 {
        bail!(
            "{} holds {} class{} ({:?}); a classifier needs at least 2 (for an image folder, one sub-folder per class under train/ and test/)",
            raw.source.display(),
            raw.classes.len(),
            if raw.classes.len() == 1 { "" } else { "es" },
            raw.classes
        );
    }
    for (split, s) in [("training", &raw.train), ("test", &raw.test)] {
        if s.n == 0 {
            bail!(
                "the {split} split of {} ({}) holds no images; a dataset needs at least one of each",
                kind.name(),
                data_dir.map_or_else(|| "found by search".to_string(), |d| d.display().to_string())
            );
        }
    }
    Ok(raw)
}

/// Directories searched for a dataset: `data_dir` and `<data_dir>/<name>`
/// when given (an explicit directory is used or refused, never replaced by
/// another copy), else `data/<name>` relative to the current directory, then
/// `/usr/share/datasets/<name>`. For `image-folder` only `data_dir` itself.
pub fn default_search_dirs(kind: DatasetKind, data_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = data_dir {
        dirs.push(d.to_path_buf());
        if kind == DatasetKind::ImageFolder {
            return dirs;
        }
        dirs.push(d.join(kind.name()));
        return dirs;
    }
    if kind != DatasetKind::ImageFolder {
        dirs.push(Path::new("data").join(kind.name()));
        dirs.push(Path::new("/usr/share/datasets").join(kind.name()));
    }
    dirs
}

/// The error for a dataset found nowhere: lists every path tried and the fix.
fn not_found(kind: DatasetKind, searched: &[PathBuf], data_dir: Option<&Path>) -> anyhow::Error {
    let dir = data_dir.map_or_else(
        || Path::new("data").join(kind.name()).display().to_string(),
        |d| d.display().to_string(),
    );
    let mut msg = match data_dir {
        Some(d) => format!(
            "--data-dir {} holds no {kind} dataset (it is used as given, never replaced by another copy); searched:\n",
            d.display()
        ),
        None => format!("{kind} dataset not found; searched:\n"),
    };
    for p in searched {
        msg += &format!("  {}\n", p.display());
    }
    msg += &format!("fix: run `modeconn download {kind} --data-dir {dir}`");
    if data_dir.is_none() {
        msg += " (data/<name> is searched by default)";
    } else {
        msg += ", or leave --data-dir out to search data/<name> and /usr/share/datasets";
    }
    if kind == DatasetKind::FashionMnist {
        msg += ", or `apt-get install dataset-fashion-mnist` (installs /usr/share/datasets/fashion-mnist)";
    }
    anyhow::anyhow!(msg)
}

/// Checks that every label is below `num_classes`.
fn check_labels(labels: &[u32], num_classes: usize, file: &Path) -> Result<()> {
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= num_classes)
    {
        bail!(
            "{}: label {l} at record {i} is out of range (expected 0..{num_classes})",
            file.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_round_trip() {
        for k in DatasetKind::ALL {
            assert_eq!(DatasetKind::parse(k.name()).unwrap(), k);
            assert_eq!(k.name().parse::<DatasetKind>().unwrap(), k);
        }
        assert_eq!(
            DatasetKind::parse("Fashion_MNIST").unwrap(),
            DatasetKind::FashionMnist
        );
        let err = DatasetKind::parse("svhn").unwrap_err().to_string();
        assert!(err.contains("svhn") && err.contains("cifar100"), "{err}");
    }

    #[test]
    fn search_dirs_order() {
        let d = Path::new("/x");
        assert_eq!(
            default_search_dirs(DatasetKind::Cifar10, Some(d)),
            vec![PathBuf::from("/x"), PathBuf::from("/x/cifar10"),]
        );
        assert_eq!(default_search_dirs(DatasetKind::Mnist, None).len(), 2);
        assert_eq!(
            default_search_dirs(DatasetKind::ImageFolder, Some(d)),
            vec![PathBuf::from("/x")]
        );
        assert!(default_search_dirs(DatasetKind::ImageFolder, None).is_empty());
    }

    #[test]
    fn select_picks_images_and_labels() {
        let s = RawSplit {
            images: (0..12).collect(),
            labels: vec![0, 1, 2],
            n: 3,
        };
        let t = s.select(&[2, 0], 4);
        assert_eq!(t.images, vec![8, 9, 10, 11, 0, 1, 2, 3]);
        assert_eq!(t.labels, vec![2, 0]);
        assert_eq!(t.n, 2);
    }

    #[test]
    fn image_folder_requires_data_dir() {
        let err = load(DatasetKind::ImageFolder, None, Path::new("/tmp")).unwrap_err();
        assert!(err.to_string().contains("--data-dir"));
    }

    #[test]
    fn missing_dataset_lists_paths_and_fix() {
        let d = Path::new("/nowhere/dl");
        let dirs = default_search_dirs(DatasetKind::FashionMnist, Some(d));
        let err = not_found(DatasetKind::FashionMnist, &dirs, Some(d)).to_string();
        for p in &dirs {
            assert!(err.contains(&p.display().to_string()), "{err}");
        }
        assert!(
            err.contains("modeconn download fashion-mnist --data-dir /nowhere/dl"),
            "{err}"
        );
        assert!(
            err.contains("apt-get install dataset-fashion-mnist"),
            "{err}"
        );
        let err = not_found(DatasetKind::Mnist, &[], None).to_string();
        assert!(
            err.contains("--data-dir data/mnist") && !err.contains("apt-get"),
            "{err}"
        );

        // Through `load`: only checkable when no copy exists in the default places.
        let tmp = tempfile::tempdir().unwrap();
        for kind in [
            DatasetKind::Mnist,
            DatasetKind::Cifar10,
            DatasetKind::Cifar100,
        ] {
            if let Err(e) = load(kind, Some(tmp.path()), tmp.path()) {
                let e = e.to_string();
                assert!(
                    e.contains(&tmp.path().join(kind.name()).display().to_string()),
                    "{e}"
                );
                assert!(
                    e.contains(&format!("modeconn download {kind} --data-dir")),
                    "{e}"
                );
            }
        }
    }
}
