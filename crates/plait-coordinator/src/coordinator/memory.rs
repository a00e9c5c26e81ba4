//! Memory needs: what a task is assumed to need before it is handed out, from the operator's
//! profiles, the backend's estimate and, once enough trusted workers measured it, their reports.

use std::time::Instant;

use plait_core::{
    cost::{DeviceProfile, TraceCostFit},
    AggLayer, DeviceKind,
};
use plait_prover::{KeySetId, ProvingParams};

use crate::{job::TaskTiming, store::StoreOp};

use super::Coordinator;
use crate::error::CoordinatorError;
use crate::memory_reports::NodeMemoryReports;

impl Coordinator {
    /// The most memory any live worker advertised; `None` if none is live or one advertised no
    /// limit (it takes any task).
    pub(super) fn largest_live_worker_memory(&self) -> Option<u64> {
        let recent = self.live_window();
        let seen = self.workers_seen.lock().expect("workers lock");
        let live: Vec<u64> = seen
            .values()
            .filter(|w| w.at.elapsed() <= recent)
            .map(|w| w.memory_bytes)
            .collect();
        if live.is_empty() || live.contains(&0) {
            return None;
        }
        live.into_iter().max()
    }

    /// The memory needs learned from workers' peaks, for the operator.
    pub fn memory_needs(&self) -> Vec<plait_api::MemoryNeedRecord> {
        let now = Instant::now();
        let min_reports = self.min_memory_reports();
        let known = self.node_memory.lock().expect("node memory lock");
        let mut needs: Vec<plait_api::MemoryNeedRecord> = known
            .iter()
            .filter_map(|((key_set, phase), reports)| {
                let need_bytes = reports.need(min_reports, now)?;
                let reporters = reports.reporters(now);
                Some(plait_api::MemoryNeedRecord {
                    key_set: *key_set,
                    phase: phase.clone(),
                    need_bytes,
                    reporters: if reporters >= min_reports {
                        reporters as u32
                    } else {
                        0
                    },
                })
            })
            .collect();
        needs.sort_by(|a, b| {
            (
                a.key_set.vm_config.name(),
                a.key_set.segment_height,
                &a.phase,
            )
                .cmp(&(
                    b.key_set.vm_config.name(),
                    b.key_set.segment_height,
                    &b.phase,
                ))
        });
        needs
    }

    /// Forgets every learned memory need, in memory and in the store: tasks go by the
    /// operator's profiles or the backend's estimate again until workers report anew.
    pub async fn forget_memory_needs(&self) -> Result<(), CoordinatorError> {
        self.node_memory.lock().expect("node memory lock").clear();
        self.outbox
            .lock()
            .expect("outbox lock")
            .push(StoreOp::ForgetMemoryNeeds);
        self.flush().await?;
        self.work_available.notify_waiters();
        Ok(())
    }

    /// Where a phase's memory need comes from, for messages.
    pub(super) fn memory_need_source(
        &self,
        params: &ProvingParams,
        program: &str,
        layer: Option<AggLayer>,
    ) -> String {
        let phase = need_key(program, layer);
        let measured = self.node_memory.lock().expect("node memory lock");
        let min_reports = self.min_memory_reports();
        let now = Instant::now();
        match measured.get(&(params.key_set(), phase)) {
            Some(reports) if reports.reporters(now) >= min_reports => format!(
                "the median of the peaks {} workers measured, weighted by their accepted \
                 results; `plait workers reset-needs` forgets it",
                reports.reporters(now)
            ),
            Some(reports) if reports.need(min_reports, now).is_some() => {
                "as workers measured it before a restart; `plait workers reset-needs` \
                 forgets it"
                    .into()
            }
            _ if layer.is_none() && !self.segment_memory_fits(params).is_empty() => {
                "each segment's trace size, by the calibrated profile's fit".into()
            }
            _ if self.profile_peak(params, layer).is_some() => {
                "the peak measured when this machine was calibrated".into()
            }
            _ if layer.is_some()
                && cpu_profiles(&self.config, params).any(costs_nodes_by_bytes) =>
            {
                "each node's children and their predicted proof sizes, by the calibrated profile"
                    .into()
            }
            _ if layer.is_some() => "the backend's estimate".into(),
            _ => "the backend's estimate of each segment".into(),
        }
    }

    /// Reports, in each running job's status and event log, ready tasks that no live worker
    /// has the memory for (the reaper calls it every 10 s).
    pub async fn report_unplaceable_tasks(&self) -> Result<(), CoordinatorError> {
        let largest = self.largest_live_worker_memory();
        let need = |p: &ProvingParams, program: &str, layer: Option<AggLayer>| {
            self.memory_need(p, program, layer)
        };
        let source = |p: &ProvingParams, program: &str, layer: Option<AggLayer>| {
            self.memory_need_source(p, program, layer)
        };
        let now = Instant::now();
        {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            for job in jobs.values_mut() {
                job.check_placeable(largest, &need, &source, now);
                self.collect_writes(job);
            }
        }
        self.flush().await
    }

    /// The memory each other worker that asked for work within a lease period advertised.
    /// The memory of every other live worker, and whether it is trusted (see
    /// [`CoordinatorConfig::trusted_after_accepted`]).
    pub(super) fn other_live_workers(&self, except: &str) -> Vec<(u64, bool)> {
        let recent = self.live_window();
        let live: Vec<(String, u64)> = {
            let seen = self.workers_seen.lock().expect("workers lock");
            seen.iter()
                .filter(|(id, w)| id.as_str() != except && w.at.elapsed() <= recent)
                .map(|(id, w)| (id.clone(), w.memory_bytes))
                .collect()
        };
        live.into_iter()
            .map(|(id, memory)| (memory, self.is_trusted(&id)))
            .collect()
    }

    /// Learns from a task's measured peak memory (already bounded by what its worker
    /// advertised), per key set, phase and program (see [`need_key`]). A changed need is
    /// stored with the result's next flush.
    pub(super) fn record_peak_memory(&self, keys: KeySetId, program: &str, t: &TaskTiming) {
        let peak = t.meta.process_peak_rss_bytes;
        // A GPU prover's host memory says nothing of what a CPU prover needs.
        if peak == 0 || t.meta.device_peak_bytes > 0 {
            return;
        }
        // Weighted by the worker's accepted results, this one included.
        let weight = self
            .tasks_done
            .lock()
            .expect("tasks done lock")
            .get(&t.worker)
            .copied()
            .unwrap_or(0)
            + 1;
        let now = Instant::now();
        let mut known = self.node_memory.lock().expect("node memory lock");
        let phase = match t.phase.as_str() {
            "segments" => need_key(program, None),
            layer => format!("{layer}:{program}"),
        };
        let reports = known
            .entry((keys, phase.clone()))
            .or_insert_with(NodeMemoryReports::new);
        let min_reports = self.min_memory_reports();
        let before = reports.need(min_reports, now);
        reports.add(&t.worker, peak, weight, now);
        let need = reports.need(min_reports, now);
        if let Some(need) = need.filter(|_| need != before) {
            self.outbox
                .lock()
                .expect("outbox lock")
                .push(StoreOp::NodeMemory {
                    keys,
                    layer: phase,
                    peak_bytes: need,
                });
        }
    }

    /// What a task of `layer` (`None`: a segment of `program`) is assumed to need: what
    /// workers measured for that phase and key set ([`NodeMemoryReports`]), else for a node
    /// the backend's figure. Before any is learned, the peak the planner's own profiles (the
    /// operator's, never a worker's) measured for the phase at that height; then the
    /// backend's figure. A segment needs at least its floor besides (see
    /// [`crate::job::Job::segment_floor`]: its trace size by the profiles' fit, and the
    /// backend's estimate, which OpenVM puts far below the measured peak).
    pub(super) fn memory_need(
        &self,
        params: &ProvingParams,
        program: &str,
        layer: Option<AggLayer>,
    ) -> u64 {
        let phase = need_key(program, layer);
        let learned = {
            let measured = self.node_memory.lock().expect("node memory lock");
            measured
                .get(&(params.key_set(), phase))
                .and_then(|r| r.need(self.min_memory_reports(), Instant::now()))
        };
        match (learned.or_else(|| self.profile_peak(params, layer)), layer) {
            (Some(need), _) => need,
            (None, Some(layer)) => self.backend.aggregation_memory_estimate(params, layer),
            (None, None) => 0,
        }
    }

    /// How many workers must have measured a phase before their figures set its need: two
    /// (one worker's figure, perhaps a hostile one, must not), or one in a local pool.
    pub(super) fn min_memory_reports(&self) -> usize {
        if self.config.local_machine_memory.is_some() {
            1
        } else {
            2
        }
    }

    /// The largest peak the planner's configured profiles of the job's VM config and of
    /// devices of `kind` measured for a phase at the job's height (device memory for GPUs).
    /// Profiles workers send are not used: a worker must not set what others' tasks need.
    pub(super) fn profile_peak_on(
        &self,
        kind: DeviceKind,
        params: &ProvingParams,
        layer: Option<AggLayer>,
    ) -> Option<u64> {
        let planner = self.config.planner.as_ref()?;
        let config = params.vm_config.name();
        let profiles = planner
            .pool
            .profiles
            .iter()
            .filter(|p| p.vm_config == config && p.device_kind == kind);
        let peaks: Vec<u64> = match layer {
            // A profile with a trace fit costs each segment by its trace size instead (the
            // job's segment floor).
            None => profiles
                .filter(|p| {
                    p.trace_fit().is_none()
                        && p.segments
                            .iter()
                            .any(|s| s.segment_height == params.segment_height)
                })
                .map(|p| p.segment_memory(params.segment_height))
                .collect(),
            // Aggregation proofs are of the same size at every segment height. A CPU profile
            // that costs nodes by their children's proofs places each node by its own
            // prediction instead (the job's node floor): the largest node of a kind it
            // measured (a leaf over zkML-sized proofs, 9.8 GiB) would keep a fib job's leaves
            // (5.2 GiB) from every smaller machine until workers had measured them.
            Some(layer) => profiles
                .filter(|p| kind != DeviceKind::Cpu || !costs_nodes_by_bytes(p))
                .map(|p| p.node_memory_ceiling(layer))
                .collect(),
        };
        peaks.into_iter().filter(|&p| p > 0).max()
    }

    /// The fits of segment memory to trace size of the operator's CPU profiles for the job's
    /// VM config: a job's segments need at least what they predict.
    pub(crate) fn segment_memory_fits(&self, params: &ProvingParams) -> Vec<TraceCostFit> {
        segment_memory_fits(&self.config, params)
    }

    pub(super) fn profile_peak(
        &self,
        params: &ProvingParams,
        layer: Option<AggLayer>,
    ) -> Option<u64> {
        self.profile_peak_on(DeviceKind::Cpu, params, layer)
    }

    /// What a task of `layer` (`None`: a segment) needs of a GPU's memory: the device peak the
    /// planner's GPU profiles measured, else for a node the backend's figure; a segment
    /// needs at least the backend's estimate of it (see [`Job::lease_next`]). Workers'
    /// host-memory reports say nothing of it and are not used.
    pub(super) fn device_memory_need(
        &self,
        params: &ProvingParams,
        layer: Option<AggLayer>,
    ) -> u64 {
        match (self.profile_peak_on(DeviceKind::Gpu, params, layer), layer) {
            (Some(need), _) => need,
            (None, Some(layer)) => self.backend.aggregation_memory_estimate(params, layer),
            (None, None) => 0,
        }
    }
}

/// The key a phase's learned need is kept under: the layer's name (or `segments`), `:` and
/// the program's SHA-256. Tasks of one phase differ between programs: a height-19 zkML segment
/// needs twice a fib one, and the nodes above it verify proofs twice as large (an
/// internal-for-leaf node over zkML leaves peaked at 6.2 GiB, over small fib ones at 2.1).
pub(crate) fn need_key(program: &str, layer: Option<AggLayer>) -> String {
    match layer {
        Some(layer) => format!("{layer}:{program}"),
        None => format!("segments:{program}"),
    }
}

/// See [`Coordinator::segment_memory_fits`].
pub(super) fn segment_memory_fits(
    config: &super::CoordinatorConfig,
    params: &ProvingParams,
) -> Vec<TraceCostFit> {
    cpu_profiles(config, params)
        .filter_map(|p| p.trace_fit())
        .collect()
}

/// The operator's CPU profiles for the job's VM config that can cost a node by its children's
/// proof sizes (format 3): a node needs at least what they predict (see `Job::node_floor`).
pub(super) fn node_profiles(
    config: &super::CoordinatorConfig,
    params: &ProvingParams,
) -> Vec<DeviceProfile> {
    cpu_profiles(config, params)
        .filter(|p| costs_nodes_by_bytes(p))
        .cloned()
        .collect()
}

/// Whether a profile can cost a node by its children's predicted proof sizes (format 3): it
/// measured leaves over proofs of different sizes, and the proofs of its segments.
fn costs_nodes_by_bytes(p: &DeviceProfile) -> bool {
    p.leaf_cost_fit().is_some() && p.segments.iter().any(|s| s.proof_bytes > 0)
}

/// The operator's CPU profiles for the job's VM config (workers' own profiles never place
/// others' tasks).
fn cpu_profiles<'a>(
    config: &'a super::CoordinatorConfig,
    params: &ProvingParams,
) -> impl Iterator<Item = &'a DeviceProfile> {
    let vm_config = params.vm_config.name();
    config
        .planner
        .iter()
        .flat_map(|planner| &planner.pool.profiles)
        .filter(move |p| p.vm_config == vm_config && p.device_kind == DeviceKind::Cpu)
}
