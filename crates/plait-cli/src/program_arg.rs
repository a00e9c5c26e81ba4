//! Command-line arguments shared by the commands that take a program and its input.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use plait_core::{AggTreeShape, InputItemSource, ProgramInput};
use plait_prover::{ProgramImage, ProvingParams, VmConfig};

use crate::{exit::BadInput, guest_build};

#[derive(Args, Clone, Debug)]
pub struct ProgramArgs {
    /// A guest ELF file, or a guest package directory (built first).
    pub program: PathBuf,
    /// An input item: `u32:N`, `u64:N` (or a bare number), `hex:..`, `str:..`, `file:PATH`.
    /// Repeat for several items, in the order the guest reads them.
    #[arg(long = "input", value_name = "ITEM")]
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub params: ParamArgs,
}

#[derive(Args, Clone, Debug)]
pub struct ParamArgs {
    /// Log2 of the largest trace height per segment (OpenVM's app `log_stacked_height`).
    /// Smaller cuts the execution into more, cheaper segments. Each height has its own keys.
    #[arg(long, default_value_t = 20)]
    pub segment_height: u32,
    /// Execution fails past this many guest instructions (default 2^36, room for a
    /// 10,000-segment job).
    #[arg(long, default_value_t = plait_prover::DEFAULT_MAX_INSTRUCTIONS)]
    pub max_instructions: u64,
    /// Segment proofs joined by one leaf node (OpenVM allows 1 to 4).
    #[arg(long, default_value_t = 4)]
    pub num_children_leaf: u32,
    /// Proofs joined by one internal node (OpenVM allows 2 to 3).
    #[arg(long, default_value_t = 3)]
    pub num_children_internal: u32,
    /// The VM config: rv32im, or rv32im-sha2 (with OpenVM's SHA-2 extension). Default: what
    /// the guest package declares (`[package.metadata.plait] vm-config`), else rv32im. Each
    /// config has its own keys.
    #[arg(long, value_name = "CONFIG")]
    pub vm_config: Option<VmConfig>,
}

impl ParamArgs {
    /// The parameters, with the `--vm-config` given or rv32im (see [`ProgramArgs::params`]).
    pub fn params(&self) -> ProvingParams {
        ProvingParams {
            segment_height: self.segment_height,
            max_instructions: self.max_instructions,
            tree: AggTreeShape {
                num_children_leaf: self.num_children_leaf,
                num_children_internal: self.num_children_internal,
            },
            vm_config: self.vm_config.unwrap_or_default(),
        }
    }
}

impl ProgramArgs {
    /// The parameters; without `--vm-config`, the VM config the guest package declares.
    pub fn params(&self) -> Result<ProvingParams> {
        let mut params = self.params.params();
        if self.params.vm_config.is_none() && self.program.is_dir() {
            if let Some(declared) = guest_build::declared_vm_config(&self.program)? {
                params.vm_config = declared;
            }
        }
        Ok(params)
    }

    pub fn load(&self, cache: &Path) -> Result<(ProgramImage, ProgramInput)> {
        Ok((
            load_program(&self.program, cache)?,
            parse_input(&self.inputs)?,
        ))
    }
}

/// Reads a program ELF, building it first when `path` is a guest package directory.
pub fn load_program(path: &Path, cache: &Path) -> Result<ProgramImage> {
    let elf = if path.is_dir() {
        guest_build::build(path, &cache.join("guest-target"))
            .with_context(|| format!("building guest {}", path.display()))?
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&elf)
        .map_err(|e| BadInput(format!("cannot read program {}: {e}", elf.display())))?;
    Ok(ProgramImage::new(bytes))
}

pub fn parse_input(items: &[String]) -> Result<ProgramInput> {
    let mut input = ProgramInput::default();
    for item in items {
        let bytes = match ProgramInput::parse_item(item).map_err(|e| BadInput(e.to_string()))? {
            InputItemSource::Bytes(bytes) => bytes,
            InputItemSource::File(path) => std::fs::read(path)
                .map_err(|e| BadInput(format!("input item {item:?}: cannot read {path}: {e}")))?,
        };
        input.items.push(bytes);
    }
    Ok(input)
}
