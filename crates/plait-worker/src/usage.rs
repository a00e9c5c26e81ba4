//! This process's resource use, read from `/proc/self` (Linux).

/// Peak memory and CPU time of the current process.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProcessUsage {
    /// The highest resident memory so far (`VmHWM`), in bytes.
    pub peak_rss_bytes: u64,
    /// User and system CPU time so far, in seconds.
    pub cpu_seconds: f64,
}

/// Reads the current process's peak RSS (`VmHWM`) and user+system CPU time. Zeroes where
/// `/proc` is unavailable.
pub fn process_usage() -> ProcessUsage {
    let peak_rss_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0);
    // Fields 14 and 15 of /proc/self/stat (after the parenthesised name) are utime and stime
    // in clock ticks; Linux reports them at 100 Hz (USER_HZ).
    let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let after_name = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0);
    ProcessUsage {
        peak_rss_bytes,
        cpu_seconds,
    }
}

/// Resets this process's peak RSS to its current RSS (Linux: `/proc/self/clear_refs`, value 5),
/// so that the next reading is the peak of what follows. Returns false where unsupported.
///
/// First it asks jemalloc (OpenVM's global allocator) to return the pages it keeps from freed
/// memory, which would otherwise stay resident and count towards the next task's peak.
pub fn reset_peak_rss() -> bool {
    // "arena.<MALLCTL_ARENAS_ALL>.purge": every arena, no arguments.
    let name = c"arena.4096.purge";
    // SAFETY: a documented mallctl that takes and returns nothing; a jemalloc that is not the
    // process's allocator purges only its own (empty) arenas.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_nonzero_usage_of_this_process() {
        // Burn 200 ms of CPU (the kernel counts CPU time in 10 ms ticks).
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(200) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let usage = super::process_usage();
        assert!(usage.peak_rss_bytes > 1 << 20, "{usage:?}");
        assert!(usage.cpu_seconds > 0.0, "{usage:?}");
    }

    #[test]
    fn peak_rss_reset_forgets_an_earlier_peak() {
        let big = vec![1u8; 256 << 20];
        std::hint::black_box(&big);
        let with_big = super::process_usage().peak_rss_bytes;
        drop(big);
        assert!(super::reset_peak_rss());
        let after_reset = super::process_usage().peak_rss_bytes;
        assert!(
            after_reset + (200 << 20) < with_big,
            "peak {with_big} before the reset, {after_reset} after"
        );
    }
}
