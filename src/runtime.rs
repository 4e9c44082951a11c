//! Where and how tensors are computed: device, threads, precision, layout.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::model::Precision;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when available, else CPU.
    Auto,
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryFormat {
    /// Channels-last on the CPU, where it measured faster for every input tried (CIFAR-10:
    /// 1.4-1.6x per training step; Fashion-MNIST: 1.5x); NCHW on GPUs.
    Auto,
    /// NHWC strides for activations and convolution weights (faster with oneDNN on CPU).
    ChannelsLast,
    /// Plain NCHW-contiguous tensors, as PyTorch uses by default.
    Contiguous,
}

/// Resolved runtime settings, shared by training and evaluation.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub device: Device,
    pub precision: Precision,
    pub channels_last: bool,
    /// Batch size for evaluation passes (no gradients, so it can be large).
    pub eval_batch: i64,
    /// The requested layout (`channels_last` is what it resolved to).
    pub format: MemoryFormat,
    /// How many models one evaluation pass runs at once, stacked into grouped
    /// convolutions and batched matmuls (1: one model at a time).
    pub stack: i64,
}

impl Runtime {
    pub fn new(
        device: DeviceChoice,
        threads: Option<usize>,
        precision: Precision,
        format: MemoryFormat,
        eval_batch: i64,
        stack: i64,
    ) -> Result<Runtime> {
        let device = match device {
            DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Auto => Device::cuda_if_available(),
            DeviceChoice::Cuda => {
                if !tch::Cuda::is_available() {
                    bail!("--device cuda: no CUDA device is visible to libtorch. This build links the CPU-only libtorch unless it was built with `make gpu` (see the README's GPU section); check `nvidia-smi` too.");
                }
                Device::Cuda(0)
            }
        };
        if let Some(t) = threads {
            if t == 0 {
                bail!("--threads must be at least 1");
            }
            tch::set_num_threads(t as i32);
        }
        if eval_batch < 1 || stack < 1 {
            bail!("--eval-batch-size and --stack-models must be at least 1");
        }
        // `auto` and `channels-last` agree on the CPU; on GPUs NCHW is kept
        // (cuDNN's NHWC kernels are not verified here).
        let channels_last = device == Device::Cpu && format != MemoryFormat::Contiguous;
        Ok(Runtime {
            device,
            precision,
            channels_last,
            eval_batch,
            format,
            stack,
        })
    }

    /// CPU, fp32, plain layout: for tests.
    pub fn cpu() -> Runtime {
        Runtime {
            device: Device::Cpu,
            precision: Precision::Fp32,
            channels_last: false,
            eval_batch: 500,
            format: MemoryFormat::Contiguous,
            stack: 1,
        }
    }
}
