//! The CPU this process runs on, described as a proving device.

use plait_core::{Device, DeviceKind};

/// This machine's CPU: its model name (from `/proc/cpuinfo`) and the machine's memory.
pub(crate) fn cpu() -> Device {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, name)| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let model: String = model
        .chars()
        .filter(|c| !c.is_control())
        .take(Device::MAX_MODEL_BYTES / 4)
        .collect();
    Device {
        kind: DeviceKind::Cpu,
        model,
        memory_bytes: machine_memory_bytes(),
        compute_capability: None,
    }
}

/// The machine's memory (`MemTotal`), 0 where it cannot be read.
pub fn machine_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cpu_is_described_within_bounds() {
        let cpu = super::cpu();
        assert_eq!(cpu.check_bounds(), Ok(()), "{cpu:?}");
        assert!(cpu.memory_bytes > 0);
        assert!(!cpu.model.is_empty());
    }
}
