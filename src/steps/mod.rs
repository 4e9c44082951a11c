//! The measuring steps over a fitted experiment: they open its files, run
//! the computations of [`crate::eval`] and [`crate::landscape`], and write
//! the results (whole, or a shard's part of them, resumable).
//!
//! - [`session`]: a curve with its data, ready to evaluate; the landscape
//!   planes; a point taken out for export;
//! - [`sweep`]: the sweep along the curve and the line (`eval/along.json`);
//! - [`ensemble`]: the curve ensemble (`eval/ensemble.json`);
//! - [`grid`]: a landscape grid kept in its file or its shard's part;
//! - [`members`]: ensembles of saved networks (FGE members, endpoints).

pub mod ensemble;
pub mod grid;
pub mod members;
pub mod session;
pub mod sweep;
