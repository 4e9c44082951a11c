//! Classification metrics on predicted probabilities, and summaries of a
//! metric along a path.
//!
//! * NLL: mean −log p(y|x).
//! * ECE: 15 equal-width confidence bins (lo, hi]; Σ_b (n_b/N)·|acc_b − conf_b|.
//! * Brier: mean over examples of Σ_c (p_c − 1[y = c])².
//! * AUROC: macro average over classes of the one-vs-rest ROC AUC, computed
//!   as the Mann–Whitney statistic with tied scores sharing their mean rank.

use anyhow::Result;

use crate::schema::along::Summary;
use crate::schema::ensemble::{Bin, Scores};
use tch::{Kind, Tensor};

pub const ECE_BINS: i64 = 15;

/// Bin statistics from per-bin counts, confidence sums and correct counts.
pub fn bins_from_sums(count: &[f64], conf_sum: &[f64], correct: &[f64]) -> Vec<Bin> {
    (0..count.len())
        .map(|b| {
            let c = count[b];
            Bin {
                lo: b as f64 / count.len() as f64,
                hi: (b + 1) as f64 / count.len() as f64,
                count: c as i64,
                conf: if c > 0.0 { conf_sum[b] / c } else { 0.0 },
                acc: if c > 0.0 { correct[b] / c } else { 0.0 },
            }
        })
        .collect()
}

pub fn ece_from_bins(bins: &[Bin]) -> f64 {
    let n: i64 = bins.iter().map(|b| b.count).sum();
    if n == 0 {
        return 0.0;
    }
    bins.iter()
        .map(|b| b.count as f64 / n as f64 * (b.acc - b.conf).abs())
        .sum()
}

/// Bin index of each confidence: bins are (lo, hi], confidence 0 goes to bin 0.
pub fn bin_index(conf: &Tensor) -> Tensor {
    (conf * ECE_BINS as f64)
        .ceil()
        .to_kind(Kind::Int64)
        .clamp(1, ECE_BINS)
        - 1
}

/// All metrics from probabilities `[N, C]` and labels `[N]`.
pub fn scores(probs: &Tensor, labels: &Tensor) -> Result<(Scores, Vec<Bin>)> {
    let probs = probs.to_kind(Kind::Double).to_device(tch::Device::Cpu);
    let labels = labels.to_device(tch::Device::Cpu);
    let n = labels.size()[0];
    let c = probs.size()[1];
    let (conf, pred) = probs.max_dim(1, false);
    let correct = pred.eq_tensor(&labels).to_kind(Kind::Double);
    let p_true = probs.gather(1, &labels.unsqueeze(1), false).squeeze_dim(1);
    let nll = -p_true
        .clamp_min(1e-12)
        .log()
        .mean(Kind::Double)
        .double_value(&[]);
    let onehot = labels.one_hot(c).to_kind(Kind::Double);
    let brier = (&probs - onehot)
        .square()
        .sum_dim_intlist(1, false, Kind::Double)
        .mean(Kind::Double)
        .double_value(&[]);
    let bins = bins_of(&conf, &correct)?;
    let acc = 100.0 * correct.sum(Kind::Double).double_value(&[]) / n.max(1) as f64;
    let auroc = macro_auroc(&probs, &labels)?;
    Ok((
        Scores {
            acc,
            nll,
            ece: ece_from_bins(&bins),
            brier,
            auroc,
        },
        bins,
    ))
}

/// Reliability bins of confidences and 0/1 correctness.
pub fn bins_of(conf: &Tensor, correct: &Tensor) -> Result<Vec<Bin>> {
    let idx = bin_index(conf);
    let count = Vec::<f64>::try_from(idx.bincount::<Tensor>(None, ECE_BINS).to_kind(Kind::Double))?;
    let cs = Vec::<f64>::try_from(
        idx.bincount(Some(conf.to_kind(Kind::Double)), ECE_BINS)
            .to_kind(Kind::Double),
    )?;
    let cc = Vec::<f64>::try_from(
        idx.bincount(Some(correct.to_kind(Kind::Double)), ECE_BINS)
            .to_kind(Kind::Double),
    )?;
    Ok(bins_from_sums(&count, &cs, &cc))
}

/// Macro one-vs-rest AUROC; classes absent from the labels (or present
/// everywhere) are skipped.
pub fn macro_auroc(probs: &Tensor, labels: &Tensor) -> Result<f64> {
    let c = probs.size()[1];
    let y: Vec<i64> = Vec::<i64>::try_from(labels.to_kind(Kind::Int64))?;
    let mut total = 0.0;
    let mut classes = 0;
    for k in 0..c {
        let s: Vec<f64> = Vec::<f64>::try_from(probs.select(1, k).to_kind(Kind::Double))?;
        let pos: Vec<bool> = y.iter().map(|&l| l == k).collect();
        if let Some(a) = auroc(&s, &pos) {
            total += a;
            classes += 1;
        }
    }
    Ok(if classes == 0 {
        f64::NAN
    } else {
        total / classes as f64
    })
}

/// Binary ROC AUC via mean ranks (ties share their average rank).
pub fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            if positive[o] {
                rank_sum_pos += mean_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos * n_neg) as f64)
}

/// `dl[i]` is the length of the step from point i−1 to i (`dl[0]` = 0).
/// The integral is the trapezoid rule weighted by step length, divided by
/// the path length (as the reference implementation's `int`); a path of
/// zero length integrates to the mean.
pub fn summarize(values: &[f64], dl: &[f64]) -> Summary {
    let n = values.len();
    if n == 0 {
        return Summary::default();
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let len: f64 = dl.iter().skip(1).sum();
    let int = if len > 0.0 {
        (1..n)
            .map(|i| 0.5 * (values[i - 1] + values[i]) * dl[i])
            .sum::<f64>()
            / len
    } else {
        mean
    };
    Summary {
        start: values[0],
        end: values[n - 1],
        min: values.iter().cloned().fold(f64::INFINITY, f64::min),
        max: values.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        mean,
        int,
    }
}

/// Barrier height max_t [v(t) − ((1−t)·v(0) + t·v(1))] (Frankle et al. 2020;
/// Entezari et al. 2022) and the t where it is reached.
pub fn barrier(ts: &[f64], values: &[f64]) -> (f64, f64) {
    let (v0, v1) = (values[0], values[values.len() - 1]);
    let mut best = (f64::NEG_INFINITY, 0.0);
    for (&t, &v) in ts.iter().zip(values) {
        let h = v - ((1.0 - t) * v0 + t * v1);
        if h > best.0 {
            best = (h, t);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_on_a_hand_made_example() {
        // Four predictions, two classes.
        // confidences 0.9 (correct), 0.9 (wrong), 0.6 (correct), 0.55 (correct)
        // bins of width 1/15: 0.9 -> (0.8667, 0.9333] = bin 13; 0.6 -> (0.5333, 0.6] = bin 8;
        // 0.55 -> (0.5333, 0.6] = bin 8.
        // bin 13: acc 0.5, conf 0.9, weight 2/4 -> 0.5*0.4 = 0.2
        // bin 8:  acc 1.0, conf 0.575, weight 2/4 -> 0.5*0.425 = 0.2125
        // ECE = 0.4125
        let probs = Tensor::from_slice(&[0.9f64, 0.1, 0.9, 0.1, 0.4, 0.6, 0.55, 0.45]).view([4, 2]);
        let labels = Tensor::from_slice(&[0i64, 1, 1, 0]);
        let (s, bins) = scores(&probs, &labels).unwrap();
        assert!((s.ece - 0.4125).abs() < 1e-9, "ece {}", s.ece);
        assert_eq!(bins[13].count, 2);
        assert_eq!(bins[8].count, 2);
        assert!((s.acc - 75.0).abs() < 1e-9);
    }

    #[test]
    fn brier_on_one_hot_cases() {
        // Perfect one-hot prediction: 0. Confidently wrong: 2. Uniform over 4 classes: 0.75.
        let perfect = Tensor::from_slice(&[0.0f64, 1.0, 0.0]).view([1, 3]);
        let wrong = Tensor::from_slice(&[1.0f64, 0.0, 0.0]).view([1, 3]);
        let uniform = Tensor::from_slice(&[0.25f64; 4]).view([1, 4]);
        let y = Tensor::from_slice(&[1i64]);
        assert!(scores(&perfect, &y).unwrap().0.brier.abs() < 1e-12);
        assert!((scores(&wrong, &y).unwrap().0.brier - 2.0).abs() < 1e-12);
        assert!((scores(&uniform, &y).unwrap().0.brier - 0.75).abs() < 1e-12);
    }

    #[test]
    fn nll_is_minus_log_of_true_class_probability() {
        let probs = Tensor::from_slice(&[0.5f64, 0.5, 0.2, 0.8]).view([2, 2]);
        let y = Tensor::from_slice(&[0i64, 1]);
        let want = -(0.5f64.ln() + 0.8f64.ln()) / 2.0;
        assert!((scores(&probs, &y).unwrap().0.nll - want).abs() < 1e-12);
    }

    #[test]
    fn auroc_by_hand() {
        // positives score 0.8, 0.4; negatives 0.6, 0.2: pairs (pos > neg): (0.8>0.6),(0.8>0.2),(0.4>0.2) = 3 of 4
        assert_eq!(
            auroc(&[0.8, 0.4, 0.6, 0.2], &[true, true, false, false]),
            Some(0.75)
        );
        // a tie counts half
        assert_eq!(auroc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(auroc(&[0.1, 0.9], &[true, true]), None);
    }

    #[test]
    fn constant_metric_integrates_to_the_constant() {
        let v = vec![3.5; 7];
        let dl = vec![0.0, 1.0, 2.0, 0.5, 0.5, 3.0, 1.0];
        let s = summarize(&v, &dl);
        assert!((s.int - 3.5).abs() < 1e-12);
        assert_eq!((s.min, s.max, s.mean), (3.5, 3.5, 3.5));
        // zero-length path (two identical models): still the constant
        assert!((summarize(&v, &[0.0; 7]).int - 3.5).abs() < 1e-12);
    }

    #[test]
    fn integral_is_length_weighted() {
        // values 0, 1, 0 with steps of length 1 and 3: (0.5*1 + 0.5*3)/4 = 0.5
        let s = summarize(&[0.0, 1.0, 0.0], &[0.0, 1.0, 3.0]);
        assert!((s.int - 0.5).abs() < 1e-12);
    }

    #[test]
    fn barrier_of_identical_endpoints_line_is_zero() {
        let ts: Vec<f64> = (0..11).map(|i| i as f64 / 10.0).collect();
        let flat = vec![0.42; 11];
        assert_eq!(barrier(&ts, &flat).0, 0.0);
        // a bump of 1 above a sloped chord at t = 0.5
        let vals: Vec<f64> = ts
            .iter()
            .map(|&t| 1.0 + t + if (t - 0.5).abs() < 1e-9 { 1.0 } else { 0.0 })
            .collect();
        let (h, t) = barrier(&ts, &vals);
        assert!((h - 1.0).abs() < 1e-12 && (t - 0.5).abs() < 1e-12);
    }
}
