//! Shared helpers: a temporary workspace per test, the real binary, JSON and
//! tensor readers, and one fitted Fashion-MNIST experiment shared (read-only,
//! or copied) by the tests that only need *some* trained endpoints and curve.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use std::path::{Path, PathBuf};

pub use serde_json::Value;
pub use tch::{Device, Kind, Tensor};

/// Where Debian's `dataset-fashion-mnist` installs the four IDX files.
pub const FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The PyTorch state-dict names of `seed-convnet`, written out independently of the spec.
pub const SEED_CONVNET_KEYS: [&str; 10] = [
    "classifier.2.bias",
    "classifier.2.weight",
    "classifier.5.bias",
    "classifier.5.weight",
    "features.0.bias",
    "features.0.weight",
    "features.3.bias",
    "features.3.weight",
    "features.6.bias",
    "features.6.weight",
];

/// A temporary directory for one test; the binary runs inside it, with its
/// dataset cache under `<tmp>/cache`.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        require_fashion();
        TestEnv {
            dir: tempfile::Builder::new()
                .prefix("modeconn-test")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<tmp>/<name>` as a string, for command lines.
    pub fn p(&self, name: &str) -> String {
        self.path().join(name).display().to_string()
    }

    pub fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_modeconn"));
        c.args(args)
            .current_dir(self.path())
            .env("MODECONN_QUIET", "1")
            .env("MODECONN_CACHE", self.cache())
            .env_remove("XDG_CACHE_HOME");
        c
    }

    /// Runs the real binary to completion, within [`deadline`].
    pub fn modeconn(&self, args: &[&str]) -> Output {
        run_with_deadline(self.command(args), args, deadline())
    }

    /// Runs the real binary to completion within `limit` (for the few calls
    /// that need longer than the default deadline, or far less).
    pub fn modeconn_within(&self, limit: Duration, args: &[&str]) -> Output {
        run_with_deadline(self.command(args), args, limit)
    }

    /// The binary with extra environment variables (an empty value removes
    /// the variable), within `limit`.
    pub fn modeconn_within_env(
        &self,
        limit: Duration,
        vars: &[(&str, &str)],
        args: &[&str],
    ) -> Output {
        let mut c = self.command(args);
        for (k, v) in vars {
            if v.is_empty() {
                c.env_remove(k);
            } else {
                c.env(k, v);
            }
        }
        run_with_deadline(c, args, limit)
    }

    /// Runs the binary and fails the test (showing its stderr) unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.modeconn(args);
        assert_ok(&out, args);
        out
    }

    /// Starts the binary in the background (output to files in the temp dir, so it never blocks on a pipe).
    pub fn spawn(&self, args: &[&str], tag: &str) -> Child {
        let so = fs::File::create(self.path().join(format!("{tag}.stdout"))).unwrap();
        let se = fs::File::create(self.path().join(format!("{tag}.stderr"))).unwrap();
        self.command(args)
            .stdin(Stdio::null())
            .stdout(so)
            .stderr(se)
            .spawn()
            .expect("cannot spawn modeconn")
    }

    /// A copy of the shared fitted experiment, for tests that write into it.
    pub fn copy_of_fixture(&self, name: &str) -> PathBuf {
        let dst = self.path().join(name);
        copy_dir(&fixture().join("exp"), &dst);
        dst
    }
}

/// How long one run of the binary may take before the test fails as a hang:
/// `MODECONN_TEST_DEADLINE_SECS`, 300 s by default (the slowest call in the
/// suite takes under a minute on 2 cores).
pub fn deadline() -> Duration {
    let secs = std::env::var("MODECONN_TEST_DEADLINE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

/// Runs `cmd` (stdin closed, output to files so a chatty child never blocks
/// on a full pipe); past `limit` it is killed and the test fails with its
/// command line, the elapsed time and the end of its stderr.
pub fn run_with_deadline(mut cmd: Command, args: &[&str], limit: Duration) -> Output {
    let dir = tempfile::tempdir().expect("tempdir for the child's output");
    let (so, se) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&so).unwrap())
        .stderr(fs::File::create(&se).unwrap())
        .spawn()
        .expect("cannot run the modeconn binary");
    let status = loop {
        if let Some(st) = child.try_wait().expect("waiting for modeconn") {
            break st;
        }
        if started.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            let err = fs::read_to_string(&se).unwrap_or_default();
            let tail: String = err
                .chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!(
                "deadline: `modeconn {}` was still running after {:.0} s (limit {} s) and was killed; the end of its stderr:\n{tail}",
                args.join(" "),
                started.elapsed().as_secs_f64(),
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: fs::read(&so).unwrap_or_default(),
        stderr: fs::read(&se).unwrap_or_default(),
    }
}

pub fn require_fashion() {
    assert!(
        Path::new(FASHION_DIR).join("train-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST is missing from {FASHION_DIR}: install Debian's dataset-fashion-mnist (the Makefile does)"
    );
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn assert_ok(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "modeconn {} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

/// Asserts a clean, reported failure (exit 1, `error: ...`, no panic); returns stderr.
pub fn assert_clean_error(out: &Output, what: &str) -> String {
    let e = stderr(out);
    assert!(!e.contains("panicked"), "{what}: the binary panicked:\n{e}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: expected exit code 1, stderr:\n{e}"
    );
    assert!(
        e.starts_with("error:"),
        "{what}: stderr does not start with 'error:':\n{e}"
    );
    e
}

pub fn read_json(path: &Path) -> Value {
    let s =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let s =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad JSON line {l:?}: {e}", path.display()))
        })
        .collect()
}

pub fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The `epoch` fields of a log.jsonl.
pub fn log_epochs(path: &Path) -> Vec<u64> {
    read_jsonl(path)
        .iter()
        .map(|l| l["epoch"].as_u64().expect("epoch"))
        .collect()
}

/// Every tensor of a checkpoint, by name (through the library's reader).
pub fn tensors(path: &Path) -> BTreeMap<String, Tensor> {
    modeconn::checkpoint::read_tensors(path)
        .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
        .0
        .into_iter()
        .collect()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// Max abs difference over every tensor of two checkpoints with the same keys.
pub fn max_diff_files(a: &Path, b: &Path) -> f64 {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "{} and {} have different keys",
        a.display(),
        b.display()
    );
    max_diff_all(&ta, &tb)
}

/// Max abs difference over every tensor of `a` and its namesake in `b`.
pub fn max_diff_all(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> f64 {
    a.iter()
        .map(|(k, t)| max_abs_diff(t, &b[k]))
        .fold(0.0, f64::max)
}

pub fn mtime(p: &Path) -> std::time::SystemTime {
    fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every regular file under `dir` with its bytes, by relative path.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            out.insert(PathBuf::from(e.file_name()), fs::read(e.path()).unwrap());
        }
    }
    out
}

pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, cond: impl FnMut() -> bool) -> bool {
    wait_for_every(limit, Duration::from_millis(20), cond)
}

/// Polls `cond` every `every` until it holds or `limit` passes; returns whether it held.
pub fn wait_for_every(limit: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(every);
    }
    cond()
}

/// Number of lines of a file (0 when it does not exist).
pub fn line_count(p: &Path) -> usize {
    fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// The `epoch` recorded in a checkpoint's modeconn metadata.
pub fn meta_epoch(p: &Path) -> usize {
    modeconn::checkpoint::read_tensors(p)
        .unwrap_or_else(|e| panic!("{}: {e:#}", p.display()))
        .1
        .unwrap_or_else(|| panic!("{} has no modeconn metadata", p.display()))
        .epoch
}

/// May a test skip for want of a dependency? Not in CI (`CI` set) nor where
/// `MODECONN_REQUIRE_ALL` is set (`.ci/run` sets it): there a missing
/// dependency is a failure, never a silent pass.
pub fn skips_allowed() -> bool {
    std::env::var_os("CI").is_none() && std::env::var_os("MODECONN_REQUIRE_ALL").is_none()
}

/// `../shared/<rel>` next to the repository, or None (with a note) when this
/// checkout lacks it and skips are allowed ([`skips_allowed`]); in CI its
/// absence fails the test.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared")).join(rel);
    if p.exists() {
        Some(p)
    } else if skips_allowed() {
        eprintln!("note: {} is absent; skipping this test", p.display());
        None
    } else {
        panic!(
            "{} is absent: CI runs with ../shared beside the checkout, and this test must run there",
            p.display()
        )
    }
}

/// A Fashion-MNIST batch of `n` test images (NCHW float, contiguous) as the
/// experiment's config.json `data` section loads them.
pub fn test_batch(exp: &Path, n: i64) -> Tensor {
    let cfg: modeconn::loader::DataConfig =
        serde_json::from_value(read_json(&exp.join("config.json"))["data"].clone()).unwrap();
    let data = modeconn::loader::load(&cfg, Device::Cpu, None).unwrap();
    let n = n.min(data.test.len());
    let (x, _) = data.test.slice(0, n);
    data.norm.apply(&x, false)
}

/// Logits of `params` on `x` (eval mode, fp32).
pub fn logits(
    model: &modeconn::model::Model,
    params: &modeconn::model::Params,
    x: &Tensor,
) -> Tensor {
    tch::no_grad(|| {
        model
            .forward(
                params,
                x,
                modeconn::model::BnMode::Eval,
                modeconn::model::Precision::Fp32,
            )
            .expect("the forward of a checked model")
    })
}

// ---------------------------------------------------------------------------
// The shared experiment: seed-convnet endpoints trained for 3 epochs on 3000
// Fashion-MNIST images (seeds 1 and 2) and a quadratic Bezier curve fitted
// for 2 epochs between them. Its train-endpoints stdout is kept in
// `<fixture>/train.stdout`. Built once per test process, in
// target/tmp/fixture-<pid>/exp; tests that write into an experiment copy it.
// ---------------------------------------------------------------------------

pub const FIXTURE_TRAIN: &[&str] = &[
    "--train-subset",
    "3000",
    "--test-subset",
    "1000",
    "--epochs",
    "3",
    "--batch-size",
    "32",
];

static FIXTURE: OnceLock<PathBuf> = OnceLock::new();

pub fn fixture() -> &'static Path {
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> PathBuf {
    require_fashion();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    // Remove fixtures of test processes that are gone.
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix("fixture-") {
                if Path::new("/proc").is_dir() && !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = root.join(format!("fixture-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let exp = dir.join("exp");
    let e = exp.display().to_string();
    let run = |args: &[&str]| -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_modeconn"));
        c.args(args)
            .current_dir(&dir)
            .env("MODECONN_QUIET", "1")
            .env("MODECONN_CACHE", dir.join("cache"));
        let out = run_with_deadline(c, args, deadline());
        assert_ok(&out, args);
        out
    };
    let mut a = vec!["--json", "train-endpoints", "--exp", &e, "--models", "2"];
    a.extend_from_slice(FIXTURE_TRAIN);
    let out = run(&a);
    fs::write(dir.join("train.stdout"), &out.stdout).unwrap();
    run(&[
        "fit-curve",
        "--exp",
        &e,
        "--epochs",
        "2",
        "--batch-size",
        "32",
    ]);
    dir
}

/// The shared experiment directory (do not write into it; copy it).
pub fn fixture_exp() -> PathBuf {
    fixture().join("exp")
}

/// Every file of an experiment, in every folder, with its bytes (the lock
/// file aside), to compare before and after.
pub fn experiment_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != ".lock") {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

pub fn assert_unchanged(before: &[(PathBuf, Vec<u8>)], exp: &Path, what: &str) {
    let after = experiment_files(exp);
    let names = |s: &[(PathBuf, Vec<u8>)]| s.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(before),
        names(&after),
        "{what}: files were added or removed"
    );
    for ((p, a), (_, b)) in before.iter().zip(&after) {
        assert!(a == b, "{what}: {} changed", p.display());
    }
}

/// Rewrites a checkpoint through `edit` (tensors and metadata).
pub fn rewrite(
    path: &Path,
    edit: impl FnOnce(&mut Vec<(String, Tensor)>, &mut Option<modeconn::checkpoint::Meta>),
) {
    let (mut t, mut meta) = modeconn::checkpoint::read_tensors(path).unwrap();
    edit(&mut t, &mut meta);
    modeconn::checkpoint::write_tensors(path, &t, meta.as_ref()).unwrap();
}
