//! PyTorch `.pt` state dicts written by the real torch in `.venv` (a
//! missing torch is a failure here, not a skip), honest and damaged,
//! imported by the binary (`fit-curve --epochs 0`) and the library.

use std::fs;

use crate::common::*;

/// Writes the fixtures `what` names into the current directory.
const MAKE: &str = r#"
import json, os, sys, zipfile, struct
import torch, torch.nn as nn

torch.manual_seed(0)
what = sys.argv[1]

class Net(nn.Module):  # seed-convnet on 1x28x28 images, 10 classes
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(), nn.Linear(1024, 256), nn.ReLU(),
            nn.Dropout(), nn.Linear(256, 10))

def rewrite(src, dst, edit, method=zipfile.ZIP_STORED):
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, 'w', method) as zo:
        for i in zi.infolist():
            zo.writestr(i.filename, edit(i.filename, zi.read(i.filename)))

def endpoints():
    for n in ('start', 'end'):
        sd = Net().state_dict()
        assert hasattr(sd, '_metadata')
        torch.save(sd, n + '.pt')
    import safetensors.torch
    safetensors.torch.save_file(dict(torch.load('start.pt')), 'start.safetensors')

endpoints()
if what == 'short':
    rewrite('start.pt', 'short.pt', lambda n, d: d[:len(d) // 2] if '/data/' in n else d)
elif what == 'bomb':
    zeros = bytes(1 << 20)
    with zipfile.ZipFile('start.pt') as zi, zipfile.ZipFile('bomb.pt', 'w') as zo:
        for i in zi.infolist():
            if i.filename == 'start/data/0':
                info = zipfile.ZipInfo(i.filename)
                info.compress_type = zipfile.ZIP_DEFLATED
                with zo.open(info, 'w') as f:
                    for _ in range(256):
                        f.write(zeros)
            else:
                zo.writestr(i.filename, zi.read(i.filename))
elif what == 'evil':
    class Evil:
        def __reduce__(self):
            return (os.system, ('touch pwned',))
    sd = torch.load('start.pt')
    sd['evil'] = Evil()
    torch.save(sd, 'evil.pt')
elif what == 'legacy':
    torch.save(torch.load('start.pt'), 'legacy.pt', _use_new_zipfile_serialization=False)
elif what == 'checkpoint':
    torch.save({'model': torch.load('start.pt'), 'epoch': 3}, 'ckpt.pt')
elif what == 'kinds':
    class Kinds(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3)
            self.bn = nn.BatchNorm2d(3)  # num_batches_tracked: int64
            base = torch.randn(4, 5)
            self.register_buffer('f32', base)
            self.register_buffer('f16', torch.randn(7).half())
            self.register_buffer('bf16', torch.randn(2, 3).bfloat16())
            self.register_buffer('f64', torch.randn(3).double())
            self.register_buffer('i64', torch.arange(-3, 5))
            self.register_buffer('bool', torch.tensor([True, False, True]))
            self.register_buffer('u8', torch.arange(250, 256).to(torch.uint8))
            self.register_buffer('empty', torch.zeros(0, 4))
            self.register_buffer('rows', base[1:3])         # a view at an offset
            self.register_buffer('cols', base.t()[1])       # a strided view
            self.register_buffer('tr', base.t())            # a transposed view
    sd = Kinds().state_dict()
    sd['param'] = nn.Parameter(torch.randn(2))          # _rebuild_parameter
    ref = {k: {'shape': list(v.shape), 'values': v.double().flatten().tolist()}
           for k, v in sd.items()}
    json.dump(ref, open('kinds.json', 'w'))
    torch.save(sd, 'kinds.pt', _use_new_zipfile_serialization=True)
    torch.save(dict(sd), 'plain.pth')
    torch.serialization.set_crc32_options(False)
    torch.save(sd, 'pytorch_model.bin')
    torch.serialization.set_crc32_options(True)
    rewrite('kinds.pt', 'kinds-short.pt', lambda n, d: d[:len(d) // 2] if n.endswith('/data/1') else d)
"#;

fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.is_file(),
        "{} is missing: run `make setup`, which installs torch there",
        p.display()
    );
    p
}

/// Runs python `args` in `dir`, within the deadline; fails the test unless it succeeds.
fn py(dir: &Path, args: &[&str]) {
    let mut c = std::process::Command::new(python());
    c.args(args).current_dir(dir);
    let out = run_with_deadline(c, args, deadline());
    assert!(
        out.status.success(),
        "python {args:?} failed:\n{}",
        stderr(&out)
    );
}

/// The fixtures `what` names (and the endpoints), in `env`'s directory.
fn make(env: &TestEnv, what: &str) {
    let script = env.path().join("make.py");
    fs::write(&script, MAKE).unwrap();
    py(env.path(), &[script.to_str().unwrap(), what]);
}

/// `fit-curve --epochs 0` of `start` to end.pt into a new experiment `exp`.
fn import(env: &TestEnv, exp: &str, start: &str, extra: &[&str]) -> std::process::Output {
    let (e, s, end) = (env.p(exp), env.p(start), env.p("end.pt"));
    let mut args = vec![
        "fit-curve",
        "--exp",
        &e,
        "--start",
        &s,
        "--end",
        &end,
        "--epochs",
        "0",
        "--train-subset",
        "500",
        "--test-subset",
        "100",
    ];
    args.extend_from_slice(extra);
    env.modeconn(&args)
}

/// The import of `file` fails with one line (no libtorch backtrace)
/// naming the file and holding each of `want`; nothing is written.
fn refused(env: &TestEnv, file: &str, want: &[&str]) -> String {
    let out = import(env, &format!("x-{file}"), file, &[]);
    let e = assert_clean_error(&out, file);
    assert_eq!(e.trim_end().lines().count(), 1, "more than one line:\n{e}");
    assert!(
        !e.contains("Exception raised from") && !e.contains("frame #"),
        "{e}"
    );
    assert!(e.contains(file), "the file is not named:\n{e}");
    for w in want {
        assert!(e.contains(w), "'{w}' is missing from:\n{e}");
    }
    assert!(
        !env.path()
            .join(format!("x-{file}/curve_model/curve.safetensors"))
            .exists(),
        "a refused import wrote a curve"
    );
    e
}

#[test]
fn a_truncated_state_dict_is_refused_and_the_whole_one_imported_exactly() {
    let env = TestEnv::new();
    make(&env, "short");
    refused(
        &env,
        "short.pt",
        &[
            "storage 0 (144 elements of FloatStorage) needs 576 bytes",
            "start/data/0 holds only 288",
            "truncated",
        ],
    );
    // The whole file (a model.state_dict(), with its _metadata) is imported
    // as it is: bend 0 equals the file, read independently as safetensors.
    let out = import(&env, "ok", "start.pt", &[]);
    assert_ok(&out, &["fit-curve", "--start", "start.pt"]);
    let curve = tensors(&env.path().join("ok/curve_model/curve.safetensors"));
    let want = tensors(&env.path().join("start.safetensors"));
    assert_eq!(want.len(), SEED_CONVNET_KEYS.len());
    for (n, t) in &want {
        let got = &curve[&format!("bend0.{n}")];
        assert_eq!(max_abs_diff(got, t), 0.0, "bend0.{n} differs from start.pt");
    }
}

#[test]
fn every_dtype_and_view_torch_saves_is_read_exactly_and_a_cut_one_refused() {
    let env = TestEnv::new();
    make(&env, "kinds");
    let want = read_json(&env.path().join("kinds.json"));
    let want = want.as_object().unwrap();
    for file in ["kinds.pt", "plain.pth", "pytorch_model.bin"] {
        let got = tensors(&env.path().join(file));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{file}"
        );
        for (name, w) in want {
            let t = &got[name];
            let shape: Vec<i64> = w["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect();
            assert_eq!(t.size(), shape, "{file}: {name}");
            let values: Vec<f64> =
                Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
            let w: Vec<f64> = w["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(values, w, "{file}: {name}");
        }
        assert_eq!(got["f16"].kind(), Kind::Half);
        assert_eq!(got["bf16"].kind(), Kind::BFloat16);
        assert_eq!(got["bool"].kind(), Kind::Bool);
        assert_eq!(got["u8"].kind(), Kind::Uint8);
        assert_eq!(got["bn.num_batches_tracked"].kind(), Kind::Int64);
    }
    let e = format!(
        "{:#}",
        modeconn::checkpoint::read_tensors(&env.path().join("kinds-short.pt")).unwrap_err()
    );
    assert!(
        e.contains("kinds-short.pt") && e.contains("storage 1") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn a_deflate_bomb_is_refused_before_it_is_inflated() {
    let env = TestEnv::new();
    make(&env, "bomb");
    // Its directory declares 256 MiB for a storage of 576 bytes.
    refused(
        &env,
        "bomb.pt",
        &["needs 576 bytes", "start/data/0 holds 268435456"],
    );
    // The same record declared as the 576 bytes the storage needs.
    let mut z = fs::read(env.path().join("bomb.pt")).unwrap();
    let name = b"start/data/0";
    let at = (0..z.len() - 46)
        .find(|&i| z[i..].starts_with(b"PK\x01\x02") && z[i + 46..].starts_with(name))
        .expect("the record's central entry");
    z[at + 24..at + 28].copy_from_slice(&576u32.to_le_bytes());
    fs::write(env.path().join("liar.pt"), &z).unwrap();
    refused(
        &env,
        "liar.pt",
        &["start/data/0 inflates to more than the 576 bytes"],
    );
}

#[test]
fn a_pickle_that_would_run_code_is_refused_and_runs_nothing() {
    let env = TestEnv::new();
    make(&env, "evil");
    refused(
        &env,
        "evil.pt",
        &[
            "refers to posix.system, which a state dict never needs",
            "modeconn reads only tensors",
        ],
    );
    assert!(!env.path().join("pwned").exists());
}

#[test]
fn a_legacy_file_is_named_so_with_a_conversion_that_works() {
    let env = TestEnv::new();
    make(&env, "legacy");
    refused(
        &env,
        "legacy.pt",
        &[
            "legacy format",
            "torch.save(torch.load(p), q)",
            "safetensors.torch.save_file",
        ],
    );
    py(
        env.path(),
        &[
            "-c",
            "import torch; torch.save(torch.load('legacy.pt'), 'converted.pt')",
        ],
    );
    let out = import(&env, "conv", "converted.pt", &[]);
    assert_ok(&out, &["fit-curve", "--start", "converted.pt"]);
}

#[test]
fn a_training_checkpoint_is_refused_with_the_key_to_save() {
    let env = TestEnv::new();
    make(&env, "checkpoint");
    refused(
        &env,
        "ckpt.pt",
        &[
            "holds a dict under 'model'",
            "torch.save(torch.load(p)['model'], q)",
        ],
    );
}

#[test]
fn a_safetensors_header_too_long_is_reported_as_such() {
    let env = TestEnv::new();
    make(&env, "none");
    let mut big = 200_000_000u64.to_le_bytes().to_vec();
    big.extend_from_slice(b"{}      ");
    fs::write(env.path().join("theta.safetensors"), &big).unwrap();
    let bend = format!("1={}", env.p("theta.safetensors"));
    let (e, st) = (env.p("t"), env.p("start.safetensors"));
    let out = env.modeconn(&[
        "fit-curve",
        "--exp",
        &e,
        "--start",
        &st,
        "--end",
        &st,
        "--init-bend",
        &bend,
        "--epochs",
        "0",
        "--train-subset",
        "500",
        "--test-subset",
        "100",
    ]);
    let e = assert_clean_error(&out, "--init-bend theta.safetensors");
    assert!(
        e.contains("theta.safetensors")
            && e.contains("claims 200000000 bytes, more than the 100 MB")
            && !e.contains("truncated"),
        "{e}"
    );
}
