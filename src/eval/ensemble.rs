//! Fast ensembles along a curve: K models φ(t_k), their test-set logits
//! computed once, then averaged for every ensemble size k = 1..K.

use tch::{Kind, Tensor};

use super::metrics::scores;
use crate::schema::ensemble::{EnsembleReport, Reliability, SizeRow};
use crate::vocab::{Average, Sampling};

/// The member t values: a grid, or seeded uniform draws (in draw order).
pub fn member_ts(k: usize, sampling: Sampling, seed: u64) -> Vec<f64> {
    match sampling {
        Sampling::Grid if k == 1 => vec![0.5],
        Sampling::Grid => (0..k).map(|i| i as f64 / (k - 1) as f64).collect(),
        Sampling::Random => {
            // The stream starts one step past `seed`, as it always has.
            let mut rng = crate::rng::SplitMix64(seed.wrapping_add(0x9E37_79B9_7F4A_7C15));
            (0..k).map(|_| rng.unit()).collect()
        }
    }
}

/// The order in which grid members join the ensemble for the size curve:
/// each new member is the one farthest (in t) from those already in, starting
/// from the middle, so that every prefix spreads over the whole curve.
pub fn spread_order(ts: &[f64]) -> Vec<usize> {
    let n = ts.len();
    if n == 0 {
        return vec![];
    }
    let mut chosen = vec![(0..n)
        .min_by(|&a, &b| (ts[a] - 0.5).abs().total_cmp(&(ts[b] - 0.5).abs()))
        .unwrap_or(0)];
    while chosen.len() < n {
        let next = (0..n)
            .filter(|i| !chosen.contains(i))
            .max_by(|&a, &b| {
                let da = chosen
                    .iter()
                    .map(|&c| (ts[a] - ts[c]).abs())
                    .fold(f64::INFINITY, f64::min);
                let db = chosen
                    .iter()
                    .map(|&c| (ts[b] - ts[c]).abs())
                    .fold(f64::INFINITY, f64::min);
                da.total_cmp(&db).then(b.cmp(&a))
            })
            .unwrap_or(0);
        chosen.push(next);
    }
    chosen
}

/// Combines member logits `[N, C]` into ensemble probabilities.
pub fn combine(members: &[&Tensor], average: Average) -> Tensor {
    let stacked = Tensor::stack(members, 0).to_kind(Kind::Double);
    match average {
        Average::Probs => stacked
            .softmax(2, Kind::Double)
            .mean_dim(0, false, Kind::Double),
        Average::Logits => stacked
            .mean_dim(0, false, Kind::Double)
            .softmax(1, Kind::Double),
    }
}

/// Scores all ensembles from precomputed logits.
pub fn report(
    start: &Tensor,
    end: &Tensor,
    members: &[Tensor],
    members_t: Vec<f64>,
    order: Vec<usize>,
    labels: &Tensor,
    average: Average,
) -> anyhow::Result<EnsembleReport> {
    let single = |l: &Tensor| scores(&l.softmax(1, Kind::Double), labels);
    let (s_start, bins_start) = single(start)?;
    let (s_end, _) = single(end)?;
    let (s_pair, _) = scores(&combine(&[start, end], average), labels)?;
    let mut by_size = Vec::new();
    let mut last = None;
    for k in 1..=order.len() {
        let refs: Vec<&Tensor> = order[..k].iter().map(|&i| &members[i]).collect();
        let (s, bins) = scores(&combine(&refs, average), labels)?;
        by_size.push(SizeRow {
            k,
            scores: s.clone(),
        });
        last = Some((s, bins));
    }
    let (s_curve, bins_curve) =
        last.ok_or_else(|| anyhow::anyhow!("an ensemble needs at least one member"))?;
    Ok(EnsembleReport {
        members_t,
        order,
        start: s_start,
        end: s_end,
        endpoints: s_pair,
        curve: s_curve,
        by_size,
        reliability: Reliability {
            curve: bins_curve,
            start: bins_start,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensemble_of_identical_models_equals_the_model() {
        tch::manual_seed(3);
        let logits = Tensor::randn([50, 4], (Kind::Float, tch::Device::Cpu)) * 3.0;
        let labels = Tensor::randint(4, [50], (Kind::Int64, tch::Device::Cpu));
        let members: Vec<Tensor> = (0..5).map(|_| logits.copy()).collect();
        for avg in [Average::Probs, Average::Logits] {
            let r = report(
                &logits,
                &logits,
                &members,
                grid5(),
                spread_order(&grid5()),
                &labels,
                avg,
            )
            .unwrap();
            for row in &r.by_size {
                assert!((row.scores.nll - r.start.nll).abs() < 1e-9);
                assert_eq!(row.scores.acc, r.start.acc);
                assert!((row.scores.brier - r.start.brier).abs() < 1e-9);
                assert!((row.scores.ece - r.start.ece).abs() < 1e-9);
                assert!((row.scores.auroc - r.start.auroc).abs() < 1e-9);
            }
            assert!((r.endpoints.nll - r.start.nll).abs() < 1e-9);
        }
    }

    fn grid5() -> Vec<f64> {
        member_ts(5, Sampling::Grid, 0)
    }

    #[test]
    fn spread_order_starts_in_the_middle_and_covers_all() {
        let ts = member_ts(5, Sampling::Grid, 0);
        let o = spread_order(&ts);
        assert_eq!(o[0], 2);
        assert_eq!(
            o[1..3]
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            [0, 4].into_iter().collect()
        );
        let mut s = o.clone();
        s.sort();
        assert_eq!(s, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn random_sampling_is_seeded_and_in_range() {
        let a = member_ts(10, Sampling::Random, 7);
        assert_eq!(a, member_ts(10, Sampling::Random, 7));
        assert_ne!(a, member_ts(10, Sampling::Random, 8));
        assert!(a.iter().all(|&t| (0.0..1.0).contains(&t)));
    }

    #[test]
    fn averaging_probs_and_logits_differ_as_defined() {
        let a = Tensor::from_slice(&[2.0f32, 0.0]).view([1, 2]);
        let b = Tensor::from_slice(&[0.0f32, 0.0]).view([1, 2]);
        let p = combine(&[&a, &b], Average::Probs);
        let l = combine(&[&a, &b], Average::Logits);
        let sa = 1.0 / (1.0 + (-2.0f64).exp());
        assert!((p.double_value(&[0, 0]) - (sa + 0.5) / 2.0).abs() < 1e-9);
        assert!((l.double_value(&[0, 0]) - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-9);
    }
}
