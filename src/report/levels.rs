//! Contour levels, axis ticks and number formatting shared by the figures and the HTML report.

/// Log-spaced contour levels from `lo` to `hi` inclusive (`0 < lo`), `n` of them.
///
/// Level `k` is `lo * (hi/lo)^(k/(n-1))`; `n == 1` gives `[lo]`, `n == 0` gives nothing.
/// A degenerate range (`hi <= lo`) is widened to one decade above `lo`.
pub fn log_levels(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    assert!(
        lo > 0.0 && lo.is_finite(),
        "log_levels needs 0 < lo, got {lo}"
    );
    let hi = if hi.is_finite() && hi > lo {
        hi
    } else {
        lo * 10.0
    };
    match n {
        0 => Vec::new(),
        1 => vec![lo],
        _ => {
            let (a, b) = (lo.ln(), hi.ln());
            (0..n)
                .map(|k| match k {
                    0 => lo,
                    k if k == n - 1 => hi,
                    k => (a + (b - a) * k as f64 / (n - 1) as f64).exp(),
                })
                .collect()
        }
    }
}

/// Formats `v` with `sig` significant digits, switching to exponent notation for very
/// small or large magnitudes, and trimming trailing zeros.
pub fn fmt_sig(v: f64, sig: usize) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "–".into()
        } else if v > 0.0 {
            "∞".into()
        } else {
            "-∞".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    let sig = sig.max(1);
    // Round to `sig` significant digits first so that 9.9996 -> 10 gets the right magnitude.
    let rounded: f64 = format!("{:.*e}", sig - 1, v).parse().unwrap_or(v);
    let mag = rounded.abs().log10().floor() as i32;
    if !(-4..6).contains(&mag) {
        let s = format!("{:.*e}", sig - 1, v);
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        return format!("{}e{}", trim_zeros(m), e);
    }
    let decimals = (sig as i32 - 1 - mag).max(0) as usize;
    trim_zeros(&format!("{:.*}", decimals, rounded)).to_string()
}

/// `v` at the precision `fmt_sig(scale, sig)` has, so that the numbers of
/// one figure (say, two barriers) share their decimals: 80.4 and 0.00275 at
/// the scale 80.4 read "80.4" and "< 0.1" (a non-zero value below that
/// precision), not "80.4" and "0.00275".
pub fn fmt_at_scale(v: f64, scale: f64, sig: usize) -> String {
    let scale = scale.abs();
    if !(v.is_finite() && scale.is_finite() && scale > 0.0) || v.abs() > scale {
        return fmt_sig(v, sig);
    }
    let rounded: f64 = format!("{:.*e}", sig.max(1) - 1, scale)
        .parse()
        .unwrap_or(scale);
    let mag = rounded.log10().floor() as i32;
    if !(-4..6).contains(&mag) {
        return fmt_sig(v, sig);
    }
    let decimals = (sig.max(1) as i32 - 1 - mag).max(0) as usize;
    let text = format!("{:.*}", decimals, v);
    if v != 0.0
        && text
            .trim_start_matches('-')
            .trim_matches(['0', '.'])
            .is_empty()
    {
        let step = format!("{:.*}", decimals, 10f64.powi(-(decimals as i32)));
        return format!("< {step}");
    }
    trim_zeros(&text).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// "Nice" linear tick positions (steps of 1, 2 or 5 times a power of ten) inside `[lo, hi]`,
/// aiming at about `target` ticks.
pub fn linear_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(2) as f64;
    let p = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .map(|k| k as f64 * step)
        .map(|v| if v.abs() < step * 1e-9 { 0.0 } else { v })
        .collect()
}

/// Tick values for a log axis covering `[lo, hi]` (`0 < lo < hi`): powers of ten, densified to
/// 1-2-5 or 1..9 mantissas while that keeps at most `max` ticks, and never fewer than two ticks.
pub fn log_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    let within = |mants: &[f64]| -> Vec<f64> {
        let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        (e0..=e1)
            .flat_map(|e| mants.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|v| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9))
            .collect()
    };
    let candidates = [
        within(&[1.0]),
        within(&[1.0, 2.0, 5.0]),
        within(&[1.0, 2.0, 3.0, 5.0, 7.0]),
        within(&[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]),
    ];
    for c in &candidates {
        if c.len() >= 3 && c.len() <= max {
            return c.clone();
        }
    }
    // Either even powers of ten are too many (thin them) or the range is too narrow.
    let powers = &candidates[0];
    if powers.len() > max {
        let stride = powers.len().div_ceil(max);
        return powers.iter().step_by(stride).copied().collect();
    }
    let dense = &candidates[3];
    if dense.len() >= 2 {
        return dense.clone();
    }
    vec![lo, hi]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_of_one_figure_share_their_decimals() {
        // The along-curve figure's two test-error barriers, in points.
        assert_eq!(fmt_at_scale(80.43, 80.43, 3), "80.4");
        assert_eq!(fmt_at_scale(0.00275, 80.43, 3), "< 0.1");
        assert_eq!(fmt_at_scale(1.26, 80.43, 3), "1.3");
        assert_eq!(fmt_at_scale(0.0, 80.43, 3), "0");
        // Train-loss barriers of 2.13 and 0.0123.
        assert_eq!(fmt_at_scale(0.0123, 2.13, 3), "0.01");
        assert_eq!(fmt_at_scale(2.13, 2.13, 3), "2.13");
        // On their own, small numbers keep their digits.
        assert_eq!(fmt_at_scale(0.00275, 0.00275, 3), "0.00275");
        assert_eq!(fmt_at_scale(312.0, 312.0, 3), "312");
        assert_eq!(fmt_at_scale(0.4, 312.0, 3), "< 1");
    }

    #[test]
    fn log_levels_endpoints_spacing_monotone() {
        let l = log_levels(0.01, 10.0, 7);
        assert_eq!(l.len(), 7);
        assert_eq!(l[0], 0.01);
        assert_eq!(l[6], 10.0);
        let r = l[1] / l[0];
        for w in l.windows(2) {
            assert!(w[1] > w[0]);
            assert!(
                (w[1] / w[0] - r).abs() < 1e-9,
                "ratio {} vs {r}",
                w[1] / w[0]
            );
        }
        assert!((r - 10f64.sqrt()).abs() < 1e-9);
        assert_eq!(log_levels(2.0, 5.0, 1), vec![2.0]);
        assert!(log_levels(2.0, 5.0, 0).is_empty());
        let d = log_levels(3.0, 3.0, 3);
        assert_eq!(d, vec![3.0, 30f64.sqrt() * 3f64.sqrt(), 30.0]);
    }

    #[test]
    fn formatting_and_ticks() {
        assert_eq!(fmt_sig(0.012345, 3), "0.0123");
        assert_eq!(fmt_sig(123.456, 4), "123.5");
        assert_eq!(fmt_sig(9.9996, 4), "10");
        assert_eq!(fmt_sig(90.0, 4), "90");
        assert_eq!(fmt_sig(-0.5, 2), "-0.5");
        assert_eq!(fmt_sig(1.5e-6, 2), "1.5e-6");
        let t = linear_ticks(0.0, 1.0, 5);
        assert_eq!(t.len(), 6);
        assert!(t
            .iter()
            .zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
            .all(|(a, b)| (a - b).abs() < 1e-12));
        assert_eq!(log_ticks(0.01, 10.0, 8), vec![0.01, 0.1, 1.0, 10.0]);
        let narrow = log_ticks(0.2, 1.5, 8);
        assert!(narrow.len() >= 3 && narrow.iter().all(|v| (0.2..=1.5).contains(v)));
        assert!(log_ticks(1e-8, 1e8, 6).len() <= 6);
    }
}
