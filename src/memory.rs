//! Sizes bounded by memory: a flag whose work would not fit in this
//! machine's memory is refused before anything is allocated, with the
//! estimate and what the machine has, never left to an abort or an OOM kill.

use anyhow::{bail, Result};

/// Bytes of memory available to this process now: `MemAvailable` of
/// /proc/meminfo, capped by a cgroup limit when one is set; `None` where
/// neither can be read (then nothing is refused on size).
pub fn available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    let mem = kib("MemAvailable:").or_else(|| kib("MemTotal:"))? * 1024;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    Some(cgroup.map_or(mem, |c| c.min(mem)))
}

/// "1.5 GiB", "73.7 GB"-style size for messages.
pub fn human(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// Refuses `what` (a flag and its value, e.g. "--grid 100000") when its
/// estimated `bytes` exceed the memory available; `fix` says what to do.
pub fn ensure_fits(what: &str, bytes: f64, fix: &str) -> Result<()> {
    ensure_fits_in(what, bytes, fix, available())
}

fn ensure_fits_in(what: &str, bytes: f64, fix: &str, avail: Option<u64>) -> Result<()> {
    match avail {
        Some(a) if bytes.is_nan() || bytes > a as f64 => bail!(
            "{what} needs about {} of memory, and this machine has {} available. {fix}",
            human(bytes),
            human(a as f64)
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_memory_are_refused_with_both_numbers() {
        let err = ensure_fits_in(
            "--grid 100000",
            3e12,
            "Use a smaller --grid.",
            Some(8 << 30),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--grid 100000") && err.contains("2.7 TiB") && err.contains("8.0 GiB"),
            "{err}"
        );
        assert!(ensure_fits_in("--grid 21", 1e5, "", Some(8 << 30)).is_ok());
        assert!(ensure_fits_in("x", f64::INFINITY, "", Some(1)).is_err());
        assert!(ensure_fits_in("x", 1e30, "", None).is_ok());
        assert!(available().is_some_and(|a| a > 1 << 20));
    }
}
