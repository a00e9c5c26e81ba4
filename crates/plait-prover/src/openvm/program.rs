//! Turning a guest ELF into a loaded OpenVM program: checked, transpiled and committed.

use std::sync::Arc;

use openvm_circuit::{
    arch::{instructions::exe::VmExe, VmBuilder, VmInstance},
    system::program::trace::compute_exe_commit_from_mem_config,
};
use openvm_sdk::{prover::vm::new_local_prover, F, SC};
use openvm_sdk_config::{SdkVmConfig, SdkVmCpuBuilder, TranspilerConfig};
use openvm_stark_backend::StarkEngine;
use openvm_stark_sdk::config::baby_bear_poseidon2::Digest;
use openvm_transpiler::{elf::Elf, openvm_platform::memory::MEM_SIZE, FromElf};

use super::keys::{sdk_vm_config, Engine, KeySet};
use crate::{BackendError, ProgramImage, VmConfig};

const EM_RISCV: u16 = 243;

/// A program transpiled and committed under one key set.
pub(crate) struct LoadedProgram {
    pub exe: Arc<VmExe<F>>,
    /// Commitment to the program's cached trace, as segment proofs expose it.
    pub program_commit: Digest,
    /// Commitment to program, initial memory and entry point, as the final proof exposes it.
    pub exe_commit: Digest,
}

/// Checks that `bytes` is a 32-bit little-endian RISC-V executable, with a precise reason when
/// it is not (OpenVM's own decoder reports far less).
pub(crate) fn check_elf_header(bytes: &[u8]) -> Result<(), BackendError> {
    let bad = |reason: String| Err(BackendError::InvalidProgram(reason));
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return bad(format!(
            "not an ELF file ({} bytes, no ELF magic number)",
            bytes.len()
        ));
    }
    let class = bytes[4];
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if class != 1 || bytes[5] != 1 || machine != EM_RISCV {
        let arch = match (class, machine) {
            (2, 62) => "x86-64".to_string(),
            (1, 3) => "x86".to_string(),
            (2, 183) => "AArch64".to_string(),
            (1, 40) => "ARM".to_string(),
            (2, EM_RISCV) => "64-bit RISC-V".to_string(),
            (c, m) => format!("machine {m}, class {}", if c == 2 { 64 } else { 32 }),
        };
        return bad(format!(
            "ELF is for another architecture ({arch}); expected 32-bit RISC-V \
             (target riscv32im-risc0-zkvm-elf)"
        ));
    }
    Ok(())
}

/// Why `vm` cannot run this ELF, naming the VM config that can where there is one.
fn refusal(vm: VmConfig, elf: &Elf, error: impl std::fmt::Display) -> BackendError {
    let runs_under = VmConfig::ALL.into_iter().find(|&other| {
        other != vm && VmExe::<F>::from_elf(elf.clone(), sdk_vm_config(other).transpiler()).is_ok()
    });
    BackendError::InvalidProgram(match runs_under {
        Some(other) => format!(
            "the ELF uses instructions the {vm} VM config cannot run ({error}); it runs under \
             {other}: declare it in the guest's Cargo.toml ([package.metadata.plait] \
             vm-config = \"{other}\") or pass --vm-config {other}"
        ),
        None => format!("the ELF does not transpile to OpenVM's {vm} instruction set: {error}"),
    })
}

pub(crate) fn load(keys: &KeySet, program: &ProgramImage) -> Result<LoadedProgram, BackendError> {
    check_elf_header(&program.bytes)?;
    let elf = Elf::decode(&program.bytes, MEM_SIZE as u32)
        .map_err(|e| BackendError::InvalidProgram(format!("ELF does not decode: {e}")))?;
    let exe = VmExe::from_elf(elf.clone(), sdk_vm_config(keys.vm).transpiler())
        .map_err(|e| refusal(keys.vm, &elf, e))?;
    let exe = Arc::new(exe);
    let app_pk = keys.app_pk()?;
    let instance = vm_instance(keys, &exe)?;
    let program_commit = *instance.program_commitment();
    let exe_commit = compute_exe_commit_from_mem_config(
        &program_commit,
        &exe,
        &app_pk.app_vm_pk.vm_config.as_ref().memory_config,
    );
    Ok(LoadedProgram {
        exe,
        program_commit,
        exe_commit,
    })
}

/// Builds a VM with the program committed on it.
///
/// OpenVM's VM holds chips that are not `Send`, so it cannot live in the backend's shared
/// cache; each execution or proving task builds its own (measured: see the closing notes of
/// the foundation issue; seconds against minutes of proving).
pub(crate) fn vm_instance(
    keys: &KeySet,
    exe: &Arc<VmExe<F>>,
) -> Result<VmInstance<Engine, SdkVmCpuBuilder>, BackendError> {
    vm_instance_on::<Engine, _>(SdkVmCpuBuilder, keys, exe)
}

/// [`vm_instance`] on any engine: the CPU's, or (with `cuda`) the GPU's, whose proving key and
/// program commitment then live in device memory.
pub(crate) fn vm_instance_on<E, VB>(
    builder: VB,
    keys: &KeySet,
    exe: &Arc<VmExe<F>>,
) -> Result<VmInstance<E, VB>, BackendError>
where
    E: StarkEngine<SC = SC>,
    VB: VmBuilder<E, VmConfig = SdkVmConfig>,
{
    let app_pk = keys.app_pk()?;
    new_local_prover::<E, VB>(builder, &app_pk.app_vm_pk, exe.clone())
        .map_err(|e| BackendError::InvalidProgram(format!("VM rejects the program: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_elf_and_foreign_elf_are_named() {
        let err = check_elf_header(b"hello world, not an elf").unwrap_err();
        assert!(err.to_string().contains("not an ELF"), "{err}");

        // The header of this very test binary: an x86-64 ELF on the machines we build on.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let err = check_elf_header(&me).unwrap_err();
        assert!(err.to_string().contains("another architecture"), "{err}");
    }
}
