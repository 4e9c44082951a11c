//! Integration tests of the `modeconn` binary and library on real data.
mod align;
mod checkpoint_files;
mod common;
mod cpu;
mod curve;
mod endpoints;
mod eval;
mod example;
mod fge;
mod guarantees;
mod hostile;
mod layers;
mod reliability;
mod run;
mod shard;
mod slurm;
mod torchscript;
