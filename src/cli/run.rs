//! `run`: a preset with the flags applied, then the whole pipeline.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use super::args::RunArgs;
use super::output::Terminal;
use modeconn::lock::ExperimentLock;
use modeconn::model::ArchKind;
use modeconn::observe::fmt_secs;
use modeconn::plan::{self, Preset, RunRequest, RunSummary};

pub fn run(a: &RunArgs, out: &Terminal) -> Result<()> {
    let p = with_flags(Preset::named(&a.preset)?, a);
    let exp = a
        .exp
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("experiments/{}", p.name)));
    let req = RunRequest {
        train_subset: a.data.train_subset,
        test_subset: a.data.test_subset,
        arch: a.model.request(),
    };
    plan::validate(&p, &exp, &req)?;
    let rt = super::runtime(&a.rt, p.precision, out)?;
    let _lock = ExperimentLock::acquire(&exp)?;
    let s = plan::run(&exp, &p, &req, &rt, out)?;
    for m in &s.report_notes {
        out.warn(&format!("note: {m}"));
    }
    out.result(
        &summary(&exp, &s),
        &json!({"summary": summary_json(&exp, &s)}),
    );
    Ok(())
}

/// The preset with the command line's overrides.
fn with_flags(mut p: Preset, a: &RunArgs) -> Preset {
    if let Some(d) = a.data.dataset {
        p.dataset = d;
        if a.data.data_dir.is_none() {
            p.data_dir = None;
        }
    }
    if let Some(d) = &a.data.data_dir {
        p.data_dir = Some(d.clone());
    }
    macro_rules! over {
        ($($f:ident <- $a:expr),*) => { $( if let Some(v) = $a { p.$f = v; } )* };
    }
    over!(arch <- a.model.arch, normalize <- a.data.normalize,
          curve_epochs <- a.curve_epochs, lr <- a.lr, curve_lr <- a.curve_lr,
          batch_size <- a.batch_size, wd <- a.wd, seed <- a.seed, curve <- a.curve,
          bends <- a.bends, points <- a.points, ensemble <- a.ensemble, grid <- a.grid,
          optimizer <- a.optimizer, schedule <- a.schedule, curve_optimizer <- a.curve_optimizer,
          curve_t_per_batch <- a.curve_t_per_batch);
    if a.model.script.model_file.is_some() && a.model.arch.is_none() {
        p.arch = ArchKind::Torchscript;
    }
    if p.arch == ArchKind::Torchscript {
        // The network's dropout is part of its code: the preset's curve,
        // FGE and final dropouts do not apply (flags that ask for one are
        // refused by the steps).
        p.curve_dropout = None;
        p.fge_dropout = None;
        p.final_dropout = None;
    }
    if let Some(n) = a.epochs {
        p.set_epochs(n);
    }
    p.fge |= a.fge;
    if a.curve_dropout.is_some() {
        p.curve_dropout = a.curve_dropout;
    }
    if a.fge_dropout.is_some() {
        p.fge_dropout = a.fge_dropout;
    }
    if let Some(f) = a.final_dropout.config(p.epochs) {
        p.final_dropout = Some(f);
    }
    if let Some(v) = super::convert::augment_choice(a.augment, a.no_augment) {
        p.augment = Some(v);
    }
    for (dst, src) in [
        (&mut p.eval_train_subset, a.eval_train_subset),
        (&mut p.landscape_train_subset, a.landscape_train_subset),
        (&mut p.landscape_test_subset, a.landscape_test_subset),
    ] {
        if src.is_some() {
            *dst = src;
        }
    }
    p
}

fn summary(exp: &std::path::Path, s: &RunSummary) -> String {
    let (al, en) = (&s.along, &s.ensemble.report);
    let mid = |p: &modeconn::schema::along::Path| {
        p.rows
            .get(p.rows.len() / 2)
            .map_or(f64::NAN, |r| r.test_err)
    };
    format!(
        "\n== {} done in {} ==\n\
         endpoints test acc: {:.2}% / {:.2}%\n\
         test error at t=0.5: curve {:.2}%  line {:.2}%\n\
         test-error barrier: curve {:.2} pts  line {:.2} pts | train-loss barrier: curve {:.4}  line {:.4}\n\
         ensembles (acc / NLL / ECE): w1+w2 {:.2}% / {:.4} / {:.4}   curve of {} {:.2}% / {:.4} / {:.4}\n\
         report: {}\n",
        exp.display(),
        fmt_secs(s.seconds),
        en.start.acc,
        en.end.acc,
        mid(&al.curve),
        mid(&al.line),
        al.curve.barrier.test_err,
        al.line.barrier.test_err,
        al.curve.barrier.train_loss,
        al.line.barrier.train_loss,
        en.endpoints.acc,
        en.endpoints.nll,
        en.endpoints.ece,
        s.ensemble.meta.k,
        en.curve.acc,
        en.curve.nll,
        en.curve.ece,
        exp.join("report.html").display()
    )
}

fn summary_json(exp: &std::path::Path, s: &RunSummary) -> serde_json::Value {
    let (al, en) = (&s.along, &s.ensemble.report);
    json!({
        "exp": exp, "seconds": s.seconds,
        "endpoints_acc": [en.start.acc, en.end.acc],
        "barrier_test_err": {"curve": al.curve.barrier.test_err, "line": al.line.barrier.test_err},
        "barrier_train_loss": {"curve": al.curve.barrier.train_loss, "line": al.line.barrier.train_loss},
        "ensemble": {"k": s.ensemble.meta.k, "endpoints": en.endpoints, "curve": en.curve},
        "report": exp.join("report.html"),
    })
}
