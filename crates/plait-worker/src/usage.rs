//! This process's resource use, read from `/proc/self` (Linux).

/// Memory, CPU time and page faults of the current process.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProcessUsage {
    /// The highest resident memory since the process started or the peak was last reset
    /// (`VmHWM`), in bytes.
    pub peak_rss_bytes: u64,
    /// The resident memory now (`VmRSS`), in bytes.
    pub rss_bytes: u64,
    /// User and system CPU time so far, in seconds.
    pub cpu_seconds: f64,
    /// User CPU time so far, in seconds.
    pub user_seconds: f64,
    /// System (kernel) CPU time so far, in seconds: page faults and zeroing fresh pages land here.
    pub system_seconds: f64,
    /// Minor page faults so far (a page mapped without reading the disk; each fresh anonymous
    /// page is one, and the kernel zeroes it).
    pub minor_faults: u64,
}

/// Reads the current process's memory (`VmHWM`, `VmRSS`), CPU time and minor faults. Zeroes
/// where `/proc` is unavailable.
pub fn process_usage() -> ProcessUsage {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let status_bytes = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    // After the parenthesised name, /proc/self/stat's fields from `state` on: minflt is the
    // 8th, utime and stime the 12th and 13th (clock ticks, 100 Hz on Linux: USER_HZ).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rfind(')')
        .map(|end| stat[end + 2..].split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let user_seconds = field(11) as f64 / 100.0;
    let system_seconds = field(12) as f64 / 100.0;
    ProcessUsage {
        peak_rss_bytes: status_bytes("VmHWM:"),
        rss_bytes: status_bytes("VmRSS:"),
        cpu_seconds: user_seconds + system_seconds,
        user_seconds,
        system_seconds,
        minor_faults: field(7),
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
        assert!(usage.rss_bytes > 1 << 20 && usage.rss_bytes <= usage.peak_rss_bytes);
        assert!(usage.user_seconds > 0.0, "{usage:?}");
        assert!(usage.minor_faults > 0, "{usage:?}");
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
