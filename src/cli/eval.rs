//! `eval`, `landscape` and `export`, and the tables they print.

use std::fmt::Write as _;

use anyhow::Result;
use serde_json::json;

use super::args::{EvalArgs, ExportArgs};
use super::output::Terminal;
use modeconn::config::{EnsembleConfig, SweepConfig};
use modeconn::eval::along::METRICS;
use modeconn::lock::{ExperimentLock, StepLock};
use modeconn::runtime::PrecisionChoice;
use modeconn::schema::{AlongFile, EnsembleFile};
use modeconn::shard::Target;
use modeconn::steps::members::MemberSet;
use modeconn::steps::session::{self, Session};
use modeconn::vocab::Shard;

pub fn eval(a: &EvalArgs, out: &Terminal) -> Result<()> {
    if let Some(set) = a.members {
        if a.shard.is_some() {
            anyhow::bail!("--shard splits the sweep and --ensemble; --members evaluates its few saved networks in one process, without --shard");
        }
        return eval_members(a, set, out);
    }
    let sweep = SweepConfig { points: a.points };
    let ens = a.ensemble.map(|k| EnsembleConfig {
        k,
        sampling: a.sampling,
        average: a.average,
        seed: a.seed,
    });
    sweep.validate()?;
    if let Some(e) = &ens {
        e.validate()?;
    }
    let shard = a.shard.unwrap_or(Shard::WHOLE);
    let target = match ens {
        Some(_) => Target::Ensemble,
        None => Target::Along,
    };
    let _lock = StepLock::acquire(&a.exp, target, shard, false)?;
    let rt = super::runtime(&a.rt, PrecisionChoice::Fp32, out)?;
    let s = Session::open(&a.exp, &a.data.request(), rt)?;
    match (ens, shard.is_whole()) {
        (Some(cfg), true) => {
            let r = session::ensemble(&s, &a.exp, &cfg, out)?;
            out.result(&ensemble_table(&r), &json!({"ensemble": r}));
        }
        (Some(cfg), false) => {
            let p = session::ensemble_shard(&s, &a.exp, &cfg, shard, out)?;
            super::shard_done(&a.exp, target, shard, p.meta.seconds, out);
        }
        (None, true) => {
            let r = session::sweep(&s, &a.exp, &sweep, out)?;
            let mut text = along_table(&r);
            text += &aligned_lines(&a.exp);
            out.result(&text, &json!({"along": r}));
        }
        (None, false) => {
            let p = session::sweep_shard(&s, &a.exp, &sweep, shard, out)?;
            super::shard_done(&a.exp, target, shard, p.meta.seconds, out);
        }
    }
    Ok(())
}

/// Side-by-side table of curve and line.
fn along_table(f: &AlongFile) -> String {
    let (c, l, m) = (&f.curve, &f.line, &f.meta);
    let mut o = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        o,
        "\n{} on {}: curve ({} bends) vs straight line, {} points",
        m.arch,
        m.dataset,
        m.bends,
        c.rows.len()
    );
    if m.train_subset.is_some() || m.test_subset.is_some() {
        let _ = writeln!(
            o,
            "(on subsets: {} train, {} test images)",
            m.n_train, m.n_test
        );
    }
    let _ = writeln!(
        o,
        "{:<11} | {:>9} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>9}",
        "metric", "curve min", "max", "mean", "int", "line min", "max", "mean", "int"
    );
    let _ = writeln!(o, "{}", "-".repeat(95));
    for k in METRICS {
        let (Some(a), Some(b)) = (c.summary.get(k), l.summary.get(k)) else {
            continue;
        };
        let _ = writeln!(
            o,
            "{k:<11} | {:>9.4} {:>9.4} {:>9.4} {:>9.4} | {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
            a.min, a.max, a.mean, a.int, b.min, b.max, b.mean, b.int
        );
    }
    let _ = writeln!(o, "{}", "-".repeat(95));
    if let (Some(cm), Some(lm)) = (c.rows.get(c.rows.len() / 2), l.rows.get(l.rows.len() / 2)) {
        let _ = writeln!(
            o,
            "test error at t={:.2}: curve {:.2}%  line {:.2}%",
            cm.t, cm.test_err, lm.test_err
        );
    }
    let _ = writeln!(
        o,
        "barrier, train loss: curve {:.4} (t={:.2})  line {:.4} (t={:.2})",
        c.barrier.train_loss, c.barrier_t.train_loss, l.barrier.train_loss, l.barrier_t.train_loss
    );
    let _ = writeln!(
        o,
        "barrier, test error: curve {:.2} pts (t={:.2})  line {:.2} pts (t={:.2})",
        c.barrier.test_err, c.barrier_t.test_err, l.barrier.test_err, l.barrier_t.test_err
    );
    let _ = writeln!(o, "length: curve {:.3}  line {:.3}", c.length, l.length);
    o
}

/// The barriers of the aligned lines, when `align` has run on this experiment.
fn aligned_lines(exp: &std::path::Path) -> String {
    let Ok(f) = modeconn::schema::read_versioned::<modeconn::schema::AlignFile>(
        &exp.join("eval").join("align.json"),
        "modeconn align",
    ) else {
        return String::new();
    };
    let b = |p: &Option<modeconn::schema::along::Path>| {
        p.as_ref().map_or("–".to_string(), |p| {
            format!("{:.2} pts", p.barrier.test_err)
        })
    };
    format!(
        "barrier, test error, after `align` (eval/align.json): aligned line {}  aligned + REPAIR {}\n",
        b(&f.aligned),
        b(&f.repaired)
    )
}

fn ensemble_table(f: &EnsembleFile) -> String {
    let r = &f.report;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n{:<22} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "test set", "acc %", "NLL", "ECE", "Brier", "AUROC"
    );
    let _ = writeln!(o, "{}", "-".repeat(66));
    let curve = format!("curve ensemble of {}", r.by_size.len());
    let rows = [
        ("start (w1)", &r.start),
        ("end (w2)", &r.end),
        ("w1 + w2 ensemble", &r.endpoints),
        (curve.as_str(), &r.curve),
    ];
    for (name, s) in rows {
        let _ = writeln!(
            o,
            "{name:<22} {:>8.2} {:>8.4} {:>8.4} {:>8.4} {:>8.4}",
            s.acc, s.nll, s.ece, s.brier, s.auroc
        );
    }
    o
}

pub fn export(a: &ExportArgs, out: &Terminal) -> Result<()> {
    session::check_export(&a.exp, a.t, &a.out)?;
    let rt = super::runtime(&a.rt, PrecisionChoice::Fp32, out)?;
    let s = Session::open(&a.exp, &a.data.request(), rt)?;
    let test = session::export(&s, a.t, &a.out)?;
    out.result(
        &format!(
            "{}: t={} test accuracy {:.2}%, NLL {:.4}\n",
            a.out.display(),
            a.t,
            test.acc,
            test.nll
        ),
        &json!({"out": a.out, "t": a.t, "test_acc": test.acc, "test_nll": test.nll}),
    );
    Ok(())
}

/// `eval --members SET`: each member and their ensemble by size.
fn eval_members(a: &EvalArgs, set: MemberSet, out: &Terminal) -> Result<()> {
    let _lock = ExperimentLock::acquire_existing(&a.exp)?;
    let dirs = set.dirs(&a.exp);
    if dirs.is_empty() {
        anyhow::bail!(
            "{} has no {} members; make them with `{} --exp {}`",
            a.exp.display(),
            set.name(),
            set.made_by(),
            a.exp.display()
        );
    }
    let rt = super::runtime(&a.rt, PrecisionChoice::Fp32, out)?;
    let r = modeconn::steps::members::evaluate_members(
        &a.exp,
        set.name(),
        &dirs,
        &a.data.request(),
        &rt,
        a.bn,
        out,
    )?;
    let mut human = format!(
        "\n{:<22} {:>8} {:>8} {:>8} {:>8}\n",
        format!("{} (test set)", set.name()),
        "acc %",
        "NLL",
        "ECE",
        "Brier"
    );
    for (k, s) in r.members.iter().enumerate() {
        human += &format!(
            "{:<22} {:>8.2} {:>8.4} {:>8.4} {:>8.4}\n",
            format!("member {k}"),
            s.acc,
            s.nll,
            s.ece,
            s.brier
        );
    }
    if let Some(last) = r.by_size.last() {
        let s = &last.scores;
        human += &format!(
            "{:<22} {:>8.2} {:>8.4} {:>8.4} {:>8.4}\n",
            format!("ensemble of {}", last.k),
            s.acc,
            s.nll,
            s.ece,
            s.brier
        );
    }
    out.result(&human, &json!({ set.name(): r }));
    Ok(())
}
