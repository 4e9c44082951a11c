//! Plot axes: [`Axis`] fits data limits (linear or log10) and [`Ticked`] is the plotters coordinate
//! it becomes, with explicit "nice" tick positions.

use crate::report::levels::{fmt_sig, linear_ticks, log_ticks};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

/// One axis: data-space limits, linear or log10 (values are plotted as `log10(v)` on a log axis).
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    pub log: bool,
    pub lo: f64,
    pub hi: f64,
}

impl Axis {
    pub fn linear(lo: f64, hi: f64) -> Axis {
        Axis { log: false, lo, hi }
    }

    /// Clips a fitted axis to 0–100: the padding leaves room for a legend,
    /// but a percentage axis neither starts below 0 nor ends above 100.
    pub fn within_percent(mut self) -> Axis {
        self.lo = self.lo.max(0.0);
        self.hi = self.hi.min(100.0);
        self
    }

    /// Fits `values` with relative padding below/above; goes log when `allow_log`, all values are
    /// positive and max/min > 30.
    pub fn fit(
        values: impl IntoIterator<Item = f64>,
        allow_log: bool,
        pad_lo: f64,
        pad_hi: f64,
    ) -> Axis {
        let v: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if v.is_empty() {
            return Axis::linear(0.0, 1.0);
        }
        let (min, max) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        if allow_log && min > 0.0 && max / min > 30.0 {
            let (a, b) = (min.log10(), max.log10());
            let span = b - a;
            return Axis {
                log: true,
                lo: 10f64.powf(a - span * pad_lo),
                hi: 10f64.powf(b + span * pad_hi),
            };
        }
        let span = if max > min {
            max - min
        } else if max != 0.0 {
            max.abs() * 0.1
        } else {
            1.0
        };
        Axis::linear(min - span * pad_lo, max + span * pad_hi)
    }

    /// Plot coordinate of a data value.
    pub fn t(&self, v: f64) -> f64 {
        if self.log {
            v.max(self.lo * 1e-3).log10()
        } else {
            v
        }
    }

    pub fn coord(&self) -> Ticked {
        let ticks: Vec<f64> = if self.log {
            log_ticks(self.lo, self.hi, 8)
                .into_iter()
                .map(f64::log10)
                .collect()
        } else {
            linear_ticks(self.lo, self.hi, 6)
        };
        Ticked {
            lo: self.t(self.lo),
            hi: self.t(self.hi),
            ticks,
        }
    }

    pub fn label(&self, tv: f64) -> String {
        fmt_sig(if self.log { 10f64.powf(tv) } else { tv }, 3)
    }
}

/// A linear f64 coordinate (in plot space) with explicit tick positions.
pub(crate) struct Ticked {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = if self.hi != self.lo {
            (v - self.lo) / (self.hi - self.lo)
        } else {
            0.5
        };
        let px = limit.0 as f64 + f * (limit.1 - limit.0) as f64;
        px.clamp(-1e6, 1e6).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

#[cfg(test)]
mod tests {
    use super::Axis;

    #[test]
    fn percentage_axes_keep_legend_padding_inside_0_to_100() {
        // A line at 90% test error with a 32% top pad for the legend would end at ~116%.
        let fitted = Axis::fit([9.5, 90.0, 11.0], false, 0.06, 0.32);
        assert!(fitted.hi > 100.0 && fitted.lo < 9.5);
        let y = fitted.clone().within_percent();
        assert_eq!(y.hi, 100.0);
        assert_eq!(y.lo, fitted.lo.max(0.0));
        // Padding below 0 is cut, padding that stays inside is kept.
        let y = Axis::fit([2.0, 50.0], false, 0.35, 0.12).within_percent();
        assert_eq!(y.lo, 0.0);
        assert!(y.hi > 50.0 && y.hi < 100.0);
    }
}
