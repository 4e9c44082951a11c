//! `align`: weight matching of the endpoints, and the table of line barriers
//! it prints (with the curve's, when `eval` has swept one).

use std::fmt::Write as _;

use anyhow::{bail, Result};
use serde_json::json;

use super::args::AlignArgs;
use super::output::Terminal;
use modeconn::align::{self, Pair};
use modeconn::checkpoint;
use modeconn::config::AlignConfig;
use modeconn::experiment as xp;
use modeconn::lock::ExperimentLock;
use modeconn::runtime::PrecisionChoice;
use modeconn::schema::along::Path as AlongPath;
use modeconn::schema::{self, AlignFile, AlongFile, Repair};

pub fn align(a: &AlignArgs, out: &Terminal) -> Result<()> {
    let cfg = AlignConfig {
        seed: a.seed,
        max_sweeps: a.max_sweeps,
        points: a.points,
        repair_images: a.repair_images,
    };
    cfg.validate()?;
    let endpoint = |given: &Option<std::path::PathBuf>, i| {
        given
            .clone()
            .unwrap_or_else(|| checkpoint::model_file(&xp::endpoint_dir(&a.exp, i, 2)))
    };
    let (start, end) = (endpoint(&a.start, 0), endpoint(&a.end, 1));
    for p in [&start, &end] {
        if !xp::resolve_model_path(p).exists() {
            bail!(super::train::missing_endpoint(p, &a.exp));
        }
    }
    let rt = super::runtime(&a.rt, PrecisionChoice::Fp32, out)?;
    let _lock = ExperimentLock::acquire(&a.exp)?;
    let mut pair = Pair::load(
        &a.exp,
        (&start, &end),
        &a.data.request(),
        &a.model.request(),
        &rt,
    )?;
    if let Some(spec) = &a.perm_spec {
        pair = pair.with_perm_spec(spec)?;
    }
    let r = align::align(&a.exp, &pair, &cfg, &rt, out)?;
    let along = schema::read_versioned::<AlongFile>(
        &a.exp.join("eval").join("along.json"),
        "modeconn eval",
    )
    .ok();
    out.result(&table(&r, along.as_ref()), &json!({"align": r}));
    Ok(())
}

/// Barrier of each line (and of the curve, when swept) with the time it took.
fn table(r: &AlignFile, along: Option<&AlongFile>) -> String {
    let m = &r.meta;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n{} on {}: weight matching moved {} of {} hidden units in {} sweeps ({:.1}s); \
         max |Δlogit| of the permuted end model {:.1e}",
        m.arch,
        m.dataset,
        m.moved,
        m.permutable,
        m.objective.len() - 1,
        m.match_seconds,
        m.max_logit_diff
    );
    let Some(raw) = &r.raw else {
        return o;
    };
    let _ = writeln!(
        o,
        "{:<26} | {:>16} {:>18} {:>14} | {:>8}",
        "path", "test-err barrier", "train-loss barrier", "test err t=0.5", "seconds"
    );
    let _ = writeln!(o, "{}", "-".repeat(96));
    let mut row = |name: &str, p: &AlongPath, secs: f64| {
        let mid = p
            .rows
            .iter()
            .min_by(|a, b| (a.t - 0.5).abs().total_cmp(&(b.t - 0.5).abs()))
            .map_or(f64::NAN, |r| r.test_err);
        let _ = writeln!(
            o,
            "{name:<26} | {:>12.2} pts {:>18.4} {:>13.2}% | {secs:>8.1}",
            p.barrier.test_err, p.barrier.train_loss, mid
        );
    };
    row("line", raw, r.seconds.raw);
    if let Some(p) = &r.aligned {
        row("line, aligned", p, r.seconds.aligned);
    }
    if let Some(p) = &r.repaired {
        row(
            "line, aligned + REPAIR",
            p,
            r.seconds.repaired + m.repair_stats_seconds,
        );
    }
    if let Some(a) = along {
        row("curve (eval/along.json)", &a.curve, a.meta.seconds / 2.0);
    }
    if m.repair == Repair::BnReset {
        o += "(BatchNorm network: every line has its BN statistics re-estimated, which is what REPAIR does there)\n";
    }
    if m.repair == Repair::Unavailable {
        o += "(no REPAIR: a TorchScript network without BatchNorm does not expose the layer outputs it corrects)\n";
    }
    o
}
