//! The configs' defaults pass their own rules, and broken values do not.

use super::*;

#[test]
fn defaults_pass_their_own_rules_and_broken_values_do_not() {
    let t = TrainConfig::defaults(ArchKind::Vgg16, 3);
    t.validate().unwrap();
    assert_eq!(t.optim.lr, 0.05);
    assert!(t.augment);
    let c = CurveConfig::defaults("a".into(), "b".into(), 1, 10);
    c.validate("--lr").unwrap();
    assert!(!c.augment);
    assert_eq!(CurveConfig::defaults("a".into(), "b".into(), 1, 0).wd, 0.0);
    for bad in [0.0, -0.05, f64::NAN, f64::INFINITY] {
        let c = CurveConfig {
            lr: bad,
            ..c.clone()
        };
        let e = c.validate("--curve-lr").unwrap_err().to_string();
        assert!(e.starts_with("--curve-lr"), "{e}");
    }
    let c = CurveConfig {
        init_bends: vec![(2, "x".into())],
        ..c
    };
    assert!(c.validate("--lr").is_err());
    assert!(SweepConfig { points: 1 }.validate().is_err());
    let l = LandscapeConfig {
        grid: 1,
        margin: 0.2,
        coords: crate::vocab::Coords::Orthonormal,
    };
    assert!(l.validate().is_err());
    let r = RandomPlaneConfig::defaults("m".into());
    r.validate().unwrap();
    for (span, grid, dims) in [(0.0, 21, 2), (f64::NAN, 21, 2), (1.0, 1, 2), (1.0, 21, 3)] {
        let bad = RandomPlaneConfig {
            span,
            grid,
            dims,
            ..r.clone()
        };
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn a_final_dropout_covers_the_last_epochs_within_the_run() {
    let t = TrainConfig {
        epochs: 100,
        final_dropout: Some(FinalDropout {
            dropout: 0.4,
            epochs: 20,
        }),
        ..TrainConfig::defaults(ArchKind::SeedConvnet, 3)
    };
    t.validate().unwrap();
    assert_eq!(t.final_dropout.unwrap().from_epoch(t.epochs), 80);
    for (dropout, epochs, flag) in [
        (1.5, 20, "--final-dropout"),
        (-0.1, 20, "--final-dropout"),
        (0.4, 0, "--final-epochs"),
        (0.4, 101, "--final-epochs"),
    ] {
        let bad = TrainConfig {
            final_dropout: Some(FinalDropout { dropout, epochs }),
            ..t.clone()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.starts_with(flag), "{e}");
    }
}
