//! A `cuda` build carries the CPU build to run on machines without a GPU
//! (`src/cpu_fallback.rs`): `scripts/build-gpu.sh` names its file in `PLAIT_CPU_FALLBACK`.
//! Set for a build without `cuda`, it makes one that runs the binary it carries wherever there
//! is no NVIDIA driver: the whole path checked on a machine without CUDA (docs/gpu.md).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(plait_cpu_fallback)");
    println!("cargo::rerun-if-env-changed=PLAIT_CPU_FALLBACK");
    let Some(path) = std::env::var_os("PLAIT_CPU_FALLBACK") else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    assert!(
        path.is_absolute() && path.is_file(),
        "PLAIT_CPU_FALLBACK must name the CPU build's binary by an absolute path: {}",
        path.display()
    );
    println!("cargo::rerun-if-changed={}", path.display());
    println!("cargo::rustc-cfg=plait_cpu_fallback");
    println!(
        "cargo::rustc-env=PLAIT_CPU_FALLBACK_PATH={}",
        path.display()
    );
}
