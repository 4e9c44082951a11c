//! What the CPU can do natively, as far as the choice of precision cares.
//!
//! libtorch's CPU kernels (oneDNN) compute bf16 with native instructions only
//! where the CPU has AVX512_BF16 or AMX-BF16; elsewhere bf16 is emulated
//! with conversions around fp32 arithmetic. Measured on an AMD EPYC Zen 3
//! (AVX2 and FMA, no AVX-512): one seed-convnet epoch on CIFAR-10 took 12.5 s
//! in fp32 and 177.7 s in bf16 (PyTorch's own bf16 autocast: 173 s). So bf16
//! is only worth choosing where it is native.
//!
//! oneDNN also honours `ONEDNN_MAX_CPU_ISA` (older name `DNNL_MAX_CPU_ISA`):
//! a cap below `AVX512_CORE_BF16` makes it ignore native bf16 even where the
//! CPU has it, so the cap counts here too.
//!
//! Detection reads `/proc/cpuinfo`; `MODECONN_CPU_FLAGS` (a space-separated
//! flag list in the kernel's spelling) replaces it, so tests can pose as any
//! CPU.

use serde::{Deserialize, Serialize};

/// The CPU features that decide precision (and are recorded with a run).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuFeatures {
    /// The kernel's model name, e.g. "AMD EPYC 7B13" (empty where unknown).
    pub model: String,
    pub avx2: bool,
    pub avx512f: bool,
    pub avx512_bf16: bool,
    pub amx_bf16: bool,
    /// `ONEDNN_MAX_CPU_ISA` / `DNNL_MAX_CPU_ISA`, when set.
    pub onednn_isa_cap: Option<String>,
}

impl CpuFeatures {
    /// Reads this machine's CPU (or `MODECONN_CPU_FLAGS`, for tests).
    pub fn detect() -> CpuFeatures {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = field(&cpuinfo, "model name").unwrap_or_default();
        let flags = match std::env::var("MODECONN_CPU_FLAGS") {
            Ok(f) => f,
            Err(_) => field(&cpuinfo, "flags").unwrap_or_else(fallback_flags),
        };
        let cap = std::env::var("ONEDNN_MAX_CPU_ISA")
            .or_else(|_| std::env::var("DNNL_MAX_CPU_ISA"))
            .ok()
            .filter(|s| !s.trim().is_empty());
        CpuFeatures::from_flags(&model, &flags, cap.as_deref())
    }

    /// Features from a `/proc/cpuinfo` flags line and an optional oneDNN ISA cap.
    pub fn from_flags(model: &str, flags: &str, isa_cap: Option<&str>) -> CpuFeatures {
        let has = |f: &str| flags.split_whitespace().any(|x| x == f);
        CpuFeatures {
            model: model.trim().to_string(),
            avx2: has("avx2"),
            avx512f: has("avx512f"),
            avx512_bf16: has("avx512_bf16"),
            amx_bf16: has("amx_bf16"),
            onednn_isa_cap: isa_cap.map(|s| s.trim().to_ascii_uppercase()),
        }
    }

    /// True when oneDNN computes bf16 convolutions and matmuls natively here.
    pub fn native_bf16(&self) -> bool {
        (self.avx512_bf16 || self.amx_bf16) && self.cap_allows_bf16()
    }

    /// Whether the oneDNN ISA cap (if any) still admits native bf16.
    fn cap_allows_bf16(&self) -> bool {
        let Some(cap) = &self.onednn_isa_cap else {
            return true;
        };
        // oneDNN's names at or above AVX512_CORE_BF16 (ALL = no cap).
        cap == "ALL"
            || cap.starts_with("AVX512_CORE_BF16")
            || cap.starts_with("AVX512_CORE_FP16")
            || cap.starts_with("AVX512_CORE_AMX")
            || cap.starts_with("AVX10")
    }

    /// One line for logs and warnings: what was found and what was not.
    pub fn describe(&self) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let mut s = format!(
            "{}AVX2 {}, AVX-512 {}, AVX512_BF16 {}, AMX-BF16 {}",
            if self.model.is_empty() {
                String::new()
            } else {
                format!("{}: ", self.model)
            },
            yes_no(self.avx2),
            yes_no(self.avx512f),
            yes_no(self.avx512_bf16),
            yes_no(self.amx_bf16),
        );
        if let Some(cap) = &self.onednn_isa_cap {
            s.push_str(&format!(", ONEDNN_MAX_CPU_ISA={cap}"));
        }
        s
    }
}

/// The value of the first `key : value` line of `/proc/cpuinfo`.
fn field(cpuinfo: &str, key: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// Without `/proc/cpuinfo` (not Linux): ask the compiler's runtime detection.
fn fallback_flags() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut f = Vec::new();
        if std::arch::is_x86_feature_detected!("avx2") {
            f.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            f.push("avx512f");
        }
        f.join(" ")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZEN3: &str = "fpu sse sse2 avx f16c fma bmi2 avx2 sha_ni";
    const ZEN4: &str = "avx2 avx512f avx512dq avx512_bf16 avx512_vnni";
    const SPR: &str = "avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8";

    #[test]
    fn native_bf16_needs_avx512_bf16_or_amx() {
        assert!(!CpuFeatures::from_flags("", ZEN3, None).native_bf16());
        assert!(CpuFeatures::from_flags("", ZEN4, None).native_bf16());
        assert!(CpuFeatures::from_flags("", SPR, None).native_bf16());
        // Substrings of other flags do not count.
        assert!(!CpuFeatures::from_flags("", "xavx512_bf16 amx_bf16x", None).native_bf16());
    }

    #[test]
    fn an_onednn_isa_cap_below_bf16_turns_native_bf16_off() {
        let capped = |cap| CpuFeatures::from_flags("", SPR, Some(cap)).native_bf16();
        assert!(!capped("AVX2"));
        assert!(!capped("avx512_core"));
        assert!(!capped("AVX512_CORE_VNNI"));
        assert!(capped("AVX512_CORE_BF16"));
        assert!(capped("AVX512_CORE_AMX"));
        assert!(capped("ALL"));
    }

    #[test]
    fn describe_names_what_is_missing() {
        let d = CpuFeatures::from_flags("AMD EPYC 7B13", ZEN3, None).describe();
        assert_eq!(
            d,
            "AMD EPYC 7B13: AVX2 yes, AVX-512 no, AVX512_BF16 no, AMX-BF16 no"
        );
        let d = CpuFeatures::from_flags("", SPR, Some("avx2")).describe();
        assert!(d.ends_with("ONEDNN_MAX_CPU_ISA=AVX2"), "{d}");
    }

    #[test]
    fn reads_the_first_field_of_cpuinfo() {
        let info = "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: a b avx2\n\nprocessor\t: 1\nflags\t: c\n";
        assert_eq!(field(info, "model name").as_deref(), Some("Test CPU"));
        assert_eq!(field(info, "flags").as_deref(), Some("a b avx2"));
        assert_eq!(field(info, "nothing"), None);
    }
}
