//! Reading each input of the report from an experiment directory: config.json, the training
//! logs, eval/along.json, eval/ensemble.json and landscape/plane.json. A missing or broken file
//! becomes a note naming the command that makes it.

use super::{Aligned, Along, Ensemble, Inputs, Plane, RunLog};
use crate::schema;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// A typed file seen as the report's view of it (the same JSON, so the two
/// cannot disagree).
fn view<T: serde::Serialize, V: serde::de::DeserializeOwned>(file: &T) -> anyhow::Result<V> {
    Ok(serde_json::from_value(serde_json::to_value(file)?)?)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = crate::files::read_text(path, crate::files::JSON_MAX)?;
    Ok(serde_json::from_str(&text)?)
}

/// A log.jsonl read through its schema, seen as named values per epoch.
fn read_log(path: &Path) -> anyhow::Result<Vec<BTreeMap<String, Value>>> {
    schema::read_log(path)?.iter().map(view).collect()
}

/// Loads `rel` if it exists; a missing or broken file becomes a note naming `cmd`.
fn read_or_note<T>(
    exp: &Path,
    rel: &str,
    cmd: &str,
    what: &str,
    notes: &mut Vec<String>,
    read: impl Fn(&Path) -> anyhow::Result<T>,
) -> Option<T> {
    let path = exp.join(rel);
    if !path.exists() {
        notes.push(format!("{rel} not found: run `{cmd}` to make {what}"));
        return None;
    }
    match read(&path) {
        Ok(v) => Some(v),
        Err(e) => {
            notes.push(format!(
                "{rel} could not be read ({e:#}): rerun `{cmd}` to make {what}"
            ));
            None
        }
    }
}

impl Inputs {
    /// Reads every input that exists in `exp`, in the order of the notes: config, training logs,
    /// eval/along.json, eval/ensemble.json, landscape/plane.json.
    pub fn load(exp: &Path) -> Inputs {
        let mut inp = Inputs::default();
        inp.config = load_config(exp, &mut inp.notes);
        inp.logs = load_logs(exp, &mut inp.notes);
        inp.along = load_along(exp, &mut inp.notes);
        inp.align = load_align(exp, &mut inp.notes);
        inp.ensemble = load_ensemble(exp, &mut inp.notes);
        inp.plane = load_plane(exp, &mut inp.notes);
        inp.random = load_random(exp, "landscape/random.json", 2, &mut inp.notes);
        inp.random_1d = load_random(exp, "landscape/random-1d.json", 1, &mut inp.notes);
        inp.budget = crate::report::budget::Budget::load(exp, inp.config.as_ref());
        // Results of a curve whose endpoints were retrained since describe
        // neither: say so where the report's notes are.
        if let Err(e) = crate::experiment::check_curve_endpoints(exp) {
            inp.notes.push(format!("{e:#}"));
        }
        inp
    }
}

/// config.json, if there is one (an experiment without it is no error).
fn load_config(exp: &Path, notes: &mut Vec<String>) -> Option<Value> {
    if !exp.join("config.json").exists() {
        return None;
    }
    read_or_note(
        exp,
        "config.json",
        "modeconn train-endpoints",
        "the configuration",
        notes,
        read_json,
    )
}

/// The endpoints' logs, then the curve's; logs without rows are dropped.
fn load_logs(exp: &Path, notes: &mut Vec<String>) -> Vec<RunLog> {
    let mut logs = Vec::new();
    for (d, label) in endpoint_dirs(exp) {
        let rel = format!("{d}/log.jsonl");
        let what = "the endpoint training curves";
        if let Some(rows) =
            read_or_note(exp, &rel, "modeconn train-endpoints", what, notes, read_log)
        {
            logs.push(RunLog {
                dir: d,
                label,
                rows,
            });
        }
    }
    if let Some(rows) = read_or_note(
        exp,
        "curve_model/log.jsonl",
        "modeconn fit-curve",
        "the curve training curves",
        notes,
        read_log,
    ) {
        logs.push(RunLog {
            dir: "curve_model".into(),
            label: "curve".into(),
            rows,
        });
    }
    logs.retain(|l| !l.rows.is_empty());
    logs
}

/// `(directory, label)` of the endpoints: `model_<i>` directories in index order (labelled
/// `model <i>`) if there are any, else `start_model` and `end_model`.
fn endpoint_dirs(exp: &Path) -> Vec<(String, String)> {
    let mut model_dirs: Vec<(usize, String)> = std::fs::read_dir(exp)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let idx = name.strip_prefix("model_")?.parse::<usize>().ok()?;
            Some((idx, name))
        })
        .collect();
    model_dirs.sort();
    if model_dirs.is_empty() {
        vec![
            ("start_model".into(), "start".into()),
            ("end_model".into(), "end".into()),
        ]
    } else {
        model_dirs
            .into_iter()
            .map(|(i, d)| (d, format!("model {i}")))
            .collect()
    }
}

// The eval files are read through their one schema (format number
// included), then viewed as the named metrics the figures draw.

/// eval/along.json.
fn load_along(exp: &Path, notes: &mut Vec<String>) -> Option<Along> {
    let cmd = format!("modeconn eval --exp {}", exp.display());
    read_or_note(
        exp,
        "eval/along.json",
        &cmd,
        "the along_curve figure and the curve-vs-line table",
        notes,
        |p| view(&schema::read_versioned::<schema::AlongFile>(p, &cmd)?),
    )
}

/// eval/along.json of an experiment compared with this one (`plot --compare`): required, so a
/// missing or broken file is an error naming the command that makes it.
pub(crate) fn along_of(exp: &Path) -> anyhow::Result<Along> {
    let path = exp.join("eval/along.json");
    let cmd = format!("modeconn eval --exp {}", exp.display());
    if !path.exists() {
        anyhow::bail!(
            "{} not found: run `{cmd}` to sweep that experiment's curve before comparing with it",
            path.display()
        );
    }
    view(&schema::read_versioned::<schema::AlongFile>(&path, &cmd)?)
}

/// eval/align.json, only when `align` wrote it (it is an optional step).
fn load_align(exp: &Path, notes: &mut Vec<String>) -> Option<Aligned> {
    if !exp.join("eval/align.json").exists() {
        return None;
    }
    let cmd = format!("modeconn align --exp {}", exp.display());
    read_or_note(
        exp,
        "eval/align.json",
        &cmd,
        "the align figure and table",
        notes,
        |p| view(&schema::read_versioned::<schema::AlignFile>(p, &cmd)?),
    )
}

/// eval/ensemble.json.
fn load_ensemble(exp: &Path, notes: &mut Vec<String>) -> Option<Ensemble> {
    let cmd = format!("modeconn eval --exp {} --ensemble 30", exp.display());
    read_or_note(
        exp,
        "eval/ensemble.json",
        &cmd,
        "the ensemble figure and table",
        notes,
        |p| view(&schema::read_versioned::<schema::EnsembleFile>(p, &cmd)?),
    )
}

/// landscape/plane.json, checked for a grid of at least 2x2 points whose value rows match it.
fn load_plane(exp: &Path, notes: &mut Vec<String>) -> Option<Plane> {
    let cmd = format!("modeconn landscape --exp {}", exp.display());
    read_or_note(
        exp,
        "landscape/plane.json",
        &cmd,
        "the landscape figures",
        notes,
        |p| {
            let file = schema::read_versioned::<schema::PlaneFile>(p, &cmd)?;
            let plane: Plane = view(&file)?;
            plane.check(2)?;
            Ok(plane)
        },
    )
}

/// A random landscape (`rows` 2: a plane, 1: a line) when one was made (no
/// note when absent: it is optional).
fn load_random(exp: &Path, rel: &str, rows: usize, notes: &mut Vec<String>) -> Option<Plane> {
    if !exp.join(rel).exists() {
        return None;
    }
    let plane = if rows == 2 { "random" } else { "random-1d" };
    let cmd = format!("modeconn landscape --exp {} --plane {plane}", exp.display());
    read_or_note(exp, rel, &cmd, "its figure", notes, |p| {
        let file = schema::read_versioned::<schema::PlaneFile>(p, &cmd)?;
        let plane: Plane = view(&file)?;
        plane.check(rows)?;
        Ok(plane)
    })
}
