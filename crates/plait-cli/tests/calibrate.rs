//! `plait calibrate --guest-elfs DIR` takes the calibration guests from built ELFs (the GPU
//! check runs it where no guest can be built). A missing one is refused by name, with exit
//! code 3, before anything is measured and before a kept calibration's proofs are touched.

use std::process::Command;

#[test]
fn a_missing_calibration_guest_is_refused_by_name_and_kept_proofs_stay() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("fib.elf"), b"a guest").unwrap();
    let kept = d.join("profile.work/h19-fib-segment-0.proof");
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::write(&kept, b"a proof").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_plait"))
        .args([
            "calibrate",
            "--device",
            "cpu",
            "--heights",
            "19",
            "--guest-elfs",
        ])
        .arg(d)
        .arg("--output")
        .arg(d.join("profile.json"))
        .env("PLAIT_CACHE_DIR", d.join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("sha-chain.elf"), "{stderr}");
    assert!(kept.exists(), "the kept proofs were removed");
    assert!(!d.join("profile.json").exists());
}
