//! The settings of the evaluation steps: the sweep, alignment, ensembles
//! and landscapes.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::memory::ensure_fits;

/// Memory per evaluated point (a sweep row, a grid cell or an ensemble
/// member): its metrics, its coordinates and its line of JSON.
const POINT_BYTES: f64 = 512.0;

fn points_fit(flag: &str, n: f64, fix: &str) -> Result<()> {
    ensure_fits(&format!("{flag} ({n:.0} points)"), n * POINT_BYTES, fix)
}

/// Settings of the sweep along t (`eval`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SweepConfig {
    pub points: usize,
}

impl SweepConfig {
    pub fn validate(&self) -> Result<()> {
        if self.points < 2 {
            bail!("--points must be at least 2 (t = 0 and t = 1; the reference implementation uses 61), got {}", self.points);
        }
        points_fit(
            &format!("--points {}", self.points),
            2.0 * self.points as f64,
            "Use fewer --points (the reference implementation uses 61).",
        )
    }
}

/// Settings of `align`: weight matching, then the lines it compares.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlignConfig {
    /// Seeds the order in which each sweep visits the permutation groups.
    pub seed: u64,
    /// At most this many sweeps of weight matching.
    pub max_sweeps: usize,
    /// Points in t on each line (0: align only, evaluate nothing).
    pub points: usize,
    /// Training images whose statistics REPAIR matches.
    pub repair_images: i64,
}

impl AlignConfig {
    pub fn validate(&self) -> Result<()> {
        if self.max_sweeps < 1 {
            bail!("--max-sweeps must be at least 1 (git-re-basin uses 100), got 0");
        }
        if self.points == 1 {
            bail!("--points must be 0 (align only) or at least 2 (t = 0 and t = 1), got 1");
        }
        if self.repair_images < 2 {
            bail!(
                "--repair-images must be at least 2 (REPAIR measures channel statistics; 5000 is typical), got {}",
                self.repair_images
            );
        }
        points_fit(
            &format!("--points {}", self.points),
            4.0 * self.points as f64,
            "Use fewer --points.",
        )
    }
}

impl Default for AlignConfig {
    fn default() -> Self {
        AlignConfig {
            seed: 0,
            max_sweeps: 100,
            points: 11,
            repair_images: 5000,
        }
    }
}

/// Settings of a curve ensemble (`eval --ensemble K`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EnsembleConfig {
    pub k: usize,
    pub sampling: crate::vocab::Sampling,
    pub average: crate::vocab::Average,
    pub seed: u64,
}

impl EnsembleConfig {
    pub fn validate(&self) -> Result<()> {
        if self.k < 1 {
            bail!("--ensemble must be at least 1 (the number of models sampled on the curve, e.g. 30), got {}", self.k);
        }
        points_fit(
            &format!("--ensemble {}", self.k),
            self.k as f64,
            "Use a smaller --ensemble (the paper's ensembles have 2 to 30 members).",
        )
    }
}

/// Settings of the landscape plane.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LandscapeConfig {
    pub grid: usize,
    pub margin: f64,
    pub coords: crate::vocab::Coords,
}

impl LandscapeConfig {
    pub fn validate(&self) -> Result<()> {
        if self.grid < 2 {
            bail!("--grid must be at least 2, got {}", self.grid);
        }
        if !(self.margin >= 0.0 && self.margin.is_finite()) {
            bail!("--margin must be >= 0, got {}", self.margin);
        }
        points_fit(
            &format!("--grid {}", self.grid),
            (self.grid as f64).powi(2),
            "Use a smaller --grid (21 is the default; the paper's figures use 21 to 41).",
        )
    }
}

/// Settings of a random-direction landscape (`landscape --plane random`
/// or `random-1d`): see `landscape::random`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RandomPlaneConfig {
    /// The network at the centre: a model file or a folder holding one.
    pub around: PathBuf,
    /// 2: a plane of two directions; 1: a line along one.
    pub dims: usize,
    /// Grid points per axis.
    pub grid: usize,
    /// The grid covers [-span, span] along each direction.
    pub span: f64,
    /// Seed of the random directions.
    pub seed: u64,
    /// Give biases and BatchNorm weights a direction too (off: loss-landscape's `--ignore biasbn`).
    pub include_biasbn: bool,
    /// BatchNorm running statistics at each point.
    pub bn: crate::vocab::MemberBn,
}

impl RandomPlaneConfig {
    /// loss-landscape's defaults (a 2-D plane over [-1, 1], biases and BN
    /// fixed) on a 21-point grid, seed 0, BN statistics recomputed.
    pub fn defaults(around: PathBuf) -> RandomPlaneConfig {
        RandomPlaneConfig {
            around,
            dims: 2,
            grid: 21,
            span: 1.0,
            seed: 0,
            include_biasbn: false,
            bn: crate::vocab::MemberBn::Recompute,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.grid < 2 {
            bail!("--grid must be at least 2, got {}", self.grid);
        }
        if !(self.span > 0.0 && self.span.is_finite()) {
            bail!("--span must be a positive number, got {}", self.span);
        }
        if !(1..=2).contains(&self.dims) {
            bail!(
                "a random landscape has 1 or 2 directions, got {}",
                self.dims
            );
        }
        points_fit(
            &format!("--grid {}", self.grid),
            (self.grid as f64).powi(self.dims as i32),
            "Use a smaller --grid (21 is the default).",
        )
    }
}
