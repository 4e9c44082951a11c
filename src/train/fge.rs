//! Fast Geometric Ensembling (the reference implementation's `fge.py`):
//! from a trained network and its momentum buffers, SGD with a cyclic
//! learning rate (or Adam with its moments, for Adam-trained networks); the network at each cycle's low point (the end of epoch e
//! with e mod c + 1 = c/2) is a member of the ensemble, saved as a PyTorch
//! state dict in `<exp>/fge/member_<k>/`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::network::{trainable, Keep, NetworkJob};
use super::{stream, Batches, Context, EpochPlan, Rate, SavedState, Start, Step, Trainer};
use crate::config::FgeConfig;
use crate::experiment::{self as xp};
use crate::model::{BnMode, Params};
use crate::observe::{note, Observer, Progress};
use crate::optim::{OptimConfig, OptimKind};

/// The folder of an experiment's FGE run.
pub fn fge_dir(exp: &Path) -> PathBuf {
    exp.join("fge")
}

/// The folder of member `k` (0-based).
pub fn member_dir(exp: &Path, k: usize) -> PathBuf {
    fge_dir(exp).join(format!("member_{k}"))
}

fn optim(cfg: &FgeConfig) -> OptimConfig {
    OptimConfig {
        kind: cfg.optimizer,
        lr: cfg.lr1,
        momentum: cfg.momentum,
        nesterov: false,
        wd: cfg.wd,
    }
}

/// FGE as config.json records it.
fn step(exp: &Path) -> Step<'_> {
    Step {
        exp,
        section: "fge",
        what: "an FGE run",
    }
}

/// Runs FGE in `<exp>/fge/` (resuming it when `resume`); returns the member
/// folders.
pub fn run_fge(
    exp: &Path,
    cx: &Context,
    cfg: &FgeConfig,
    resume: bool,
    obs: &dyn Observer,
) -> Result<Vec<PathBuf>> {
    cfg.validate()?;
    let dir = fge_dir(exp);
    let (params, start) = starting_point(exp, &dir, cx, cfg, resume, obs)?;
    let batches = Batches {
        batch_size: cfg.batch_size,
        augment: cfg.augment,
        bn: BnMode::Train(Some(0.1)),
    };
    let trainer = Trainer::new(cx, batches, &cfg.dropout_schedule(), cfg.epochs)?;
    trainer.ensure_batches("fge")?;
    step(exp).record(cfg, cx, obs)?;
    let members = {
        let (exp, cfg) = (exp.to_path_buf(), cfg.clone());
        Keep::Members(Box::new(move |epoch| {
            cfg.is_member_epoch(epoch).then(|| {
                let k = (0..epoch).filter(|&e| cfg.is_member_epoch(e)).count();
                member_dir(&exp, k)
            })
        }))
    };
    let note = format!(
        "FGE from {} ({}, cycle {}, lr {} to {})",
        cfg.from.display(),
        cfg.optimizer.name(),
        cfg.cycle,
        cfg.lr1,
        cfg.lr2
    );
    let seed = cfg.seed + stream::FGE;
    let job = NetworkJob::new(dir, "fge", seed, &params, cx, members, note);
    let plan = EpochPlan {
        epochs: cfg.epochs,
        optim: optim(cfg),
        rate: Rate::Cyclic {
            cycle: cfg.cycle,
            lr1: cfg.lr1,
            lr2: cfg.lr2,
        },
    };
    let total = cfg.epochs as u64 * trainer.batches_per_epoch();
    let mut prog = Progress::new(obs, "fge", total);
    trainer.run(&job, &plan, start, &mut prog)?;
    prog.finish();
    Ok((0..cfg.members()).map(|k| member_dir(exp, k)).collect())
}

/// The network FGE starts from and where: its own saved state when
/// resuming, else `cfg.from` at epoch 0 with the optimiser state beside it
/// when it is of FGE's kind (SGD's momentum, or Adam's moments). Everything
/// is checked before the first write.
fn starting_point(
    exp: &Path,
    dir: &Path,
    cx: &Context,
    cfg: &FgeConfig,
    resume: bool,
    obs: &dyn Observer,
) -> Result<(Params, Start)> {
    let model = cx.model;
    if let Some(st) = step(exp).saved(dir, resume, cfg, cx)? {
        let params = st.network(model)?;
        let (_, names, leaves) = trainable(model, &params);
        st.check_optim(&optim(cfg), &names, &leaves)?;
        return Ok((params, st.start()));
    }
    let from = xp::resolve_model_path(&cfg.from);
    if !from.exists() {
        bail!(
            "--from {} does not exist; give a model file or folder, e.g. <exp>/start_model/epoch-160 (kept by train-endpoints --save-every)",
            cfg.from.display()
        );
    }
    let params = xp::load_params(&from, model, cx.rt)?;
    let state_dir = from.parent().unwrap_or(Path::new("."));
    let kept = match SavedState::read(state_dir)? {
        Some(st) => {
            let saved = if st.optim.iter().any(|(n, _)| n.starts_with("optim.v.")) {
                OptimKind::Adam
            } else {
                OptimKind::Sgd
            };
            if saved != cfg.optimizer {
                note(
                    obs,
                    format!(
                        "fge: the starting network was trained with {}, FGE runs {}: its state starts at zero",
                        saved.name(),
                        cfg.optimizer.name()
                    ),
                );
                None
            } else {
                let (_, names, leaves) = trainable(model, &params);
                st.check_optim(&optim(cfg), &names, &leaves)?;
                // SGD keeps its momentum and restarts its step count; Adam
                // keeps its step count too, whose bias correction matches
                // the moments it keeps.
                let keep_steps = cfg.optimizer == OptimKind::Adam;
                Some(
                    st.optim
                        .into_iter()
                        .filter(|(n, _)| keep_steps || n != "optim.steps")
                        .collect(),
                )
            }
        }
        None => {
            note(
                obs,
                format!(
                    "fge: no resume state beside {}; the optimiser state starts at zero",
                    from.display()
                ),
            );
            None
        }
    };
    Ok((
        params,
        Start {
            epoch: 0,
            optim: kept,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::super::cyclic_lr;
    use crate::config::FgeConfig;

    #[test]
    fn the_rate_cycles_as_the_reference_and_members_sit_at_its_low_points() {
        let (lr1, lr2, c) = (0.05, 1e-4, 4);
        // Ends of the cycle: lr1; the middle (t = 0.5): lr2.
        assert!((cyclic_lr(0, 0, 100, c, lr1, lr2) - lr1).abs() < 1e-15);
        assert!((cyclic_lr(2, 0, 100, c, lr1, lr2) - lr2).abs() < 1e-15);
        assert!((cyclic_lr(4, 0, 100, c, lr1, lr2) - lr1).abs() < 1e-15);
        // Linear in between: a quarter of the way, halfway from lr1 to lr2.
        let q = cyclic_lr(1, 0, 100, c, lr1, lr2);
        assert!((q - 0.5 * (lr1 + lr2)).abs() < 1e-12, "{q}");
        // Within an epoch it moves at every batch.
        assert!(cyclic_lr(0, 50, 100, c, lr1, lr2) < cyclic_lr(0, 0, 100, c, lr1, lr2));
        let cfg = FgeConfig::defaults("x".into(), 3);
        // Cycle 4: members after epochs 2, 6, 10, 14, 18 (0-based 1, 5, ...).
        let m: Vec<usize> = (0..20).filter(|&e| cfg.is_member_epoch(e)).collect();
        assert_eq!(m, vec![1, 5, 9, 13, 17]);
        assert_eq!(cfg.members(), 5);
        // The reference's budget protocol: 40 epochs of cycle 2, 20 members.
        let cfg = FgeConfig {
            epochs: 40,
            cycle: 2,
            ..cfg
        };
        assert_eq!(cfg.members(), 20);
        assert!(FgeConfig {
            cycle: 3,
            ..cfg.clone()
        }
        .validate()
        .is_err());
    }
}
