//! Where and how tensors are computed: device, threads, precision, layout.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::cpu::CpuFeatures;
use crate::model::Precision;

crate::choice! {
    pub enum DeviceChoice {
        /// CUDA when available, else CPU.
        Auto = "auto",
        Cpu = "cpu",
        Cuda = "cuda",
    }
}

crate::choice! {
    pub enum MemoryFormat {
        /// Channels-last on the CPU, where it measured faster for every input tried (CIFAR-10:
        /// 1.4-1.6x per training step; Fashion-MNIST: 1.5x), except the strided 1x1
        /// convolutions that oneDNN mishandles (see `model::layers`); NCHW on GPUs.
        Auto = "auto",
        /// NHWC strides for activations and convolution weights (faster with oneDNN on CPU).
        ChannelsLast = "channels-last",
        /// Plain NCHW-contiguous tensors, as PyTorch uses by default.
        Contiguous = "contiguous",
    }
}

crate::choice! {
    /// The requested precision; `auto` resolves per machine (see [`resolve_precision`]).
    pub enum PrecisionChoice {
        /// bf16 where the hardware computes it natively (a CPU with AVX512_BF16 or AMX-BF16,
        /// a GPU of compute capability 8.0 or newer), fp32 elsewhere.
        Auto = "auto",
        /// Everything in float32.
        Fp32 = "fp32",
        /// Convolutions and linear layers in bfloat16; parameters, BatchNorm and losses stay fp32.
        Bf16 = "bf16",
    }
}

/// What bf16 costs where it is emulated, as measured (quoted in the warning).
pub const EMULATED_BF16_COST: &str = "a seed-convnet epoch on CIFAR-10 took 177.7 s in bf16 against 12.5 s in fp32 (14x) on an AMD EPYC Zen 3 with AVX2 only";

/// Resolves a precision request for `device`; the second value is a warning
/// for the user when the request is a poor choice on this hardware.
///
/// `cuda_bf16` says whether the GPU computes bf16 natively; it is only asked
/// on CUDA. Everything is injected, so this runs the same on any machine.
pub fn resolve_precision(
    choice: PrecisionChoice,
    device: Device,
    cpu: &CpuFeatures,
    cuda_bf16: impl FnOnce() -> bool,
) -> (Precision, Option<String>) {
    if choice == PrecisionChoice::Fp32 {
        return (Precision::Fp32, None); // nothing to ask the hardware
    }
    let native = match device {
        Device::Cpu => cpu.native_bf16(),
        _ => cuda_bf16(),
    };
    match choice {
        PrecisionChoice::Fp32 => (Precision::Fp32, None),
        PrecisionChoice::Auto if native => (Precision::Bf16, None),
        PrecisionChoice::Auto => (Precision::Fp32, None),
        PrecisionChoice::Bf16 if native => (Precision::Bf16, None),
        PrecisionChoice::Bf16 => {
            let what = match device {
                Device::Cpu => format!(
                    "this CPU has no native bf16 ({}); libtorch emulates bf16 on it, and {EMULATED_BF16_COST}",
                    cpu.describe()
                ),
                _ => "this GPU has no native bf16 (compute capability below 8.0), so bf16 is emulated and slow".to_string(),
            };
            (
                Precision::Bf16,
                Some(format!(
                    "warning: --precision bf16: {what}. Use --precision fp32, or --precision auto to pick bf16 only where it is native."
                )),
            )
        }
    }
}

/// Whether CUDA device 0 computes bf16 natively (compute capability >= 8.0),
/// asked of `nvidia-smi`; false when it cannot tell.
fn cuda_native_bf16() -> bool {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=compute_cap",
            "--format=csv,noheader",
            "-i",
            "0",
        ])
        .output();
    let Ok(out) = out else { return false };
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|major| major >= 8)
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
    /// The requested precision (`precision` is what it resolved to).
    pub precision_choice: PrecisionChoice,
    /// The CPU as detected.
    pub cpu: CpuFeatures,
    /// Warnings for the user about these settings on this machine.
    pub warnings: Vec<String>,
}

/// The machine and the choices made on it, as recorded in config.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuntimeRecord {
    pub device: String,
    pub precision_requested: PrecisionChoice,
    pub precision: Precision,
    pub memory_format: MemoryFormat,
    pub channels_last: bool,
    pub threads: i32,
    pub cpu: CpuFeatures,
    pub cpu_native_bf16: bool,
}

impl Runtime {
    pub fn new(
        device: DeviceChoice,
        threads: Option<usize>,
        precision: PrecisionChoice,
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
        let cpu = CpuFeatures::detect();
        let (resolved, warning) = resolve_precision(precision, device, &cpu, cuda_native_bf16);
        // `auto` and `channels-last` agree on the CPU; on GPUs NCHW is kept
        // (cuDNN's NHWC kernels are not verified here).
        let channels_last = device == Device::Cpu && format != MemoryFormat::Contiguous;
        Ok(Runtime {
            device,
            precision: resolved,
            channels_last,
            eval_batch,
            format,
            stack,
            precision_choice: precision,
            cpu,
            warnings: warning.into_iter().collect(),
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
            precision_choice: PrecisionChoice::Fp32,
            cpu: CpuFeatures::default(),
            warnings: Vec::new(),
        }
    }

    /// A warning when an explicit `--memory-format channels-last` meets
    /// convolutions that oneDNN mishandles in that layout (`auto` handles
    /// them silently; both run them safely, see `model::layers`).
    pub fn layout_warning(&self, model: &crate::model::Model) -> Option<String> {
        if self.format != MemoryFormat::ChannelsLast || !self.channels_last {
            return None;
        }
        let convs = model.onednn_guarded_convs();
        (!convs.is_empty()).then(|| {
            format!(
                "warning: --memory-format channels-last: oneDNN's channels-last kernel for strided 1x1 convolutions with fewer than {} input channels hangs or crashes in training (oneDNN issue #6035); modeconn runs these as a strided slice and a 1x1 convolution instead: {}. --memory-format auto does the same without this warning.",
                crate::model::ONEDNN_IC_BLOCK_MAX,
                convs.join(", ")
            )
        })
    }

    /// What config.json records about the machine and these settings.
    pub fn record(&self) -> RuntimeRecord {
        RuntimeRecord {
            device: match self.device {
                Device::Cuda(i) => format!("cuda:{i}"),
                _ => "cpu".to_string(),
            },
            precision_requested: self.precision_choice,
            precision: self.precision,
            memory_format: self.format,
            channels_last: self.channels_last,
            threads: tch::get_num_threads(),
            cpu_native_bf16: self.cpu.native_bf16(),
            cpu: self.cpu.clone(),
        }
    }
}

/// Prints a warning on stderr unless this process already printed it.
pub fn warn_once(w: &str) {
    static SHOWN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut shown = SHOWN.lock().unwrap_or_else(|e| e.into_inner());
    if !shown.iter().any(|s| s == w) {
        eprintln!("{w}");
        shown.push(w.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(flags: &str) -> CpuFeatures {
        CpuFeatures::from_flags("test", flags, None)
    }
    const AVX2_ONLY: &str = "sse4_2 avx fma avx2";
    const NATIVE: &str = "avx2 avx512f avx512_bf16";

    #[test]
    fn auto_picks_bf16_only_where_it_is_native() {
        let never = || panic!("the GPU is not asked about on the CPU");
        // fp32 asks nothing, not even on CUDA.
        let fp32 = resolve_precision(PrecisionChoice::Fp32, Device::Cuda(0), &cpu(NATIVE), never);
        assert_eq!(fp32, (Precision::Fp32, None));
        let r = |c, f| resolve_precision(c, Device::Cpu, &cpu(f), never);
        assert_eq!(r(PrecisionChoice::Auto, AVX2_ONLY), (Precision::Fp32, None));
        assert_eq!(r(PrecisionChoice::Auto, NATIVE), (Precision::Bf16, None));
        assert_eq!(r(PrecisionChoice::Fp32, NATIVE), (Precision::Fp32, None));
        assert_eq!(r(PrecisionChoice::Bf16, NATIVE), (Precision::Bf16, None));
        // On CUDA the GPU decides, whatever the CPU has.
        let gpu =
            |c, native: bool| resolve_precision(c, Device::Cuda(0), &cpu(AVX2_ONLY), || native).0;
        assert_eq!(gpu(PrecisionChoice::Auto, true), Precision::Bf16);
        assert_eq!(gpu(PrecisionChoice::Auto, false), Precision::Fp32);
    }

    #[test]
    fn bf16_without_native_support_warns_with_what_was_found_and_the_cost() {
        let (p, w) =
            resolve_precision(PrecisionChoice::Bf16, Device::Cpu, &cpu(AVX2_ONLY), || true);
        assert_eq!(p, Precision::Bf16, "an explicit request is honoured");
        let w = w.expect("a warning");
        assert!(
            w.contains("AVX2 yes, AVX-512 no, AVX512_BF16 no, AMX-BF16 no"),
            "{w}"
        );
        assert!(w.contains("14x") && w.contains("--precision auto"), "{w}");
        let (_, w) =
            resolve_precision(PrecisionChoice::Bf16, Device::Cuda(0), &cpu(NATIVE), || {
                false
            });
        assert!(w.expect("a GPU warning").contains("compute capability"));
    }

    #[test]
    fn an_isa_cap_makes_auto_choose_fp32() {
        let capped = CpuFeatures::from_flags("", NATIVE, Some("AVX2"));
        let (p, _) = resolve_precision(PrecisionChoice::Auto, Device::Cpu, &capped, || true);
        assert_eq!(p, Precision::Fp32);
    }
}
