//! The one path rule of config.json. A path inside the experiment is stored
//! relative to it, any other path absolute with its links resolved, so an
//! experiment can be moved and named as `e`, `./e/`, `/abs//e` or through a
//! link, and a resume compares what the paths point to, never how they were
//! spelled. Older files (paths as typed, relative to the directory the
//! command ran in, or absolute into where the experiment used to be) are
//! read and compared under the same rule.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// `p` made absolute, with the links of its deepest existing ancestor
/// resolved and the rest kept as written (cleaned of `.`, `//` and trailing
/// slashes); `None` when no ancestor can be resolved.
pub fn resolved(p: &Path) -> Option<PathBuf> {
    let p = std::path::absolute(p).ok()?;
    let mut base = p.as_path();
    let mut rest = Vec::new();
    while !base.exists() {
        rest.push(base.file_name()?.to_os_string());
        base = base.parent()?;
    }
    let mut r = std::fs::canonicalize(base).ok()?;
    r.extend(rest.iter().rev());
    Some(r)
}

/// A path written relative to the experiment, or absolute: one spelling
/// of the thing it points to. Relative paths of older files were relative
/// to the working directory; they are taken so when they name nothing in
/// the experiment. An absolute path into a place that is gone, whose last
/// two components name a file the experiment holds, is taken as that file
/// (an experiment moved since).
pub fn portable(exp: &Path, p: &Path) -> PathBuf {
    let Some(root) = resolved(exp) else {
        return clean(p);
    };
    let abs = if p.is_relative() && (exp.join(p).exists() || !p.exists()) {
        resolved(&exp.join(p))
    } else if p.is_absolute() && !p.exists() {
        let tail: PathBuf = p
            .components()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        match root.join(&tail) {
            t if t.exists() && tail.components().count() == 2 => Some(t),
            _ => resolved(p),
        }
    } else {
        resolved(p)
    };
    match abs {
        Some(a) => match a.strip_prefix(&root) {
            Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
            _ => a,
        },
        None => clean(p),
    }
}

/// Where a path read from config.json is on disk now.
pub fn resolve_in(exp: &Path, p: &Path) -> PathBuf {
    let q = portable(exp, p);
    if q.is_relative() {
        exp.join(q)
    } else {
        q
    }
}

/// `p` without `.` components, repeated or trailing slashes.
fn clean(p: &Path) -> PathBuf {
    p.components().filter(|c| *c != Component::CurDir).collect()
}

/// The JSON pointers of the path fields of a config.json section.
fn path_fields(key: &str) -> &'static [&'static str] {
    match key {
        "curve" => &["/start", "/end"],
        "fge" => &["/from"],
        "arch" => &["/script/path"],
        "preset" => &["/data_dir"],
        k if k == "data" || k.ends_with("_data") => &["/data_dir"],
        _ => &[],
    }
}

/// Rewrites the path fields of section `key` under the rule, in place.
pub fn make_portable(exp: &Path, key: &str, v: &mut Value) {
    let fix = |slot: &mut Value| {
        if let Value::String(s) = slot {
            *s = portable(exp, Path::new(s.as_str()))
                .to_string_lossy()
                .into_owned();
        }
    };
    for ptr in path_fields(key) {
        if let Some(slot) = v.pointer_mut(ptr) {
            fix(slot);
        }
    }
    // The curve's imported bends: [[k, path], ...].
    if key == "curve" {
        if let Some(Value::Array(bends)) = v.pointer_mut("/init_bends") {
            for b in bends {
                if let Some(slot) = b.get_mut(1) {
                    fix(slot);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_path_inside_the_experiment_is_one() {
        let tmp = tempfile::tempdir().unwrap();
        let exp = tmp.path().join("e");
        std::fs::create_dir_all(exp.join("start_model")).unwrap();
        let f = exp.join("start_model/model.safetensors");
        std::fs::write(&f, b"x").unwrap();
        let want = PathBuf::from("start_model/model.safetensors");
        let spelled = format!("{}//start_model/./model.safetensors", exp.display());
        for p in [f.clone(), PathBuf::from(&spelled), want.clone()] {
            assert_eq!(portable(&exp, &p), want, "{}", p.display());
        }
        // Through a link to the experiment.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&exp, &link).unwrap();
        assert_eq!(portable(&link, &f), want);
        assert_eq!(
            portable(&exp, &link.join("start_model/model.safetensors")),
            want
        );
        // Written where the experiment used to be.
        assert_eq!(
            portable(&exp, Path::new("/gone/old/start_model/model.safetensors")),
            want
        );
        assert_eq!(resolve_in(&exp, &want), std::fs::canonicalize(&f).unwrap());
        // Outside: absolute, resolved.
        let out = tmp.path().join("w.pt");
        std::fs::write(&out, b"x").unwrap();
        assert_eq!(portable(&exp, &out), std::fs::canonicalize(&out).unwrap());
    }

    #[test]
    fn sections_store_their_paths_under_the_rule() {
        let tmp = tempfile::tempdir().unwrap();
        let exp = tmp.path().join("e");
        std::fs::create_dir_all(exp.join("end_model")).unwrap();
        let mut v = serde_json::json!({
            "start": format!("{}/start_model/model.safetensors/", exp.display()),
            "end": format!("{}/end_model/model.safetensors", exp.display()),
            "init_bends": [[1, format!("{}/./theta.pt", exp.display())]],
            "epochs": 3
        });
        make_portable(&exp, "curve", &mut v);
        assert_eq!(v["start"], "start_model/model.safetensors");
        assert_eq!(v["end"], "end_model/model.safetensors");
        assert_eq!(v["init_bends"][0][1], "theta.pt");
        assert_eq!(v["epochs"], 3);
    }
}
