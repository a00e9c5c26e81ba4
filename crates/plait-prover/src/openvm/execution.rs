//! Executing a guest once to plan its segments.
//!
//! Besides OpenVM's segment cut (instructions and trace heights), the plan records the VM state
//! at every segment boundary (program counter and memory Merkle root), and can checkpoint each
//! segment's start state so that workers need not re-execute (see [`super::checkpoint`]). The coordinator checks
//! each returned proof against these boundaries, which binds a proof to the exact slice it
//! was asked for: a valid proof of another segment, or of the same program on another input,
//! does not match.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use openvm_circuit::{
    arch::{
        execution_mode::metered::segment_ctx::Segment, instructions::exe::VmExe, VirtualMachine,
        VmExecState, VmState,
    },
    system::memory::merkle::public_values::extract_public_values,
};
use openvm_sdk::{StdIn, F};
use plait_core::{JobId, ProgramInput, SegmentPlan, SegmentSpec, TraceSize};
use serde::{Deserialize, Serialize};

use openvm_sdk_config::SdkVmCpuBuilder;

use super::{
    checkpoint::{self, Boundary, BoundaryTracker, CheckpointHeader},
    keys::{Engine, KeySet},
    program::{vm_instance, LoadedProgram},
    segmentation::{self, no_cap, Segmentation},
    trace_cells,
};
use crate::{BackendError, CutSegment, ProgramImage, RunOutcome, SegmentSink};

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

/// Executes the guest once, cutting it into segments and handing each to `sink` as soon as it
/// is cut, with its boundaries and (for `checkpoints_for = Some(job)`) its start-state
/// checkpoint.
///
/// Two interpreters run over the same execution: OpenVM's metered interpreter decides where
/// segments end, but it only notices a cut up to a check interval after the boundary; a pure
/// interpreter follows it to each exact boundary, where the [`BoundaryTracker`] updates the
/// memory root from the pages that changed and takes the checkpoint.
pub(crate) fn execute(
    keys: &KeySet,
    program: &LoadedProgram,
    image: &ProgramImage,
    input: &ProgramInput,
    segment_height: u32,
    max_instructions: u64,
    checkpoints_for: Option<JobId>,
    sink: &mut SegmentSink<'_>,
) -> Result<SegmentPlan, BackendError> {
    let instance = vm_instance(keys, &program.exe)?;
    let vm = &instance.vm;
    let exe = &program.exe;
    let failed = |e: &dyn std::fmt::Display| BackendError::GuestFailed(e.to_string());
    let started = std::time::Instant::now();
    let config = vm.config().as_ref();
    let md = config.memory_config.memory_dimensions();

    // OpenVM reports its per-segment memory estimate only in a log line; capture it.
    let estimates = Arc::new(Mutex::new(HashMap::new()));
    let capture = estimate_capture::Layer(estimates.clone());
    let subscriber = tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::Registry::default(),
        capture,
    );
    let capturing = tracing::subscriber::set_default(subscriber);

    let metered = vm.metered_interpreter(exe).map_err(|e| failed(&e))?;
    // Segments are also ended before their LogUp cells pass the limit (see `segmentation`); a
    // segment past it is cut again, from its start, with a cap worked out from its own chips.
    let cut = Segmentation::new(vm, exe);
    let mut cap = no_cap();
    let mut recuts = 0;
    let ctx = cut
        .ctx_from(exe, cap, Vec::new())
        .with_suspend_on_segment(true);
    let mut ahead = VmExecState::new(metered.create_initial_vm_state(stdin_of(input)), ctx);
    let pure = vm.interpreter(exe).map_err(|e| failed(&e))?;
    let mut behind = pure.create_initial_vm_state(stdin_of(input));
    let mut tracker = BoundaryTracker::new(&behind, md);
    let mut start = tracker.boundary(&behind);
    let limit = 1u64 << segment_height;
    let mut specs: Vec<SegmentSpec> = Vec::new();
    // Where the time goes, for the log: metered run, pure run, boundaries, checkpoints.
    let mut spent = [std::time::Duration::ZERO; 4];
    let setup_seconds = started.elapsed().as_secs_f64();
    loop {
        let t = std::time::Instant::now();
        ahead = metered
            .execute_metered_until_suspend(ahead)
            .map_err(|e| failed(&e))?;
        spent[0] += t.elapsed();
        let over = ahead.ctx.segments()[specs.len()..]
            .iter()
            .find(|s| cut.past_limit(&s.trace_heights))
            .map(|s| cut.cap_after(&s.trace_heights));
        if let Some(lower) = over.filter(|&lower| lower < cap && recuts < MAX_RECUTS) {
            tracing::debug!(
                segment = specs.len(),
                cap = lower,
                "a segment passed the LogUp limit: cut again"
            );
            // Again from its start, where the pure run stands (the segments before it are cut).
            cap = lower;
            // The segments kept are moved, not copied: a long job cuts tens of thousands.
            let mut cut_before = std::mem::take(&mut ahead.ctx.segmentation_ctx.segments);
            cut_before.truncate(specs.len());
            let ctx = cut
                .ctx_from(exe, cap, cut_before)
                .with_suspend_on_segment(true);
            // Its streams are the pure run's (copied below), not the input's from the start.
            let mut again = metered.create_initial_vm_state(StdIn::default());
            tracker.copy_onto(&behind, &mut again);
            ahead = VmExecState::new(again, ctx);
            recuts += 1;
            continue;
        }
        recuts = 0;
        let finished = match &ahead.exit_code {
            Ok(Some(0)) => true,
            Ok(Some(code)) => {
                return Err(BackendError::GuestFailed(format!(
                    "guest exited with code {code} (a guest panic exits with 1)"
                )))
            }
            Err(e) => return Err(failed(e)),
            Ok(None) => false,
        };
        if ahead.ctx.segmentation_ctx.instret > max_instructions {
            return Err(BackendError::InstructionLimit {
                limit: max_instructions,
            });
        }
        let public_values = finished.then(|| {
            extract_public_values(config.num_public_values, &ahead.vm_state.memory.memory)
        });
        // Follow the metered run to the end of every segment it has cut since the last look.
        while specs.len() < ahead.ctx.segments().len() {
            let index = specs.len();
            let segment = ahead.ctx.segments()[index].clone();
            // Fixed-size tables (lookup chips) have the same height in every segment; a segment
            // height below theirs can be keyed but never proven.
            if let Some(tallest) = segment
                .trace_heights
                .iter()
                .map(|&h| u64::from(h))
                .max()
                .filter(|&h| h > limit)
            {
                let needed = 64 - (tallest - 1).leading_zeros();
                return Err(BackendError::InvalidParams(format!(
                    "segment height {segment_height} is too small for this VM: one of its \
                     tables has {tallest} rows, so every segment needs a height of at least \
                     {needed}"
                )));
            }
            let t = std::time::Instant::now();
            let checkpoint = match checkpoints_for {
                Some(job) => Some(tracker.checkpoint(
                    &behind,
                    CheckpointHeader {
                        job: job.0,
                        program_sha256: image.digest.clone(),
                        segment: index as u32,
                        instret_start: segment.instret_start,
                        boundary: start,
                    },
                )?),
                None => None,
            };
            spent[3] += t.elapsed();
            let t = std::time::Instant::now();
            behind = pure
                .execute_from_state(behind, Some(segment.num_insns))
                .map_err(|e| failed(&e))?;
            spent[1] += t.elapsed();
            let t = std::time::Instant::now();
            let end = tracker.advance(&behind);
            spent[2] += t.elapsed();
            let trace_size = trace_cells::of_heights(keys, &segment.trace_heights)?.size();
            let hint = SegmentHint {
                trace_heights: segment.trace_heights,
                start,
                end,
            };
            let spec = SegmentSpec {
                index: index as u32,
                instret_start: segment.instret_start,
                num_insns: segment.num_insns,
                memory_estimate_bytes: estimates
                    .lock()
                    .expect("estimates lock")
                    .get(&index)
                    .copied()
                    .unwrap_or(0),
                backend_hint: serde_json::to_value(&hint).expect("hint serializes"),
                checkpoint: checkpoint.as_deref().map(checkpoint::digest),
                trace_size: Some(trace_size),
            };
            let is_last = finished && index + 1 == ahead.ctx.segments().len();
            sink(CutSegment {
                spec: spec.clone(),
                checkpoint,
                ending: if is_last { public_values.clone() } else { None },
            })?;
            specs.push(spec);
            start = end;
        }
        if finished {
            break;
        }
        // The next segment runs much the same code as the last: capped by its chips.
        if let Some(last) = ahead.ctx.segments().last() {
            cap = cut.cap_after(&last.trace_heights);
            cut.set_cap(&mut ahead.ctx, cap);
        }
    }
    drop(capturing);
    let total: u64 = specs.iter().map(|s| s.num_insns).sum();
    if total > max_instructions {
        return Err(BackendError::InstructionLimit {
            limit: max_instructions,
        });
    }
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        setup_seconds,
        metered_seconds = spent[0].as_secs_f64(),
        pure_seconds = spent[1].as_secs_f64(),
        boundary_seconds = spent[2].as_secs_f64(),
        checkpoint_seconds = spent[3].as_secs_f64(),
        segments = specs.len(),
        "execution and segment boundaries done"
    );
    Ok(SegmentPlan {
        segments: specs,
        public_values: extract_public_values(
            config.num_public_values,
            &ahead.vm_state.memory.memory,
        ),
    })
}

/// Predicts the segments (instructions each) of the same execution cut at a larger `height`,
/// from the per-chip trace heights of its segments at `plan_height`.
///
/// OpenVM cuts a segment when a chip's trace would outgrow `2^height` rows. Chips of fixed
/// size (lookup tables) have the same height in every segment and are left out; every other
/// chip grows with the instructions executed, so segments are refilled greedily, splitting a
/// planned segment in proportion to its instructions where a limit falls inside it. Memory
/// chips count the pages each segment touched, so summing them overestimates merged segments:
/// the prediction errs towards more segments.
pub(crate) fn predict_segments(
    plan: &SegmentPlan,
    plan_height: u32,
    height: u32,
) -> Option<Vec<u64>> {
    if height < plan_height || plan.segments.is_empty() {
        return None;
    }
    let hints: Vec<SegmentHint> = plan
        .segments
        .iter()
        .map(SegmentHint::of)
        .collect::<Result<_, _>>()
        .ok()?;
    let chips = hints[0].trace_heights.len();
    if hints.iter().any(|h| h.trace_heights.len() != chips) {
        return None;
    }
    let growing: Vec<usize> = (0..chips)
        .filter(|&c| {
            hints
                .iter()
                .any(|h| h.trace_heights[c] != hints[0].trace_heights[c])
        })
        .collect();
    let limit = (1u64 << height) as f64;
    let mut out = Vec::new();
    let (mut filled, mut instructions) = (vec![0f64; chips], 0f64);
    for (segment, hint) in plan.segments.iter().zip(&hints) {
        let mut rest = 1.0f64;
        while rest > 1e-12 {
            // The share of what is left of this segment that fits in the current one.
            let fits = growing
                .iter()
                .filter(|&&c| hint.trace_heights[c] > 0)
                .map(|&c| (limit - filled[c]) / f64::from(hint.trace_heights[c]))
                .fold(rest, f64::min)
                .max(0.0);
            for &c in &growing {
                filled[c] += fits * f64::from(hint.trace_heights[c]);
            }
            if fits <= 0.0 && instructions == 0.0 {
                return None; // A segment of this plan does not fit an empty one: no prediction.
            }
            instructions += fits * segment.num_insns as f64;
            rest -= fits;
            if rest > 1e-12 {
                out.push(instructions.round() as u64);
                filled.iter_mut().for_each(|f| *f = 0.0);
                instructions = 0.0;
            }
        }
    }
    if instructions >= 0.5 {
        out.push(instructions.round() as u64);
    }
    // Rounding shares of segments must not lose or invent instructions.
    let before_last: u64 = out.iter().rev().skip(1).sum();
    let last = out.last_mut()?;
    *last = plan.total_insns().checked_sub(before_last)?;
    // Segments this full of bus interactions would be ended earlier, by the LogUp limit (see
    // `segmentation`), where no share of the planned ones says: execute at this height.
    let within = |size: Option<TraceSize>| {
        size.is_none_or(|s| {
            s.interaction_cells as f64 * (1.0 + segmentation::MARGIN)
                <= segmentation::logup_cell_limit(height) as f64
        })
    };
    if !plan.regrouped_sizes(&out).into_iter().all(within) {
        return None;
    }
    Some(out)
}

/// Recomputes every boundary of `plan` the slow, obvious way (re-executing segment by segment
/// and hashing the whole memory at each boundary), and returns the index of the first segment
/// whose boundaries differ from the plan's, if any. A cross-check of [`BoundaryTracker`].
pub(crate) fn first_boundary_mismatch(
    keys: &KeySet,
    program: &LoadedProgram,
    input: &ProgramInput,
    plan: &SegmentPlan,
) -> Result<Option<u32>, BackendError> {
    let instance = vm_instance(keys, &program.exe)?;
    let failed = |e: &dyn std::fmt::Display| BackendError::GuestFailed(e.to_string());
    let md = instance
        .vm
        .config()
        .as_ref()
        .memory_config
        .memory_dimensions();
    let boundary = |state: &VmState<F>| Boundary {
        pc: state.pc(),
        memory_root: checkpoint::memory_root(&state.memory.memory, &md),
    };
    let interpreter = instance
        .vm
        .interpreter(&program.exe)
        .map_err(|e| failed(&e))?;
    let mut state = interpreter.create_initial_vm_state(stdin_of(input));
    let mut start = boundary(&state);
    for segment in &plan.segments {
        state = interpreter
            .execute_from_state(state, Some(segment.num_insns))
            .map_err(|e| failed(&e))?;
        let end = boundary(&state);
        let hint = SegmentHint::of(segment)?;
        if hint.start != start || hint.end != end {
            return Ok(Some(segment.index));
        }
        start = end;
    }
    Ok(None)
}

/// How many times one segment is cut again, each with a lower cap, before it is kept past the
/// LogUp limit (proven as it is, at the cost its trace size predicts).
const MAX_RECUTS: u32 = 3;

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

#[cfg(test)]
mod prediction_tests {
    use super::*;

    fn plan(segments: &[(u64, [u32; 2])]) -> SegmentPlan {
        let boundary = Boundary {
            pc: 0,
            memory_root: [0; 8],
        };
        let mut start = 0;
        SegmentPlan {
            segments: segments
                .iter()
                .enumerate()
                .map(|(index, &(num_insns, heights))| {
                    let hint = SegmentHint {
                        trace_heights: heights.to_vec(),
                        start: boundary,
                        end: boundary,
                    };
                    let spec = SegmentSpec {
                        index: index as u32,
                        instret_start: start,
                        num_insns,
                        memory_estimate_bytes: 0,
                        backend_hint: serde_json::to_value(hint).unwrap(),
                        checkpoint: None,
                        trace_size: None,
                    };
                    start += num_insns;
                    spec
                })
                .collect(),
            public_values: vec![],
        }
    }

    #[test]
    fn larger_heights_refill_segments_ignoring_fixed_size_tables() {
        // Height 4 (16 rows): chip 0 is a fixed table of 256 rows, chip 1 grows one row per
        // instruction; 56 instructions in 4 segments.
        let executed = plan(&[
            (16, [256, 16]),
            (16, [256, 16]),
            (16, [256, 16]),
            (8, [256, 8]),
        ]);
        assert_eq!(predict_segments(&executed, 4, 4), Some(vec![16, 16, 16, 8]));
        assert_eq!(predict_segments(&executed, 4, 5), Some(vec![32, 24]));
        assert_eq!(predict_segments(&executed, 4, 6), Some(vec![56]));
        // A split inside a planned segment: height 5 from segments of 12 rows each.
        let uneven = plan(&[
            (12, [256, 12]),
            (12, [256, 12]),
            (12, [256, 12]),
            (4, [256, 4]),
        ]);
        assert_eq!(predict_segments(&uneven, 4, 5), Some(vec![32, 8]));
        assert_eq!(
            predict_segments(&executed, 5, 4),
            None,
            "smaller heights need execution"
        );
    }

    #[test]
    fn segments_the_logup_limit_would_end_are_not_predicted() {
        let with_interactions = |cells: u64| {
            let mut p = plan(&[
                (16, [256, 16]),
                (16, [256, 16]),
                (16, [256, 16]),
                (8, [256, 8]),
            ]);
            for s in &mut p.segments {
                s.trace_size = Some(TraceSize {
                    interaction_cells: cells * s.num_insns / 16,
                    ..Default::default()
                });
            }
            p
        };
        // At height 5 the limit is 2^11 interactions: two segments of 500 merge within it.
        let light = with_interactions(500);
        assert_eq!(predict_segments(&light, 4, 5), Some(vec![32, 24]));
        assert_eq!(predict_segments(&light, 4, 6), Some(vec![56]));
        // Two of 1,100 would pass it: the segmentation would end them earlier.
        let heavy = with_interactions(1_100);
        assert_eq!(predict_segments(&heavy, 4, 5), None);
        // At height 6 (2^12) all of it fits one segment.
        assert_eq!(predict_segments(&heavy, 4, 6), Some(vec![56]));
    }
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
