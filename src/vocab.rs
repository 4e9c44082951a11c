//! The words every layer shares: how ensemble members are placed on the
//! curve and averaged, which BatchNorm statistics a member keeps, how a
//! plane's axes are drawn, and a shard of a grid of work. Plain data, so
//! the settings, the files and the computations that use them all sit
//! above this module.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

crate::choice! {
    /// Where the members of a curve ensemble sit on the curve.
    pub enum Sampling {
        /// K equally spaced t in [0, 1].
        Grid = "grid",
        /// K uniform random t (seeded).
        Random = "random",
    }
}

crate::choice! {
    /// How the members' predictions are combined.
    pub enum Average {
        /// Mean of the members' softmax probabilities.
        Probs = "probs",
        /// Softmax of the members' mean logits (what the seed experiment does).
        Logits = "logits",
    }
}

crate::choice! {
    /// BatchNorm statistics of ensemble members.
    pub enum MemberBn {
        /// The running statistics from training (what the reference FGE uses).
        Keep = "keep",
        /// Re-estimated per member on the training data.
        Recompute = "recompute",
    }
}

crate::choice! {
    /// How a plane's two axes are drawn from its three points.
    pub enum Coords {
        Orthonormal = "orthonormal",
        Seed = "seed",
    }
}

/// One shard of `count`: it does the units `u` with `u mod count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// All the work in one process (a run without `--shard`).
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Parses `i/n` (as `--shard 3/8` or Slurm's `$SLURM_ARRAY_TASK_ID/8`).
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = || {
            anyhow::anyhow!(
                "--shard expects i/n with 0 <= i < n (shard i of n, counted from 0, e.g. 0/4), got '{s}'"
            )
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let shard = Shard {
            index: i.trim().parse().map_err(|_| bad())?,
            count: n.trim().parse().map_err(|_| bad())?,
        };
        shard.validate().map_err(|_| bad())?;
        Ok(shard)
    }

    pub fn validate(&self) -> Result<()> {
        if self.count == 0 || self.index >= self.count {
            bail!(
                "--shard {}/{}: the index must be below the count (shards are 0..n-1)",
                self.index,
                self.count
            );
        }
        Ok(())
    }

    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// Whether unit `u` is this shard's.
    pub fn owns(&self, u: usize) -> bool {
        u % self.count == self.index
    }

    /// This shard's units among `0..total`, in order.
    pub fn units(&self, total: usize) -> Vec<usize> {
        (self.index..total).step_by(self.count).collect()
    }

    /// `i-of-n`, the stem of the part and lock files.
    pub fn tag(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}
