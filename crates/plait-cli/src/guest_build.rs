//! Builds guest programs for `riscv32im-risc0-zkvm-elf` without OpenVM's `Sdk::build` (which
//! installs a toolchain through rustup and so needs the internet).
//!
//! Two toolchains work, chosen by `PLAIT_GUEST_TOOLCHAIN` (`system` or `nightly`) or detected:
//! - `system`: Debian's `rustc-web`/`cargo-web` with `rust-web-src` (`/usr/bin/cargo`, the
//!   standard library source under `/usr/lib/rustlib/src`), built with `RUSTC_BOOTSTRAP=1` and
//!   linked by LLVM's `ld.lld`. `scripts/install-deps.sh` installs it.
//! - `nightly`: a rustup nightly with the `rust-src` component, as OpenVM documents.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use plait_prover::VmConfig;

use crate::exit::BadInput;

pub const GUEST_TARGET: &str = "riscv32im-risc0-zkvm-elf";

/// The flags `openvm-build` 2.0.2 passes, minus the linker (added per toolchain).
const GUEST_RUSTFLAGS: &[&str] = &[
    "-C",
    "passes=lower-atomic",
    "-C",
    "link-arg=-Ttext=0x00200800",
    "-C",
    "link-arg=--fatal-warnings",
    "-C",
    "panic=abort",
    "--cfg",
    "getrandom_backend=\"custom\"",
];

#[derive(Debug)]
enum Toolchain {
    System { linker: PathBuf },
    Nightly,
}

fn find_ld_lld() -> Option<PathBuf> {
    if let Ok(path) = env::var("PLAIT_GUEST_LINKER") {
        return Some(PathBuf::from(path));
    }
    let mut candidates: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).map(|d| d.join("ld.lld")).collect())
        .unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        let mut llvm: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("llvm-"))
            })
            .map(|p| p.join("bin/ld.lld"))
            .collect();
        llvm.sort();
        candidates.extend(llvm.into_iter().rev());
    }
    candidates.into_iter().find(|p| p.is_file())
}

fn system_toolchain_present() -> bool {
    Path::new("/usr/bin/cargo").is_file() && Path::new("/usr/lib/rustlib/src/rust/library").is_dir()
}

fn nightly_toolchain_present() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
                .join("lib/rustlib/src/rust/library")
                .is_dir()
        })
        .unwrap_or(false)
}

fn detect() -> Result<Toolchain> {
    let choice = env::var("PLAIT_GUEST_TOOLCHAIN").unwrap_or_default();
    let system = || -> Result<Toolchain> {
        let linker = find_ld_lld().context(
            "no ld.lld found (install Debian's `lld` package or set PLAIT_GUEST_LINKER)",
        )?;
        Ok(Toolchain::System { linker })
    };
    match choice.as_str() {
        "system" => system(),
        "nightly" => Ok(Toolchain::Nightly),
        "" if system_toolchain_present() => system(),
        "" if nightly_toolchain_present() => Ok(Toolchain::Nightly),
        "" => bail!(
            "no guest toolchain found: install Debian's rustc-web, cargo-web, rust-web-src and lld \
             (scripts/install-deps.sh does), or a rustup nightly with rust-src"
        ),
        other => bail!("PLAIT_GUEST_TOOLCHAIN={other:?}; use `system` or `nightly`"),
    }
}

fn package_name(dir: &Path) -> Result<String> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let value: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no [package] name", manifest.display()))
}

/// The VM config the guest package in `dir` declares it needs, as
/// `[package.metadata.plait] vm-config = "rv32im-sha2"` in its Cargo.toml; `None` if it
/// declares none.
pub fn declared_vm_config(dir: &Path) -> Result<Option<VmConfig>> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let value: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    let declared = value
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("plait"))
        .and_then(|p| p.get("vm-config"));
    match declared {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(|name| name.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                BadInput(format!(
                    "{}: [package.metadata.plait] vm-config is {v}; the VM configs are \
                     \"rv32im\" and \"rv32im-sha2\"",
                    manifest.display()
                ))
                .into()
            }),
    }
}

/// Builds the guest package in `dir` and returns the path of its ELF.
pub fn build(dir: &Path, target_dir: &Path) -> Result<PathBuf> {
    let name = package_name(dir)?;
    let toolchain = detect()?;
    let mut flags: Vec<String> = GUEST_RUSTFLAGS.iter().map(|s| s.to_string()).collect();
    let mut command = match &toolchain {
        Toolchain::System { linker } => {
            flags.push("-C".into());
            flags.push(format!("linker={}", linker.display()));
            let mut c = Command::new("/usr/bin/cargo");
            c.env("RUSTC", "/usr/bin/rustc").env("RUSTC_BOOTSTRAP", "1");
            c
        }
        Toolchain::Nightly => {
            let mut c = Command::new("cargo");
            c.arg("+nightly");
            c
        }
    };
    // Settings of an outer cargo (when plait runs under `cargo test`) must not leak in.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
    ] {
        command.env_remove(var);
    }
    command
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(dir)
        .args(["build", "--quiet", "--release", "--target", GUEST_TARGET])
        .args(["-Z", "build-std=alloc,core,proc_macro,panic_abort,std"])
        .args(["-Z", "build-std-features=compiler-builtins-mem"])
        .args(["--manifest-path", "Cargo.toml"]);
    tracing::info!(?toolchain, dir = %dir.display(), "building guest");
    let status = command
        .status()
        .with_context(|| format!("running cargo for guest {}", dir.display()))?;
    if !status.success() {
        bail!("guest build of {} failed ({status})", dir.display());
    }
    let elf = target_dir.join(GUEST_TARGET).join("release").join(&name);
    if !elf.is_file() {
        bail!("guest build succeeded but {} is missing", elf.display());
    }
    Ok(elf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(metadata: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            format!("[package]\nname = \"g\"\nversion = \"0.1.0\"\n{metadata}"),
        )
        .unwrap();
        dir
    }

    #[test]
    fn a_guest_package_declares_its_vm_config() {
        let none = package("");
        assert_eq!(declared_vm_config(none.path()).unwrap(), None);
        let sha2 = package("[package.metadata.plait]\nvm-config = \"rv32im-sha2\"\n");
        assert_eq!(
            declared_vm_config(sha2.path()).unwrap(),
            Some(VmConfig::Rv32imSha2)
        );
        let bad = package("[package.metadata.plait]\nvm-config = \"rv64gc\"\n");
        let err = declared_vm_config(bad.path()).unwrap_err();
        assert!(err.is::<BadInput>());
        assert!(err.to_string().contains("\"rv32im-sha2\""), "{err}");
        let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests");
        assert_eq!(
            declared_vm_config(&ours.join("zkml")).unwrap(),
            Some(VmConfig::Rv32imSha2)
        );
        assert_eq!(declared_vm_config(&ours.join("fib")).unwrap(), None);
    }
}
