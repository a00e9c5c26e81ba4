//! Executing a guest once to plan its segments.
//!
//! Besides OpenVM's segment cut (instructions and trace heights), the plan records the VM state
//! at every segment boundary (program counter and memory Merkle root). The coordinator checks
//! each returned proof against these boundaries, which binds a proof to the exact slice it
//! was asked for: a valid proof of another segment, or of the same program on another input,
//! does not match.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use openvm_circuit::{
    arch::{
        execution_mode::metered::segment_ctx::Segment, hasher::poseidon2::vm_poseidon2_hasher,
        instructions::exe::VmExe, VirtualMachine, VmExecState, VmState,
    },
    system::memory::merkle::{public_values::extract_public_values, MerkleTree},
};
use openvm_sdk::{StdIn, F};
use openvm_stark_backend::p3_field::PrimeField32;
use plait_core::{ProgramInput, SegmentPlan, SegmentSpec};
use serde::{Deserialize, Serialize};

use openvm_sdk_config::SdkVmCpuBuilder;

use super::{
    keys::{Engine, KeySet},
    program::{vm_instance, LoadedProgram},
};
use crate::{BackendError, RunOutcome};

/// What a segment task needs beyond the scheduler's fields; travels as the segment's
/// `backend_hint`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SegmentHint {
    /// Per-chip trace heights from metered execution; preflight execution sizes its buffers by
    /// them.
    pub trace_heights: Vec<u32>,
    pub start: Boundary,
    pub end: Boundary,
}

/// The VM state at a segment boundary, as segment and aggregation proofs expose it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Boundary {
    pub pc: u32,
    pub memory_root: [u32; 8],
}

impl SegmentHint {
    pub fn of(segment: &SegmentSpec) -> Result<Self, BackendError> {
        serde_json::from_value(segment.backend_hint.clone()).map_err(|e| {
            BackendError::MalformedTask(format!(
                "segment {} has no valid OpenVM hint: {e}",
                segment.index
            ))
        })
    }
}

pub(crate) fn stdin_of(input: &ProgramInput) -> StdIn {
    let mut stdin = StdIn::default();
    for item in &input.items {
        stdin.write_bytes(item);
    }
    stdin
}

pub(crate) fn execute(
    keys: &KeySet,
    program: &LoadedProgram,
    input: &ProgramInput,
    segment_height: u32,
    max_instructions: u64,
) -> Result<SegmentPlan, BackendError> {
    let instance = vm_instance(keys, &program.exe)?;
    let vm = &instance.vm;
    let exe = &program.exe;
    let failed = |e: &dyn std::fmt::Display| BackendError::GuestFailed(e.to_string());
    let started = std::time::Instant::now();

    // OpenVM reports its per-segment memory estimate only in a log line; capture it.
    let estimates = Arc::new(Mutex::new(HashMap::new()));
    let capture = estimate_capture::Layer(estimates.clone());
    let subscriber = tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::Registry::default(),
        capture,
    );

    let (segments, final_state) = tracing::subscriber::with_default(subscriber, || {
        metered(vm, exe, input, max_instructions)
    })?;
    // Fixed-size tables (lookup chips) have the same height in every segment; a segment height
    // below theirs can be keyed but never proven.
    let limit = 1u64 << segment_height;
    if let Some(tallest) = segments
        .iter()
        .flat_map(|s| s.trace_heights.iter())
        .map(|&h| u64::from(h))
        .max()
        .filter(|&h| h > limit)
    {
        let needed = 64 - (tallest - 1).leading_zeros();
        return Err(BackendError::InvalidParams(format!(
            "segment height {segment_height} is too small for this VM: one of its tables has \
             {tallest} rows, so every segment needs a height of at least {needed}"
        )));
    }
    let total: u64 = segments.iter().map(|s| s.num_insns).sum();
    if total > max_instructions {
        return Err(BackendError::InstructionLimit {
            limit: max_instructions,
        });
    }
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        segments = segments.len(),
        "metered execution done"
    );
    let started = std::time::Instant::now();
    let config = vm.config().as_ref();
    let public_values = extract_public_values(config.num_public_values, &final_state.memory.memory);

    // Walk the execution again, segment by segment, to record every boundary.
    let md = config.memory_config.memory_dimensions();
    let hasher = vm_poseidon2_hasher();
    let boundary = |state: &VmState<F>| {
        let root: [F; 8] = MerkleTree::from_memory(&state.memory.memory, &md, &hasher).root();
        Boundary {
            pc: state.pc(),
            memory_root: root.map(|x| x.as_canonical_u32()),
        }
    };
    let interpreter = vm.interpreter(exe).map_err(|e| failed(&e))?;
    let mut state = interpreter.create_initial_vm_state(stdin_of(input));
    let mut start = boundary(&state);
    let estimates = estimates.lock().expect("estimates lock poisoned");
    let mut specs = Vec::with_capacity(segments.len());
    for (index, segment) in segments.into_iter().enumerate() {
        state = interpreter
            .execute_from_state(state, Some(segment.num_insns))
            .map_err(|e| failed(&e))?;
        let end = boundary(&state);
        let hint = SegmentHint {
            trace_heights: segment.trace_heights,
            start,
            end,
        };
        specs.push(SegmentSpec {
            index: index as u32,
            instret_start: segment.instret_start,
            num_insns: segment.num_insns,
            memory_estimate_bytes: estimates.get(&index).copied().unwrap_or(0),
            backend_hint: serde_json::to_value(&hint).expect("hint serializes"),
        });
        start = end;
    }
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "segment boundaries recorded"
    );
    Ok(SegmentPlan {
        segments: specs,
        public_values,
    })
}

/// Runs the guest to its end under OpenVM's metered execution, which cuts it into segments.
fn metered(
    vm: &VirtualMachine<Engine, SdkVmCpuBuilder>,
    exe: &VmExe<F>,
    input: &ProgramInput,
    max_instructions: u64,
) -> Result<(Vec<Segment>, VmState<F>), BackendError> {
    let failed = |e: &dyn std::fmt::Display| BackendError::GuestFailed(e.to_string());
    let interpreter = vm.metered_interpreter(exe).map_err(|e| failed(&e))?;
    let ctx = vm.build_metered_ctx(exe).with_suspend_on_segment(true);
    let mut state = VmExecState::new(interpreter.create_initial_vm_state(stdin_of(input)), ctx);
    // Suspending at every segment lets us stop a guest that runs past the limit.
    loop {
        state = interpreter
            .execute_metered_until_suspend(state)
            .map_err(|e| failed(&e))?;
        match &state.exit_code {
            Ok(Some(0)) => break,
            Ok(Some(code)) => {
                return Err(BackendError::GuestFailed(format!(
                    "guest exited with code {code} (a guest panic exits with 1)"
                )))
            }
            Err(e) => return Err(failed(e)),
            Ok(None) => {}
        }
        if state.ctx.segmentation_ctx.instret > max_instructions {
            return Err(BackendError::InstructionLimit {
                limit: max_instructions,
            });
        }
    }
    let VmExecState { vm_state, ctx, .. } = state;
    Ok((ctx.into_segments(), vm_state))
}

/// Runs the guest to its end and returns its public values: no segment boundaries, so much
/// faster than [`execute`] for long runs.
pub(crate) fn run(
    keys: &KeySet,
    program: &LoadedProgram,
    input: &ProgramInput,
    max_instructions: u64,
) -> Result<RunOutcome, BackendError> {
    let instance = vm_instance(keys, &program.exe)?;
    let (segments, final_state) = metered(&instance.vm, &program.exe, input, max_instructions)?;
    let instructions: u64 = segments.iter().map(|s| s.num_insns).sum();
    if instructions > max_instructions {
        return Err(BackendError::InstructionLimit {
            limit: max_instructions,
        });
    }
    let config = instance.vm.config().as_ref();
    Ok(RunOutcome {
        public_values: extract_public_values(config.num_public_values, &final_state.memory.memory),
        instructions,
    })
}

/// A tracing layer that reads OpenVM's "Segment N | … | 2.6 GiB memory (…)" log lines.
mod estimate_capture {
    use std::{
        collections::HashMap,
        fmt,
        sync::{Arc, Mutex},
    };

    use tracing::field::{Field, Visit};

    pub struct Layer(pub Arc<Mutex<HashMap<usize, u64>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Layer {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut message = MessageVisitor(String::new());
            event.record(&mut message);
            if let Some((index, bytes)) = parse_segment_line(&message.0) {
                self.0.lock().expect("lock").insert(index, bytes);
            }
        }
    }

    struct MessageVisitor(String);

    impl Visit for MessageVisitor {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    /// Parses `Segment   1 | instret … | … | 2.6 GiB memory (…) | …` into (1, bytes).
    pub fn parse_segment_line(line: &str) -> Option<(usize, u64)> {
        let mut parts = line.split('|');
        let index = parts
            .next()?
            .trim()
            .strip_prefix("Segment")?
            .trim()
            .parse()
            .ok()?;
        let memory = parts.find(|p| p.contains(" memory"))?;
        let size = memory.split(" memory").next()?.trim();
        Some((index, parse_byte_size(size)?))
    }

    fn parse_byte_size(text: &str) -> Option<u64> {
        let (number, unit) = text.split_once(' ').unwrap_or((text, "B"));
        let number: f64 = number.trim().parse().ok()?;
        let scale: f64 = match unit.trim() {
            "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            "TiB" => 1024.0f64.powi(4),
            "KB" | "kB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "TB" => 1e12,
            _ => return None,
        };
        Some((number * scale) as u64)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn reads_openvm_segment_lines() {
            let line = "Segment   1 | instret    1750000 |  1250000 instructions | 2.1 GiB memory (1.0 GiB, 1.1 GiB) |    1234 interactions |   524288 max height (Foo) | 75.00% memory util [TERMINATED]";
            let (index, bytes) = super::parse_segment_line(line).unwrap();
            assert_eq!(index, 1);
            assert_eq!(bytes, (2.1 * 1024.0 * 1024.0 * 1024.0) as u64);
            assert_eq!(super::parse_segment_line("instructions_executed=5"), None);
        }
    }
}
