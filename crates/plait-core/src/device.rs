//! What a worker proves on: a CPU, or a GPU with its own memory.
//!
//! A worker says which device it proves on when it claims work; the coordinator places tasks by
//! the memory of that device (a GPU prover's traces live in device memory), and device profiles
//! name the kind of device they measured.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The kind of device a prover runs on.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, PartialOrd,
)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// The machine's processor.
    #[default]
    Cpu,
    /// An NVIDIA GPU.
    Gpu,
}

impl DeviceKind {
    /// The kind's name in profiles and on the command line: `cpu` or `gpu`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The device a worker proves on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Device {
    /// A CPU or a GPU.
    pub kind: DeviceKind,
    /// The device's name, e.g. `NVIDIA H200` or the CPU's model name.
    pub model: String,
    /// Memory the prover's traces live in: the GPU's own memory for a GPU (what bounds the
    /// segment height it can prove), the machine's for a CPU.
    pub memory_bytes: u64,
    /// A GPU's compute capability (`9.0` for an H200), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<String>,
}

impl Device {
    /// The longest model name a worker may send.
    pub const MAX_MODEL_BYTES: usize = 128;
    /// The most memory a device may state: 64 TiB, beyond any one machine today.
    pub const MAX_MEMORY_BYTES: u64 = 1 << 46;

    /// Checks what a worker sent: names bounded and printable, a GPU's memory stated.
    pub fn check_bounds(&self) -> Result<(), String> {
        if self.model.len() > Self::MAX_MODEL_BYTES || !crate::text::is_printable(&self.model) {
            return Err(format!(
                "device model must be printable and at most {} bytes",
                Self::MAX_MODEL_BYTES
            ));
        }
        if let Some(cc) = &self.compute_capability {
            if cc.len() > 16 || !cc.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return Err("device compute capability must look like 9.0".into());
            }
        }
        if self.memory_bytes > Self::MAX_MEMORY_BYTES {
            return Err(format!(
                "device memory must be at most {} TiB",
                Self::MAX_MEMORY_BYTES >> 40
            ));
        }
        if self.kind == DeviceKind::Gpu && self.memory_bytes == 0 {
            return Err("a GPU device must state its memory".into());
        }
        Ok(())
    }

    /// `gpu NVIDIA H200 (139.8 GiB)`: how logs and tables name it.
    pub fn describe(&self) -> String {
        format!(
            "{} {} ({:.1} GiB)",
            self.kind,
            self.model,
            self.memory_bytes as f64 / (1u64 << 30) as f64
        )
    }
}

/// Which device a worker should prove on: `auto` takes a GPU when there is one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    /// A GPU if there is one (and the build supports it), else the CPU.
    #[default]
    Auto,
    /// A GPU, or refuse.
    Gpu,
    /// The CPU, even with a GPU present.
    Cpu,
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "gpu" => Ok(Self::Gpu),
            "cpu" => Ok(Self::Cpu),
            _ => Err(format!("unknown device {s:?}: auto, gpu or cpu")),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Gpu => "gpu",
            Self::Cpu => "cpu",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu() -> Device {
        Device {
            kind: DeviceKind::Gpu,
            model: "NVIDIA H200".into(),
            memory_bytes: 143_771_000_000,
            compute_capability: Some("9.0".into()),
        }
    }

    #[test]
    fn devices_are_bounded_and_named() {
        assert_eq!(gpu().check_bounds(), Ok(()));
        assert_eq!(gpu().describe(), "gpu NVIDIA H200 (133.9 GiB)");
        let mut forged = gpu();
        forged.model = "H200\njob-5 succeeded".into();
        assert!(forged.check_bounds().unwrap_err().contains("printable"));
        forged.model = "x".repeat(129);
        assert!(forged.check_bounds().is_err());
        let mut no_memory = gpu();
        no_memory.memory_bytes = 0;
        assert!(no_memory.check_bounds().unwrap_err().contains("memory"));
        let mut cc = gpu();
        cc.compute_capability = Some("9.0; rm -rf".into());
        assert!(cc.check_bounds().is_err());
        let mut huge = gpu();
        huge.memory_bytes = u64::MAX;
        assert!(huge.check_bounds().unwrap_err().contains("TiB"));
        let json = serde_json::to_value(gpu()).unwrap();
        assert_eq!(json["kind"], "gpu");
        assert_eq!(json["memory-bytes"], 143_771_000_000u64);
    }

    #[test]
    fn device_choices_parse() {
        for choice in [DeviceChoice::Auto, DeviceChoice::Gpu, DeviceChoice::Cpu] {
            assert_eq!(choice.to_string().parse::<DeviceChoice>(), Ok(choice));
        }
        assert!("tpu".parse::<DeviceChoice>().unwrap_err().contains("auto"));
    }
}
