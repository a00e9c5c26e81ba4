//! Which ready tasks a worker can hold: the summary of ready tasks by need, so that a claim that
//! fits nothing costs no walk, and the memory each task needs.

//! accepted proofs. Plain data with
//! synchronous methods; the coordinator holds it under a lock and does all slow work (proof
//! checks, finalization) outside it.

use std::time::Instant;

use plait_core::{cost::DeviceProfile, AggLayer, ReadyChange, TaskId, TaskKind};
use plait_prover::ProvingParams;

use super::{Job, ReadySummary};

impl Job {
    /// Looks for ready tasks that no live worker has the memory for (`largest`: the most any
    /// live worker advertised; `None` when one advertised no limit or none is live), and says
    /// so in the status and, when it starts, in the event log, instead of letting them wait
    /// silently. `source` says where a phase's need comes from.
    pub fn check_placeable(
        &mut self,
        largest: Option<u64>,
        need: &dyn Fn(&ProvingParams, &str, Option<AggLayer>) -> u64,
        source: &dyn Fn(&ProvingParams, &str, Option<AggLayer>) -> String,
        now: Instant,
    ) {
        let mut stuck: Vec<(String, u64, String)> = Vec::new();
        if let (Some(largest), true) = (largest, self.is_running()) {
            for task in self.graph.ready_tasks() {
                let layer = match self.graph.kind(task) {
                    Ok(TaskKind::Aggregate { layer, .. }) => Some(layer),
                    _ => None,
                };
                let phase = self.phase(task);
                if stuck.iter().any(|(p, ..)| *p == phase) {
                    continue;
                }
                let required = self.memory_need(task, need);
                if required > largest {
                    let source = source(&self.params, &self.program.digest, layer);
                    stuck.push((phase, required, source));
                }
            }
        }
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let report = (!stuck.is_empty()).then(|| {
            let what: Vec<String> = stuck
                .iter()
                .map(|(phase, required, source)| {
                    format!("{phase} tasks need {:.1} GiB ({source})", gib(*required))
                })
                .collect();
            format!(
                "{}; the largest live worker advertises {:.1} GiB, so they wait",
                what.join(", "),
                gib(largest.unwrap_or(0))
            )
        });
        if report.is_some() && report != self.waiting_for_memory {
            self.log(
                now,
                format!(
                    "no live worker can take ready tasks: {}",
                    report.clone().unwrap_or_default()
                ),
            );
        }
        self.waiting_for_memory = report;
    }

    /// The task's kind, as metrics label it (`segment`, `leaf`, … `wrap`).
    pub fn task_kind(&self, task: TaskId) -> &'static str {
        match self.graph.kind(task) {
            Ok(TaskKind::Aggregate { layer, .. }) => plait_core::cost::node_kind(layer),
            _ => "segment",
        }
    }

    /// How many ready tasks of each kind the job has.
    pub fn ready_by_kind(&mut self) -> std::collections::BTreeMap<&'static str, i64> {
        if !self.is_running() {
            return Default::default();
        }
        let summary = self.ready_summary();
        summary
            .by_kind
            .iter()
            .map(|(&k, &n)| (k, n as i64))
            .collect()
    }

    /// The ready tasks in brief, brought up to date with the graph's changes since last asked.
    pub(super) fn ready_summary(&mut self) -> &ReadySummary {
        let logged = self.graph.take_ready_changes();
        let changes: Vec<(TaskId, bool)> = match self.ready_summary {
            Some(_) => logged
                .into_iter()
                .map(|change| match change {
                    ReadyChange::Ready(task) => (task, true),
                    ReadyChange::NotReady(task) => (task, false),
                })
                .collect(),
            // The graph's log starts with the first call: begin from the ready set itself.
            None => self.graph.ready_tasks().map(|task| (task, true)).collect(),
        };
        let mut summary = self.ready_summary.take().unwrap_or_default();
        for (task, ready) in changes {
            // Counts that reach 0 leave their map at once: a claim costs no sweep of them.
            fn step<K: Ord>(counts: &mut std::collections::BTreeMap<K, usize>, key: K, up: bool) {
                use std::collections::btree_map::Entry;
                match (counts.entry(key), up) {
                    (Entry::Occupied(mut n), true) => *n.get_mut() += 1,
                    (Entry::Vacant(n), true) => {
                        n.insert(1);
                    }
                    (Entry::Occupied(n), false) if *n.get() <= 1 => {
                        n.remove();
                    }
                    (Entry::Occupied(mut n), false) => *n.get_mut() -= 1,
                    (Entry::Vacant(_), false) => {}
                }
            }
            step(&mut summary.by_kind, self.task_kind(task), ready);
            match self.graph.kind(task) {
                Ok(TaskKind::ProveSegment { segment }) => {
                    let floor = self.segment_floor(segment);
                    step(&mut summary.segment_estimates, floor, ready);
                }
                Ok(TaskKind::Aggregate { layer, .. }) => {
                    // The floor the node was counted with, not one recomputed later: its
                    // children may have been proven again meanwhile, with other sizes.
                    let floor = if ready {
                        let floor = self.node_floor(task);
                        summary.node_floors.insert(task, floor);
                        floor
                    } else {
                        summary.node_floors.remove(&task).unwrap_or(0)
                    };
                    step(&mut summary.nodes, (layer, floor), ready);
                }
                Err(_) => {}
            }
        }
        self.ready_summary.insert(summary)
    }

    /// Whether some ready task needs no more than `capacity` bytes ([`Self::memory_need`]),
    /// from the summary: the smallest segment floor, and each ready layer's need with the
    /// floors of its ready nodes.
    pub(super) fn fits_a_ready_task(
        &mut self,
        capacity: u64,
        need: &dyn Fn(&ProvingParams, &str, Option<AggLayer>) -> u64,
    ) -> bool {
        let params = self.params;
        let program = self.program.digest.clone();
        let summary = self.ready_summary();
        let smallest_segment = summary.segment_estimates.keys().next();
        smallest_segment
            .map(|&floor| floor.max(need(&params, &program, None)))
            .into_iter()
            .chain(
                summary
                    .nodes
                    .keys()
                    .map(|&(layer, floor)| floor.max(need(&params, &program, Some(layer)))),
            )
            .any(|n| n <= capacity)
    }

    pub(super) fn phase(&self, task: TaskId) -> String {
        match self.graph.kind(task) {
            Ok(TaskKind::Aggregate { layer, .. }) => layer.to_string(),
            _ => "segments".into(),
        }
    }

    /// Memory a task needs (0: unknown), from what `need` says for its phase (peaks workers
    /// measured, or the backend's figure for a node), and at least the task's floor
    /// ([`Self::segment_floor`], [`Self::node_floor`]).
    pub(super) fn memory_need(
        &self,
        task: TaskId,
        need: &dyn Fn(&ProvingParams, &str, Option<AggLayer>) -> u64,
    ) -> u64 {
        self.memory_floor(task).max(self.phase_need(task, need))
    }

    /// What `need` says for the task's phase (0 for a task not in the graph).
    pub(super) fn phase_need(
        &self,
        task: TaskId,
        need: &dyn Fn(&ProvingParams, &str, Option<AggLayer>) -> u64,
    ) -> u64 {
        let layer = match self.graph.kind(task) {
            Ok(TaskKind::ProveSegment { .. }) => None,
            Ok(TaskKind::Aggregate { layer, .. }) => Some(layer),
            Err(_) => return 0,
        };
        need(&self.params, &self.program.digest, layer)
    }

    /// The least the task is assumed to need, from the operator's profiles alone
    /// ([`Self::segment_floor`], [`Self::node_floor`]; 0 for a task not in the graph). A ready
    /// node's floor is the one the ready summary already worked out: a claim tests many ready
    /// tasks, and a node's floor walks its whole subtree.
    pub(super) fn memory_floor(&self, task: TaskId) -> u64 {
        match self.graph.kind(task) {
            Ok(TaskKind::ProveSegment { segment }) => self.segment_floor(segment),
            Ok(TaskKind::Aggregate { .. }) => self
                .ready_summary
                .as_ref()
                .and_then(|summary| summary.node_floors.get(&task).copied())
                .unwrap_or_else(|| self.node_floor(task)),
            Err(_) => 0,
        }
    }

    /// The least a node is assumed to need: what the operator's calibrated profiles predict
    /// from its children count and the predicted sizes of its children's proofs (a leaf over
    /// zkML segments needs 1.7 times one over as many fib segments; an internal-recursive node
    /// over three full children 4.6 GiB, over one 1.4), the most of any profile. The sizes are
    /// predicted from the segments' trace sizes, which the coordinator's own execution
    /// measured, up the tree through the profiles' proof sizes, never taken from the proofs
    /// workers sent: a worker could pad its proof to make the node above it too large for
    /// every other worker. Where they cannot be predicted (a segment without a trace size),
    /// the most the profile measured a node of the kind to need.
    pub(crate) fn node_floor(&self, task: TaskId) -> u64 {
        let Ok(TaskKind::Aggregate { layer, .. }) = self.graph.kind(task) else {
            return 0;
        };
        let Ok(children) = self.graph.children(task) else {
            return 0;
        };
        self.node_profiles
            .iter()
            .map(|profile| match self.predicted_child_bytes(profile, task) {
                Some(bytes) => profile.node_memory(layer, children.len() as u32, Some(bytes)),
                None => profile.node_memory_ceiling(layer),
            })
            .max()
            .unwrap_or(0)
    }

    /// The seconds the operator's profile predicts `task` takes, where the job has exactly one
    /// profile (with several, which one the task's worker matches is not known here): a
    /// segment's from its trace size, a node's from its children and their predicted proof
    /// sizes; without the prover load a worker's first node of a kind also pays.
    pub(crate) fn predicted_seconds(&self, task: TaskId) -> Option<f64> {
        let [profile] = self.node_profiles.as_slice() else {
            return None;
        };
        let height = self.params.segment_height;
        match self.graph.kind(task).ok()? {
            TaskKind::ProveSegment { segment } => {
                let spec = self.segments.get(segment as usize)?;
                Some(profile.segment_seconds_sized(height, spec.num_insns, spec.trace_size))
            }
            TaskKind::Aggregate { layer, .. } => {
                let children = self.graph.children(task).ok()?.len() as u32;
                let bytes = self.predicted_child_bytes(profile, task);
                Some(profile.node_seconds(layer, children, bytes))
            }
        }
    }

    /// The size `profile` predicts for `task`'s proof: a segment's from its trace size, a
    /// node's from its children's, bottom-up (work in the task's subtree, a few thousand
    /// steps for the largest jobs' root). `None` where a segment's trace size is unknown.
    fn predicted_proof_bytes(&self, profile: &DeviceProfile, task: TaskId) -> Option<u64> {
        match self.graph.kind(task).ok()? {
            TaskKind::ProveSegment { segment } => {
                let size = self.segments.get(segment as usize)?.trace_size?;
                profile.segment_proof_bytes(self.params.segment_height, Some(size))
            }
            TaskKind::Aggregate { layer, .. } => {
                let children = self.graph.children(task).ok()?.len() as u32;
                let bytes = self.predicted_child_bytes(profile, task)?;
                profile.node_proof_bytes(layer, children, Some(bytes))
            }
        }
    }

    /// The summed sizes `profile` predicts for a node's children's proofs.
    fn predicted_child_bytes(&self, profile: &DeviceProfile, node: TaskId) -> Option<u64> {
        self.graph
            .children(node)
            .ok()?
            .iter()
            .map(|&child| self.predicted_proof_bytes(profile, child))
            .sum()
    }

    /// The summed size of a node's children's accepted proofs; `None` until all are accepted.
    pub(crate) fn child_proof_bytes(&self, task: TaskId) -> Option<u64> {
        let children = self.graph.children(task).ok()?;
        children
            .iter()
            .map(|child| self.proof_sizes.get(child).copied())
            .sum()
    }

    /// The least a segment is assumed to need: the backend's estimate of it, and what each
    /// of the operator's calibrated profiles predicts from its trace size (the segment's own
    /// chip mix, which a per-height figure cannot see).
    pub(crate) fn segment_floor(&self, segment: u32) -> u64 {
        let spec = &self.segments[segment as usize];
        let predicted = spec.trace_size.map_or(0, |size| {
            self.segment_fits
                .iter()
                .map(|fit| fit.memory_bytes(size))
                .max()
                .unwrap_or(0)
        });
        spec.memory_estimate_bytes.max(predicted)
    }

    /// What the tasks leased now need together (see [`Self::memory_need`]).
    pub fn leased_memory_need(
        &self,
        need: &dyn Fn(&ProvingParams, &str, Option<AggLayer>) -> u64,
    ) -> u64 {
        self.leases
            .keys()
            .map(|&task| self.memory_need(task, need))
            .sum()
    }
}
