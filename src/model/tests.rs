//! Tests of the architectures: shapes, parameter counts, PyTorch names,
//! layouts, precision and the tuned operations.

use super::*;
use tch::Device;

fn tiny(arch: ArchKind, c: i64, hw: i64) -> Model {
    let mut cfg = ArchConfig::new(arch, c, 10, hw, hw);
    match arch {
        ArchKind::Preresnet => {
            cfg.depth = 8;
            cfg.widen = 50;
        }
        ArchKind::Wrn => {
            cfg.depth = 10;
            cfg.widen = 1;
        }
        _ => cfg.widen = 25,
    }
    Model::new(cfg).unwrap()
}

#[test]
fn every_architecture_gives_logits_of_the_right_shape() {
    tch::manual_seed(0);
    let cases = [
        (ArchKind::SeedConvnet, 1, 28),
        (ArchKind::SeedConvnet, 3, 32),
        (ArchKind::Convfc, 1, 28),
        (ArchKind::Convfc, 3, 32),
        (ArchKind::Vgg16, 3, 32),
        (ArchKind::Vgg16Bn, 3, 32),
        (ArchKind::Preresnet, 3, 32),
        (ArchKind::Preresnet, 1, 28),
        (ArchKind::Wrn, 3, 32),
    ];
    for (arch, c, hw) in cases {
        let m = tiny(arch, c, hw);
        let p = m.init(Device::Cpu);
        m.check(&p, "init").unwrap();
        let x = Tensor::randn([3, c, hw, hw], (Kind::Float, Device::Cpu));
        for mode in [BnMode::Eval, BnMode::Train(None), BnMode::Train(Some(0.1))] {
            let y = m.forward(&p, &x, mode, Precision::Fp32).unwrap();
            assert_eq!(y.size(), vec![3, 10], "{arch:?} {mode:?}");
            assert!(y.isfinite().all().int64_value(&[]) == 1, "{arch:?}");
        }
    }
}

#[test]
fn full_size_architectures_have_the_published_parameter_counts() {
    // seed ConvNet on CIFAR-10: 448 + 4640 + 18496 + 262400 + 2570
    let seed = Model::new(ArchConfig::new(ArchKind::SeedConvnet, 3, 10, 32, 32)).unwrap();
    assert_eq!(seed.num_weights(), 288_554);
    // PreResNet-110 on CIFAR-10 (bottleneck, 9n+2 with n = 12) and VGG16: sizes from the PyTorch modules
    let convfc = Model::new(ArchConfig::new(ArchKind::Convfc, 3, 10, 32, 32)).unwrap();
    // 3*32*25+32 + 32*64*25+64 + 64*128*25+128 + 1152*1000+1000 + 1000*1000+1000 + 1000*10+10
    assert_eq!(
        convfc.num_weights(),
        2432 + 51264 + 204928 + 1153000 + 1001000 + 10010
    );
    let wrn = Model::new(ArchConfig::new(ArchKind::Wrn, 3, 10, 32, 32)).unwrap();
    assert_eq!(
        wrn.num_weights(),
        36_489_290,
        "WRN-28-10 with biased convolutions"
    );
}

#[test]
fn pytorch_names_match_the_seed_state_dict() {
    let m = Model::new(ArchConfig::new(ArchKind::SeedConvnet, 3, 10, 32, 32)).unwrap();
    let names: Vec<&str> = m.spec.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "features.0.weight",
            "features.0.bias",
            "features.3.weight",
            "features.3.bias",
            "features.6.weight",
            "features.6.bias",
            "classifier.2.weight",
            "classifier.2.bias",
            "classifier.5.weight",
            "classifier.5.bias"
        ]
    );
    let bn = Model::new(ArchConfig::new(ArchKind::Vgg16Bn, 3, 10, 32, 32)).unwrap();
    assert!(bn
        .spec
        .iter()
        .any(|s| s.name == "layer_blocks.0.1.running_var"));
    assert!(bn
        .spec
        .iter()
        .any(|s| s.name == "layer_blocks.0.1.num_batches_tracked" && s.kind == Kind::Int64));
}

#[test]
fn channels_last_gives_the_same_logits_as_the_plain_layout() {
    tch::manual_seed(1);
    for (arch, c, hw) in [
        (ArchKind::SeedConvnet, 3, 32),
        (ArchKind::Convfc, 1, 28),
        (ArchKind::Vgg16Bn, 3, 32),
    ] {
        let m = tiny(arch, c, hw);
        let p = m.init(Device::Cpu);
        let x = Tensor::rand([8, c, hw, hw], (Kind::Float, Device::Cpu));
        let plain = m.forward(&p, &x, BnMode::Eval, Precision::Fp32).unwrap();
        let pc = m.prepare(&p, Device::Cpu, true);
        let xc = channels_last(&x);
        assert!(is_channels_last(&xc));
        let cl = m.forward(&pc, &xc, BnMode::Eval, Precision::Fp32).unwrap();
        let diff = (&plain - &cl).abs().max().double_value(&[]);
        assert!(diff <= 1e-4, "{arch:?}: max abs diff {diff}");
    }
}

#[test]
fn rewritten_strided_pointwise_convolutions_give_the_same_values_and_gradients() {
    // PreResNet-8 at quarter width: downsample convolutions 4 → 8 and
    // 8 → 16 with stride 2, which Fwd::conv runs as slice + 1×1 on
    // channels-last input. Logits and every weight gradient must match
    // the plain NCHW strided convolutions.
    tch::manual_seed(4);
    let mut cfg = ArchConfig::new(ArchKind::Preresnet, 3, 10, 16, 16);
    cfg.depth = 8;
    cfg.widen = 25;
    let m = Model::new(cfg).unwrap();
    assert_eq!(
        m.onednn_guarded_convs(),
        vec![
            "layer2.0.downsample.0 (4 → 8, stride 2)",
            "layer3.0.downsample.0 (8 → 16, stride 2)"
        ]
    );
    let p0 = m.init(Device::Cpu);
    let x = Tensor::rand([6, 3, 16, 16], (Kind::Float, Device::Cpu));
    let run = |cl: bool| {
        let p = m.prepare(&p0, Device::Cpu, cl).map(|_, t| {
            let t = t.detach().copy();
            if t.is_floating_point() {
                t.set_requires_grad(true)
            } else {
                t
            }
        });
        let xin = if cl {
            channels_last(&x)
        } else {
            x.shallow_clone()
        };
        let y = m
            .forward(&p, &xin, BnMode::Train(None), Precision::Fp32)
            .unwrap();
        (y.square().sum(Kind::Float)).backward();
        let grads: Vec<(String, Tensor)> = p
            .iter()
            .filter(|(n, _)| m.is_weight(n))
            .map(|(n, t)| (n.to_string(), t.grad().contiguous()))
            .collect();
        (y.detach(), grads)
    };
    let (ya, ga) = run(false);
    let (yb, gb) = run(true);
    let d = (&ya - &yb).abs().max().double_value(&[]);
    assert!(d <= 1e-4, "logits differ by {d}");
    assert_eq!(ga.len(), gb.len());
    for ((n, a), (_, b)) in ga.iter().zip(&gb) {
        let scale = a.abs().max().double_value(&[]).max(1.0);
        let d = (a - b).abs().max().double_value(&[]) / scale;
        assert!(d <= 1e-4, "{n}: gradients differ by {d} (relative)");
    }
    let downsample = ga.iter().find(|(n, _)| n == "layer2.0.downsample.0.weight");
    assert!(downsample.is_some_and(|(_, g)| g.abs().sum(Kind::Float).double_value(&[]) > 0.0));
}

#[test]
fn bf16_logits_are_close_to_fp32() {
    // Tolerance: 5% of the logits' spread. bf16 keeps 8 mantissa bits
    // (relative error ~0.4% per op), accumulated over a few layers.
    tch::manual_seed(2);
    let m = tiny(ArchKind::SeedConvnet, 3, 32);
    let p = m.init(Device::Cpu);
    let x = Tensor::rand([16, 3, 32, 32], (Kind::Float, Device::Cpu));
    let a = m.forward(&p, &x, BnMode::Eval, Precision::Fp32).unwrap();
    let b = m.forward(&p, &x, BnMode::Eval, Precision::Bf16).unwrap();
    assert_eq!(b.kind(), Kind::Float, "logits are returned in fp32");
    let spread = a.std(true).double_value(&[]);
    let diff = (&a - &b).abs().max().double_value(&[]);
    assert!(
        diff <= 0.05 * spread.max(1e-3),
        "diff {diff}, spread {spread}"
    );
}

#[test]
fn check_rejects_missing_and_misshaped_keys() {
    let m = tiny(ArchKind::SeedConvnet, 3, 32);
    let p = m.init(Device::Cpu);
    let missing = Params::new(
        p.iter()
            .skip(1)
            .map(|(n, t)| (n.to_string(), t.shallow_clone()))
            .collect(),
    );
    let e = m.check(&missing, "x.safetensors").unwrap_err().to_string();
    assert!(
        e.contains("x.safetensors") && e.contains("features.0.weight"),
        "{e}"
    );
    let wrong = p.map(|n, t| {
        if n == "classifier.5.bias" {
            Tensor::zeros([7], (Kind::Float, Device::Cpu))
        } else {
            t.shallow_clone()
        }
    });
    let e = m.check(&wrong, "y.pt").unwrap_err().to_string();
    assert!(
        e.contains("y.pt") && e.contains("classifier.5.bias") && e.contains("[7]"),
        "{e}"
    );
}

#[test]
fn invalid_configs_are_refused_with_guidance() {
    let e = Model::new(ArchConfig::new(ArchKind::Vgg16, 1, 10, 28, 28))
        .unwrap_err()
        .to_string();
    assert!(e.contains("32x32"), "{e}");
    let mut c = ArchConfig::new(ArchKind::Preresnet, 3, 10, 32, 32);
    c.depth = 21;
    assert!(Model::new(c).unwrap_err().to_string().contains("6n+2"));
    // Images too small for the poolings are refused up front (a 1x1 image
    // used to make libtorch abort in the forward).
    for (arch, hw, min) in [
        (ArchKind::SeedConvnet, 3, "4x4"),
        (ArchKind::Convfc, 14, "15x15"),
    ] {
        let e = Model::new(ArchConfig::new(arch, 1, 10, hw, hw))
            .unwrap_err()
            .to_string();
        assert!(e.contains(min), "{e}");
    }
    // The smallest accepted sizes run a forward.
    for (arch, hw) in [(ArchKind::SeedConvnet, 4), (ArchKind::Convfc, 15)] {
        let mut cfg = ArchConfig::new(arch, 1, 10, hw, hw);
        cfg.widen = 25;
        let m = Model::new(cfg).unwrap();
        let x = Tensor::zeros([2, 1, hw, hw], (Kind::Float, Device::Cpu));
        let y = m
            .forward(&m.init(Device::Cpu), &x, BnMode::Eval, Precision::Fp32)
            .unwrap();
        assert_eq!(y.size(), [2, 10]);
    }
}

/// The hand-tuned operations against libtorch's own.
mod tuned_ops {
    use super::*;

    #[test]
    fn reordered_forward_gives_pytorchs_logits_and_gradients() {
        tch::manual_seed(8);
        let m = Model::new(ArchConfig::new(ArchKind::SeedConvnet, 3, 10, 32, 32)).unwrap();
        let p = m.init(Device::Cpu);
        let x = Tensor::rand([6, 3, 32, 32], (Kind::Float, Device::Cpu)) - 0.5;
        let y = Tensor::from_slice(&[0i64, 3, 9, 1, 1, 7]);
        let grads = |f: &dyn Fn(&Params) -> Tensor| {
            let q = p.map(|_, t| t.detach().copy().set_requires_grad(true));
            let logits = f(&q);
            logits.cross_entropy_for_logits(&y).backward();
            let g: Vec<Tensor> = q.iter().map(|(_, t)| t.grad()).collect();
            (logits.detach(), g)
        };
        let (b, gb) = grads(&|q| seed_convnet_pytorch_order(q, &x, false));
        // Plain layout, and channels-last (where the flatten is reordered too).
        for xs in [x.shallow_clone(), channels_last(&x)] {
            let (a, ga) = grads(&|q| m.forward(q, &xs, BnMode::Eval, Precision::Fp32).unwrap());
            let d = (&a - &b).abs().max().double_value(&[]);
            assert!(d <= 1e-5, "logits differ by {d}");
            for ((n, _), (g1, g2)) in p.iter().zip(ga.iter().zip(&gb)) {
                let d = (g1 - g2).abs().max().double_value(&[]);
                let scale = g2.abs().max().double_value(&[]).max(1e-8);
                assert!(
                    d <= 1e-4 * scale,
                    "{n}: gradients differ by {d} (max {scale})"
                );
            }
        }
    }

    #[test]
    fn no_grad_max_pool_equals_libtorchs_bit_for_bit() {
        tch::manual_seed(10);
        let p = Params::new(Vec::new());
        let f = Fwd {
            p: &p,
            mode: BnMode::Eval,
            precision: Precision::Fp32,
            models: 1,
            tap: None,
        };
        let nan_free = |t: &Tensor| t.nan_to_num(12345.0, None, None);
        for kind in [Kind::Float, Kind::BFloat16] {
            for (c, h, w) in [(16, 32, 32), (5, 6, 10), (1, 2, 2)] {
                // Rounded values make ties common; one NaN must propagate.
                let x = (Tensor::randn([3, c, h, w], (Kind::Float, Device::Cpu)) * 2.0).round();
                let _ = x.get(1).get(0).get(1).get(1).fill_(f64::NAN);
                let x = channels_last(&x.to_kind(kind));
                let lib = x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
                let fast = layers::max_pool_2x2_nhwc(&x);
                assert_eq!(fast.size(), lib.size());
                assert_eq!(fast.kind(), kind);
                assert!(
                    nan_free(&fast).equal(&nan_free(&lib)),
                    "{kind:?} {c}x{h}x{w}"
                );
                assert!(fast.isnan().equal(&lib.isnan()), "{kind:?}: NaN positions");
                assert!(fast.get(1).get(0).get(0).get(0).isnan().int64_value(&[]) == 1);
                // relu_max_pool takes libtorch's kernel when a gradient flows
                // through x and the fast path otherwise: the same result.
                let with_grad = f.relu_max_pool(&x.set_requires_grad(true), 2, 2);
                assert!(with_grad.requires_grad());
                let _g = tch::no_grad_guard();
                let without = f.relu_max_pool(&x.detach(), 2, 2);
                assert!(nan_free(&with_grad.detach()).equal(&nan_free(&without)));
            }
        }
    }

    #[test]
    fn dropout_zeroes_a_fraction_p_and_rescales_the_rest() {
        tch::manual_seed(9);
        let p = Params::new(Vec::new());
        let f = Fwd {
            p: &p,
            mode: BnMode::Train(None),
            precision: Precision::Fp32,
            models: 1,
            tap: None,
        };
        // 0.5 and 0.25 take the one-byte-per-element path, 0.3 the uniform one;
        // an odd element count checks the byte path's tail.
        let x = Tensor::ones([201, 999], (Kind::Float, Device::Cpu));
        for p in [0.5, 0.25, 0.3] {
            let y = f.dropout(&x, p);
            assert_eq!(y.size(), x.size());
            let zeros = y
                .eq(0.0)
                .to_kind(Kind::Double)
                .mean(Kind::Double)
                .double_value(&[]);
            assert!((zeros - p).abs() < 0.005, "p {p}: dropped fraction {zeros}");
            let kept = y.max().double_value(&[]);
            assert!(
                (kept - 1.0 / (1.0 - p)).abs() < 1e-5,
                "p {p}: kept values scaled to {kept}"
            );
            // no position is favoured: both halves of each row drop alike
            let left = y
                .narrow(1, 0, 499)
                .eq(0.0)
                .to_kind(Kind::Double)
                .mean(Kind::Double);
            let right = y
                .narrow(1, 499, 500)
                .eq(0.0)
                .to_kind(Kind::Double)
                .mean(Kind::Double);
            let gap = (left - right).abs().double_value(&[]);
            assert!(gap < 0.01, "p {p}: left/right drop rates differ by {gap}");
        }
        let eval = Fwd {
            mode: BnMode::Eval,
            ..f
        };
        assert_eq!(eval.dropout(&x, 0.3), x);
    }
}

/// K models stacked into grouped convolutions against K separate forwards.
mod stacked {
    use super::*;

    #[test]
    fn stacked_forward_equals_separate_forwards() {
        tch::manual_seed(4);
        for (arch, c, hw) in [
            (ArchKind::SeedConvnet, 1, 28),
            (ArchKind::Convfc, 3, 32),
            (ArchKind::Vgg16Bn, 3, 32),
            (ArchKind::Preresnet, 3, 32),
            (ArchKind::Wrn, 3, 32),
        ] {
            let mut cfg = ArchConfig::new(arch, c, 10, hw, hw);
            (cfg.depth, cfg.widen) = match arch {
                ArchKind::Preresnet => (8, 50),
                ArchKind::Wrn => (10, 1),
                _ => (0, 25),
            };
            cfg.dropout = 0.0; // train-mode BN (batch statistics) but deterministic
            let m = Model::new(cfg).unwrap();
            let sets: Vec<Params> = (0..3).map(|_| m.init(Device::Cpu)).collect();
            let x = Tensor::rand([5, c, hw, hw], (Kind::Float, Device::Cpu));
            for cl in [false, true] {
                let prepared: Vec<Params> =
                    sets.iter().map(|p| m.prepare(p, Device::Cpu, cl)).collect();
                let xs = if cl {
                    channels_last(&x)
                } else {
                    x.shallow_clone()
                };
                let stacked = Params::stack(&prepared);
                let all = m
                    .forward_stacked(&stacked, 3, &xs, BnMode::Train(None), Precision::Fp32)
                    .unwrap();
                assert_eq!(all.size(), vec![5, 3, 10]);
                for (i, p) in prepared.iter().enumerate() {
                    let one = m
                        .forward(p, &xs, BnMode::Train(None), Precision::Fp32)
                        .unwrap();
                    let d = (&one - all.select(1, i as i64))
                        .abs()
                        .max()
                        .double_value(&[]);
                    assert!(d < 1e-4, "{arch:?} cl={cl} model {i}: {d}");
                }
                // unstack gives back the sets
                for (a, b) in stacked.unstack(3).iter().zip(&prepared) {
                    assert_eq!(a.distance(b, |n| m.is_weight(n)).unwrap(), 0.0);
                }
            }
        }
    }
}
