//! modeconn: mode connectivity of neural networks (Garipov, Izmailov,
//! Podoprikhin, Vetrov, Wilson, NeurIPS 2018, arXiv 1802.10026).
//!
//! The design in one sentence: **one forward function and many sources of
//! parameters**. [`model::Model::forward`] computes logits from a
//! [`model::Params`]; an endpoint being trained, a curve point φ(t)
//! ([`curve::Curve::weights_at`]), a landscape-plane point
//! ([`landscape::Plane::point`]), an ensemble member and an imported PyTorch
//! state dict are all just parameter sets handed to it.

pub mod align;
pub mod checkpoint;
#[macro_use]
pub mod choice;
pub mod config;
pub mod cpu;
pub mod curve;
pub mod data;
pub mod eval;
pub mod experiment;
pub mod files;
#[cfg(test)]
mod fuzz_tests;
pub mod landscape;
pub mod loader;
pub mod lock;
pub mod memory;
pub mod merge;
pub mod model;
pub mod observe;
pub mod optim;
pub mod plan;
pub mod report;
pub mod rng;
pub mod runtime;
pub mod schema;
pub mod shard;
pub mod steps;
pub mod train;
pub mod vocab;
