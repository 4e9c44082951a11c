//! Guarantees of the third reliability round: an explicit input is used or
//! refused, never replaced; the experiment's shared sections are not mixed;
//! results that cannot be true are errors; every flag is checked before any
//! data is read; sizes are bounded before anything is allocated.

use std::fs;
use std::os::unix::fs::symlink;

use crate::common::*;

/// `--data-dir` that cannot serve the dataset is refused, naming it, and is
/// never replaced by the system copy that the search would otherwise find.
#[test]
fn an_unusable_data_dir_is_refused_never_replaced() {
    require_fashion();
    let env = TestEnv::new();
    let root = env.path().join("dirs");
    fs::create_dir_all(&root).unwrap();
    let mk = |name: &str| {
        let d = root.join(name);
        fs::create_dir_all(&d).unwrap();
        d
    };
    let empty = mk("empty");
    let labels = mk("labels-only");
    for f in ["train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        fs::copy(format!("{FASHION_DIR}/{f}"), labels.join(f)).unwrap();
    }
    let misnamed = mk("misnamed");
    fs::copy(
        format!("{FASHION_DIR}/train-images-idx3-ubyte.gz"),
        misnamed.join("train-images.gz"),
    )
    .unwrap();
    let fifo = mk("fifo");
    let dir_in_place = mk("dir");
    fs::create_dir_all(dir_in_place.join("train-images-idx3-ubyte.gz")).unwrap();
    let dangling = mk("dangling");
    symlink("/nonexistent/x", dangling.join("train-images-idx3-ubyte.gz")).unwrap();
    let file = root.join("a-file");
    fs::write(&file, b"not a directory").unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(fifo.join("train-images-idx3-ubyte.gz"))
        .status()
        .unwrap();
    assert!(st.success());
    for d in [&empty, &labels, &misnamed, &fifo, &dir_in_place, &dangling, &file] {
        let exp = env.p("e");
        let ds = d.to_str().unwrap();
        let out = env.modeconn(&[
            "train-endpoints", "--exp", &exp, "--data-dir", ds, "--train-subset", "64",
            "--test-subset", "64", "--epochs", "1",
        ]);
        let msg = assert_clean_error(&out, ds);
        assert!(msg.contains(ds), "the refusal names {ds}: {msg}");
        assert!(!Path::new(&exp).join("config.json").exists(), "{ds}: nothing may be written");
    }
}

