//! Connects two networks with a low-loss curve using only the modeconn
//! library: import two state dicts (PyTorch `.pt`/`.pth` or safetensors),
//! fit a quadratic Bezier curve for a few epochs on Fashion-MNIST, and print
//! the barrier on the straight line and on the curve.
//!
//! ```text
//! cargo run --release --example connect -- START END [EXP_DIR] [EPOCHS] [TRAIN_IMAGES]
//! ```

use std::path::PathBuf;

use anyhow::{bail, Result};

use modeconn::config::{ArchRequest, CurveConfig, DataRequest, SweepConfig};
use modeconn::data::DatasetKind;
use modeconn::lock::ExperimentLock;
use modeconn::observe::{Event, Observer};
use modeconn::runtime::{DeviceChoice, MemoryFormat, PrecisionChoice, Runtime};
use modeconn::steps::session::{self, Session};
use modeconn::train::{curve, Context};

/// An observer that prints each finished epoch.
struct Epochs;

impl Observer for Epochs {
    fn event(&self, e: &Event) {
        if let Event::Epoch { model, log } = e {
            println!(
                "{model} epoch {}: train loss {:.4}, test accuracy at t=0.5 {:.2}%",
                log.epoch,
                log.train_loss,
                log.test_acc.unwrap_or(f64::NAN)
            );
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        bail!("usage: connect START END [EXP_DIR] [EPOCHS] [TRAIN_IMAGES]");
    }
    let (start, end) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let exp = PathBuf::from(args.get(2).map_or("experiments/example-connect", |s| s));
    let epochs: usize = args.get(3).map_or(Ok(3), |s| s.parse())?;
    let images: usize = args.get(4).map_or(Ok(5000), |s| s.parse())?;

    let rt = Runtime::new(
        DeviceChoice::Cpu,
        None,
        PrecisionChoice::Fp32,
        MemoryFormat::Auto,
        256,
        1,
    )?;
    let request = DataRequest {
        dataset: Some(DatasetKind::FashionMnist),
        train_subset: Some(images),
        test_subset: Some(images / 5),
        ..DataRequest::default()
    };
    let _lock = ExperimentLock::acquire(&exp)?;
    // Architecture and data come from the checkpoints' metadata when they have it.
    // The last argument bounds the work by memory: a 3-bend curve's copies.
    let copies = modeconn::experiment::curve_copies(3);
    let (model, data, dcfg) = curve::setup(
        &exp,
        &start,
        &end,
        &request,
        &ArchRequest::default(),
        &rt,
        copies,
    )?;
    let mut cfg = CurveConfig::defaults(start, end, data.channels, epochs);
    cfg.lr = 0.05;
    let cx = Context {
        model: &model,
        data: &data,
        dcfg: &dcfg,
        rt: &rt,
    };
    curve::fit_curve(&exp, &cx, &cfg, true, &Epochs)?;

    let s = Session::open(&exp, &request, rt)?;
    let along = session::sweep(&s, &exp, &SweepConfig { points: 11 }, &Epochs)?;
    println!(
        "test-error barrier: line {:.2} points, curve {:.2} points",
        along.line.barrier.test_err, along.curve.barrier.test_err
    );
    println!(
        "train-loss barrier: line {:.4}, curve {:.4}",
        along.line.barrier.train_loss, along.curve.barrier.train_loss
    );
    Ok(())
}
