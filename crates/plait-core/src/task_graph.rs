//! The task graph of one job: every segment proof and every aggregation node is one task, and a
//! node becomes ready the moment its own children are done, not when its whole layer is.
//!
//! The graph grows while the program executes: each segment becomes a task as soon as it is
//! cut ([`TaskGraph::add_segment`]), and an aggregation node exists as soon as all its children
//! do. Until the execution ends only full nodes can exist; [`TaskGraph::seal`] then adds the
//! partial nodes at the right edge and the layers above them, up to the wrap node. Every node
//! sits where [`AggTree::plan`] puts it for the final number of segments.

use serde::{Deserialize, Serialize};

use crate::{AggLayer, AggTree, AggTreeShape, TaskId, TreeShapeError};

/// What a task produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TaskKind {
    /// Proves one segment of the execution.
    ProveSegment {
        /// The segment's index in execution order.
        segment: u32,
    },
    /// Joins the proofs of its children into one recursion proof.
    Aggregate {
        /// The layer of the aggregation tree the node sits in.
        layer: AggLayer,
        /// The node's position in its layer, from the left.
        index: u32,
    },
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    /// Some children are not done yet.
    Waiting,
    /// Can be handed to a worker.
    Ready,
    /// A worker is on it.
    Running,
    /// Its result was verified and accepted.
    Done,
}

/// A task graph call that does not apply to the named task.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskGraphError {
    /// No such task (yet).
    #[error("{0} does not exist in this job")]
    UnknownTask(TaskId),
    /// The task is not in the state the call needs.
    #[error("{task} is {state:?}, expected {expected:?}")]
    WrongState {
        /// The task.
        task: TaskId,
        /// Its state.
        state: TaskState,
        /// The state the call needs.
        expected: TaskState,
    },
}

#[derive(Clone, Debug)]
struct TaskEntry {
    kind: TaskKind,
    state: TaskState,
    /// Children in execution order; empty for segment tasks.
    children: Vec<TaskId>,
    parent: Option<TaskId>,
    /// Half-open range of segments the task's proof covers.
    covers: (u32, u32),
}

/// One level of the tree: segments (level 0), leaves, internal-for-leaf nodes, then each
/// internal-recursive depth.
#[derive(Clone, Debug, Default)]
struct Level {
    members: Vec<TaskId>,
    /// How many members (from the left) already have a parent.
    grouped: usize,
}

/// The dependency graph of one job's tasks and the state of each.
///
/// Task ids are given in creation order: a segment's task when it is cut, a node's when its last
/// child exists. The same sequence of segments and seal always gives the same ids, so a graph
/// is rebuilt from its number of segments (and whether it is sealed).
#[derive(Clone, Debug)]
pub struct TaskGraph {
    shape: AggTreeShape,
    tasks: Vec<TaskEntry>,
    levels: Vec<Level>,
    /// Ready tasks, in id order: the scheduling order.
    ready: ReadySet,
    /// (phase, done, total), segments first, then the layers bottom-up.
    phases: Vec<(String, usize, usize)>,
    root: Option<TaskId>,
    sealed: bool,
}

/// The ready tasks, and (once asked for) a log of how the set changed, so that what is derived
/// from it can follow without a walk of every ready task.
#[derive(Clone, Debug, Default)]
struct ReadySet {
    tasks: std::collections::BTreeSet<TaskId>,
    log: Option<Vec<ReadyChange>>,
}

/// A task that became ready, or stopped being ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyChange {
    /// The task became ready.
    Ready(TaskId),
    /// The task stopped being ready (leased, or discarded back to waiting).
    NotReady(TaskId),
}

impl ReadySet {
    fn insert(&mut self, task: TaskId) {
        if self.tasks.insert(task) {
            if let Some(log) = &mut self.log {
                log.push(ReadyChange::Ready(task));
            }
        }
    }

    fn remove(&mut self, task: &TaskId) {
        if self.tasks.remove(task) {
            if let Some(log) = &mut self.log {
                log.push(ReadyChange::NotReady(*task));
            }
        }
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }

    fn iter(&self) -> impl Iterator<Item = &TaskId> + '_ {
        self.tasks.iter()
    }
}

impl TaskGraph {
    /// An empty graph whose segments are still to come.
    pub fn open(shape: AggTreeShape) -> Result<Self, TreeShapeError> {
        // Validates the shape (a one-segment plan exists for every valid shape).
        AggTree::plan(1, shape)?;
        Ok(Self {
            shape,
            tasks: Vec::new(),
            levels: vec![Level::default()],
            ready: Default::default(),
            phases: vec![("segments".to_string(), 0, 0)],
            root: None,
            sealed: false,
        })
    }

    /// Builds the whole graph for `num_segments` segments joined by a tree of the given shape.
    /// All segment tasks start ready.
    pub fn new(num_segments: u32, shape: AggTreeShape) -> Result<Self, TreeShapeError> {
        let mut graph = Self::open(shape)?;
        for _ in 0..num_segments {
            graph.add_segment();
        }
        graph.seal()?;
        Ok(graph)
    }

    /// Adds the next segment's task (ready), and the nodes it completes. Returns the tasks that
    /// became ready. Panics if the graph is sealed (a caller bug: execution has ended).
    pub fn add_segment(&mut self) -> Vec<TaskId> {
        assert!(!self.sealed, "no segment can follow the end of execution");
        let segment = self.levels[0].members.len() as u32;
        let mut ready = vec![self.push(
            TaskKind::ProveSegment { segment },
            Vec::new(),
            (segment, segment + 1),
        )];
        self.levels[0].members.push(ready[0]);
        ready.extend(self.group_full(0));
        ready
    }

    /// Records that execution has ended: adds the partial nodes and the layers above, up to the
    /// wrap node. Returns the tasks that became ready. Sealing twice does nothing.
    pub fn seal(&mut self) -> Result<Vec<TaskId>, TreeShapeError> {
        if self.sealed {
            return Ok(Vec::new());
        }
        if self.levels[0].members.is_empty() {
            return Err(TreeShapeError::NoSegments);
        }
        self.sealed = true;
        let mut ready = Vec::new();
        let mut level = 0;
        loop {
            let count = self.levels[level].members.len();
            // OpenVM always runs internal-recursive depth 0 (level 3); above it, a level of
            // one node is the top, and the wrap node re-proves it.
            if level >= 3 && count == 1 {
                let top = self.levels[level].members[0];
                let wrap = self.node(level + 1, vec![top]);
                self.root = Some(wrap);
                ready.extend(self.readiness(wrap));
                return Ok(ready);
            }
            ready.extend(self.group_full(level));
            let level_of = &self.levels[level];
            if level_of.grouped < level_of.members.len() {
                let rest = level_of.members[level_of.grouped..].to_vec();
                self.levels[level].grouped = self.levels[level].members.len();
                let node = self.node(level + 1, rest);
                ready.extend(self.readiness(node));
            }
            level += 1;
        }
    }

    /// Whether execution has ended: the number of segments, and so the tree, is final.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Segments added so far.
    pub fn num_segments(&self) -> u32 {
        self.levels[0].members.len() as u32
    }

    /// The task proving segment `index`, if that segment exists yet.
    pub fn segment_task(&self, index: u32) -> Option<TaskId> {
        self.levels[0].members.get(index as usize).copied()
    }

    /// Every task id, segments first (in order), then the aggregation layers bottom-up, each
    /// left to right: the numbering of stores from before segments were streamed.
    pub fn in_layer_order(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = (0..self.tasks.len() as u32).map(TaskId).collect();
        ids.sort_by_key(|t| match self.tasks[t.0 as usize].kind {
            TaskKind::ProveSegment { segment } => ((0, 0), segment),
            TaskKind::Aggregate { layer, index } => (phase_rank(&layer.to_string()), index),
        });
        ids
    }

    /// The tree as planned for the final number of segments (sealed graphs only).
    pub fn tree(&self) -> Option<AggTree> {
        self.sealed
            .then(|| AggTree::plan(self.num_segments(), self.shape).expect("valid shape"))
    }

    /// Tasks in the graph so far.
    pub fn num_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Returns the wrap task, whose proof is the job's final proof, once the graph is sealed.
    pub fn root(&self) -> Option<TaskId> {
        self.root
    }

    /// What the task proves.
    pub fn kind(&self, task: TaskId) -> Result<TaskKind, TaskGraphError> {
        Ok(self.entry(task)?.kind)
    }

    /// Where the task stands.
    pub fn state(&self, task: TaskId) -> Result<TaskState, TaskGraphError> {
        Ok(self.entry(task)?.state)
    }

    /// Returns the task's children in execution order (empty for a segment task).
    pub fn children(&self, task: TaskId) -> Result<&[TaskId], TaskGraphError> {
        Ok(&self.entry(task)?.children)
    }

    /// Returns the half-open range of segments the task's proof covers.
    pub fn covers(&self, task: TaskId) -> Result<(u32, u32), TaskGraphError> {
        Ok(self.entry(task)?.covers)
    }

    /// How many tasks are ready.
    pub fn ready_count(&self) -> usize {
        self.ready.len()
    }

    /// The changes of the ready set since the last call, in order. The first call starts the
    /// log and returns nothing: take the ready tasks as they are then, and follow the changes.
    pub fn take_ready_changes(&mut self) -> Vec<ReadyChange> {
        self.ready.log.replace(Vec::new()).unwrap_or_default()
    }

    /// Returns every ready task, oldest first.
    pub fn ready_tasks(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.ready.iter().copied()
    }

    /// The scheduling rule the coordinator and the simulator share: the first ready task, in
    /// the order of [`Self::ready_tasks`], that `fits` accepts. Costs O(log n) plus one call of
    /// `fits` per ready task it passes over.
    pub fn next_ready(&self, mut fits: impl FnMut(TaskId) -> bool) -> Option<TaskId> {
        self.ready_tasks().find(|t| fits(*t))
    }

    /// Whether the root (wrap) task is accepted: the job is proven.
    pub fn is_complete(&self) -> bool {
        self.root
            .is_some_and(|root| self.tasks[root.0 as usize].state == TaskState::Done)
    }

    /// Hands a ready task to a worker.
    pub fn start(&mut self, task: TaskId) -> Result<(), TaskGraphError> {
        self.transition(task, TaskState::Ready, TaskState::Running)?;
        self.ready.remove(&task);
        Ok(())
    }

    /// Puts a running task back to ready, after its worker failed or its result was rejected.
    pub fn retry(&mut self, task: TaskId) -> Result<(), TaskGraphError> {
        self.transition(task, TaskState::Running, TaskState::Ready)?;
        self.ready.insert(task);
        Ok(())
    }

    /// Records a running task's result as accepted. Returns the parent if this made it ready.
    pub fn complete(&mut self, task: TaskId) -> Result<Option<TaskId>, TaskGraphError> {
        self.transition(task, TaskState::Running, TaskState::Done)?;
        let phase = self.phase_index(task);
        self.phases[phase].1 += 1;
        let Some(parent) = self.tasks[task.0 as usize].parent else {
            return Ok(None);
        };
        Ok(self.readiness(parent).into_iter().next())
    }

    /// Undoes an accepted task whose proof cannot be used: it is ready again, and every
    /// ancestor that was built on it (done, ready or running) waits for it again. Returns each
    /// task whose state changed, with its state before.
    pub fn discard(&mut self, task: TaskId) -> Result<Vec<(TaskId, TaskState)>, TaskGraphError> {
        self.transition(task, TaskState::Done, TaskState::Ready)?;
        self.ready.insert(task);
        let phase = self.phase_index(task);
        self.phases[phase].1 -= 1;
        let mut changed = vec![(task, TaskState::Done)];
        let mut next = self.tasks[task.0 as usize].parent;
        while let Some(ancestor) = next {
            let entry = &mut self.tasks[ancestor.0 as usize];
            let was = entry.state;
            if was == TaskState::Waiting {
                break;
            }
            entry.state = TaskState::Waiting;
            next = entry.parent;
            self.ready.remove(&ancestor);
            if was == TaskState::Done {
                let phase = self.phase_index(ancestor);
                self.phases[phase].1 -= 1;
            }
            changed.push((ancestor, was));
        }
        Ok(changed)
    }

    /// Counts (done, total) per phase: segments first, then each aggregation layer.
    pub fn progress(&self) -> Vec<(String, usize, usize)> {
        self.phases.clone()
    }

    /// Makes `task` ready if it is waiting and all its children are done; returns it if so.
    fn readiness(&mut self, task: TaskId) -> Option<TaskId> {
        let entry = &self.tasks[task.0 as usize];
        let all_done = entry
            .children
            .iter()
            .all(|c| self.tasks[c.0 as usize].state == TaskState::Done);
        if entry.state == TaskState::Waiting && all_done {
            self.tasks[task.0 as usize].state = TaskState::Ready;
            self.ready.insert(task);
            return Some(task);
        }
        None
    }

    /// Gives parents to every full group of ungrouped members at `level`, and so on upwards.
    /// Returns the new nodes that are ready.
    fn group_full(&mut self, mut level: usize) -> Vec<TaskId> {
        let mut ready = Vec::new();
        loop {
            let width = self.width(level + 1);
            let l = &self.levels[level];
            if l.members.len() - l.grouped < width {
                return ready;
            }
            let children = l.members[l.grouped..l.grouped + width].to_vec();
            self.levels[level].grouped += width;
            let node = self.node(level + 1, children);
            ready.extend(self.readiness(node));
            level += 1;
        }
    }

    /// How many children a node of `level` (1 = leaf) takes.
    fn width(&self, level: usize) -> usize {
        if level == 1 {
            self.shape.num_children_leaf as usize
        } else {
            self.shape.num_children_internal as usize
        }
    }

    /// Creates a waiting node at `level` over `children` (and registers it in its level).
    fn node(&mut self, level: usize, children: Vec<TaskId>) -> TaskId {
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, Level::default);
        }
        let layer = match level {
            1 => AggLayer::Leaf,
            2 => AggLayer::InternalForLeaf,
            _ if self.root.is_none() && self.is_wrap_level(level, &children) => AggLayer::Wrap,
            _ => AggLayer::InternalRecursive(level as u32 - 3),
        };
        let index = self.levels[level].members.len() as u32;
        let covers = (
            self.tasks[children[0].0 as usize].covers.0,
            self.tasks[children[children.len() - 1].0 as usize].covers.1,
        );
        let id = self.push(
            TaskKind::Aggregate { layer, index },
            children.clone(),
            covers,
        );
        for child in children {
            self.tasks[child.0 as usize].parent = Some(id);
        }
        self.tasks[id.0 as usize].state = TaskState::Waiting;
        self.ready.remove(&id);
        if layer != AggLayer::Wrap {
            self.levels[level].members.push(id);
        }
        id
    }

    /// Whether a node at `level` over `children` is the wrap node: only when sealing, over the
    /// single node of a level at or above internal-recursive depth 0.
    fn is_wrap_level(&self, level: usize, children: &[TaskId]) -> bool {
        self.sealed
            && level >= 4
            && children.len() == 1
            && self.levels[level - 1].members.len() == 1
    }

    fn push(&mut self, kind: TaskKind, children: Vec<TaskId>, covers: (u32, u32)) -> TaskId {
        let id = TaskId(self.tasks.len() as u32);
        self.tasks.push(TaskEntry {
            kind,
            state: TaskState::Ready,
            children,
            parent: None,
            covers,
        });
        if matches!(kind, TaskKind::ProveSegment { .. }) {
            self.ready.insert(id);
        }
        let phase = phase_name(kind);
        match self.phases.iter_mut().find(|(p, ..)| *p == phase) {
            Some(row) => row.2 += 1,
            None => {
                self.phases.push((phase, 0, 1));
                // Keep layers in order: segments, leaf, internal-for-leaf, recursive depths,
                // wrap.
                self.phases.sort_by_key(|(p, ..)| phase_rank(p));
            }
        }
        id
    }

    fn phase_index(&self, task: TaskId) -> usize {
        let name = phase_name(self.tasks[task.0 as usize].kind);
        self.phases
            .iter()
            .position(|(p, ..)| *p == name)
            .expect("every task's phase is counted")
    }

    fn entry(&self, task: TaskId) -> Result<&TaskEntry, TaskGraphError> {
        self.tasks
            .get(task.0 as usize)
            .ok_or(TaskGraphError::UnknownTask(task))
    }

    fn transition(
        &mut self,
        task: TaskId,
        expected: TaskState,
        to: TaskState,
    ) -> Result<(), TaskGraphError> {
        let state = self.entry(task)?.state;
        if state != expected {
            return Err(TaskGraphError::WrongState {
                task,
                state,
                expected,
            });
        }
        self.tasks[task.0 as usize].state = to;
        Ok(())
    }
}

fn phase_name(kind: TaskKind) -> String {
    match kind {
        TaskKind::ProveSegment { .. } => "segments".to_string(),
        TaskKind::Aggregate { layer, .. } => layer.to_string(),
    }
}

/// Sort key of a phase name: segments, leaf, internal-for-leaf, recursive depths, wrap.
fn phase_rank(phase: &str) -> (u32, u32) {
    match phase {
        "segments" => (0, 0),
        "leaf" => (1, 0),
        "internal-for-leaf" => (2, 0),
        "wrap" => (4, 0),
        other => (
            3,
            other
                .strip_prefix("internal-recursive.")
                .and_then(|d| d.parse().ok())
                .unwrap_or(0),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChildRef;

    fn seg(g: &TaskGraph, i: u32) -> TaskId {
        g.segment_task(i).unwrap()
    }

    #[test]
    fn a_node_is_ready_as_soon_as_its_own_children_are_done() {
        // 8 segments: two leaves of 4. Finishing the first four must release leaf 0 even though
        // leaf 1's segments are still outstanding.
        let mut g = TaskGraph::new(8, AggTreeShape::default()).unwrap();
        let segments: Vec<TaskId> = (0..8).map(|i| seg(&g, i)).collect();
        assert_eq!(g.ready_tasks().collect::<Vec<_>>(), segments);
        for &t in &segments {
            g.start(t).unwrap();
        }
        for &t in &segments[..3] {
            assert_eq!(g.complete(t).unwrap(), None);
        }
        let leaf0 = g.complete(segments[3]).unwrap().expect("leaf 0 released");
        assert_eq!(
            g.kind(leaf0).unwrap(),
            TaskKind::Aggregate {
                layer: AggLayer::Leaf,
                index: 0
            }
        );
        assert_eq!(g.children(leaf0).unwrap(), &segments[..4]);
        assert_eq!(g.ready_tasks().collect::<Vec<_>>(), vec![leaf0]);
    }

    #[test]
    fn the_ready_set_can_be_followed_by_its_changes() {
        let mut g = TaskGraph::new(4, AggTreeShape::default()).unwrap();
        let (first, second) = (seg(&g, 0), seg(&g, 1));
        assert!(g.take_ready_changes().is_empty(), "the log starts here");
        let mut followed: std::collections::BTreeSet<TaskId> = g.ready_tasks().collect();
        g.start(first).unwrap();
        g.start(second).unwrap();
        g.retry(first).unwrap();
        g.complete(second).unwrap();
        let changes = g.take_ready_changes();
        assert_eq!(
            changes[..3],
            [
                ReadyChange::NotReady(first),
                ReadyChange::NotReady(second),
                ReadyChange::Ready(first)
            ]
        );
        for change in changes {
            match change {
                ReadyChange::Ready(t) => assert!(followed.insert(t)),
                ReadyChange::NotReady(t) => assert!(followed.remove(&t)),
            }
        }
        assert_eq!(followed, g.ready_tasks().collect());
        assert!(
            g.take_ready_changes().is_empty(),
            "each change is told once"
        );
    }

    #[test]
    fn a_streamed_graph_is_the_planned_tree() {
        let shapes = [
            AggTreeShape::default(),
            AggTreeShape {
                num_children_leaf: 1,
                num_children_internal: 2,
            },
        ];
        for shape in shapes {
            for n in 1..200 {
                let g = TaskGraph::new(n, shape).unwrap();
                let tree = AggTree::plan(n, shape).unwrap();
                assert_eq!(g.num_tasks(), n as usize + tree.num_nodes(), "n = {n}");
                // Every planned node exists with the same layer, index, coverage and children.
                let mut by_place = std::collections::HashMap::new();
                for t in 0..g.num_tasks() as u32 {
                    if let TaskKind::Aggregate { layer, index } = g.kind(TaskId(t)).unwrap() {
                        by_place.insert((layer, index), TaskId(t));
                    }
                }
                for (pos, layer) in tree.layers.iter().enumerate() {
                    for node in layer {
                        let t = by_place[&(node.layer, node.index)];
                        assert_eq!(g.covers(t).unwrap(), node.covers, "n = {n}, {node:?}");
                        let children: Vec<TaskId> = node
                            .children
                            .iter()
                            .map(|c| match c {
                                ChildRef::Segment(i) => seg(&g, *i),
                                ChildRef::Node(i) => by_place[&(tree.layers[pos - 1][0].layer, *i)],
                            })
                            .collect();
                        assert_eq!(g.children(t).unwrap(), children, "n = {n}, {node:?}");
                    }
                }
                assert_eq!(g.root(), Some(by_place[&(AggLayer::Wrap, 0)]));
            }
        }
    }

    #[test]
    fn nodes_exist_and_run_while_segments_are_still_being_cut() {
        let mut g = TaskGraph::open(AggTreeShape::default()).unwrap();
        for _ in 0..4 {
            let t = g.add_segment()[0];
            g.start(t).unwrap();
            g.complete(t).unwrap();
        }
        // The fourth segment's task made leaf 0, whose children were all done by then.
        let leaf0 = g.ready_tasks().next();
        let leaf0 = leaf0.expect("leaf 0 is ready before the end");
        assert_eq!(g.covers(leaf0).unwrap(), (0, 4));
        assert!(g.root().is_none() && !g.is_complete());
        g.start(leaf0).unwrap();
        g.complete(leaf0).unwrap();
        let fifth = g.add_segment();
        assert_eq!(fifth.len(), 1);
        assert_eq!(
            g.seal().unwrap(),
            Vec::<TaskId>::new(),
            "nothing new is ready"
        );
        let mut done = 0;
        loop {
            let Some(task) = g.ready_tasks().next() else {
                break;
            };
            g.start(task).unwrap();
            g.complete(task).unwrap();
            done += 1;
        }
        assert!(g.is_complete());
        // Segment 4, leaf 1, one internal-for-leaf, internal-recursive.0 and the wrap.
        assert_eq!(done, 5);
        assert!(TaskGraph::open(AggTreeShape::default())
            .unwrap()
            .seal()
            .is_err());
    }

    #[test]
    fn running_every_ready_task_completes_the_job_exactly_once_per_task() {
        for n in [1, 2, 3, 5, 13, 40] {
            let mut g = TaskGraph::new(n, AggTreeShape::default()).unwrap();
            let mut completed = Vec::new();
            while let Some(task) = g.ready_tasks().last() {
                g.start(task).unwrap();
                g.complete(task).unwrap();
                completed.push(task);
            }
            assert!(g.is_complete(), "n = {n}");
            completed.sort();
            completed.dedup();
            assert_eq!(
                completed.len(),
                g.num_tasks(),
                "every task ran exactly once"
            );
        }
    }

    #[test]
    fn a_discarded_proof_is_proven_again_with_every_node_above_it() {
        let mut g = TaskGraph::new(5, AggTreeShape::default()).unwrap();
        while let Some(task) = g.next_ready(|_| true) {
            g.start(task).unwrap();
            g.complete(task).unwrap();
        }
        assert!(g.is_complete());
        let done_before: usize = g.progress().iter().map(|p| p.1).sum();
        let last = seg(&g, 4);
        let changed = g.discard(last).unwrap();
        // The segment, its leaf, and every node up to the root.
        assert_eq!(changed.first(), Some(&(last, TaskState::Done)));
        assert_eq!(changed.last().map(|c| c.0), g.root());
        assert!(changed.iter().all(|(_, was)| *was == TaskState::Done));
        assert_eq!(g.ready_tasks().collect::<Vec<_>>(), vec![last]);
        assert!(!g.is_complete());
        let done_after: usize = g.progress().iter().map(|p| p.1).sum();
        assert_eq!(done_after, done_before - changed.len());
        assert!(
            g.discard(last).is_err(),
            "only an accepted task is discarded"
        );
        // Proving them again completes the job, each once.
        let mut again = 0;
        while let Some(task) = g.next_ready(|_| true) {
            g.start(task).unwrap();
            g.complete(task).unwrap();
            again += 1;
        }
        assert!(g.is_complete());
        assert_eq!(again, changed.len());
    }

    #[test]
    fn illegal_transitions_are_refused() {
        let mut g = TaskGraph::new(2, AggTreeShape::default()).unwrap();
        let (s0, s1) = (seg(&g, 0), seg(&g, 1));
        assert!(matches!(
            g.complete(s0),
            Err(TaskGraphError::WrongState { .. })
        ));
        let leaf = g.children(g.root().unwrap()).unwrap()[0];
        let leaf = g.children(leaf).unwrap()[0];
        let leaf = g.children(leaf).unwrap()[0];
        assert_eq!(g.children(leaf).unwrap(), &[s0, s1]);
        assert!(matches!(
            g.start(leaf),
            Err(TaskGraphError::WrongState {
                state: TaskState::Waiting,
                ..
            })
        ));
        assert_eq!(
            g.start(TaskId(99)),
            Err(TaskGraphError::UnknownTask(TaskId(99)))
        );
        g.start(s0).unwrap();
        g.retry(s0).unwrap();
        assert_eq!(g.state(s0).unwrap(), TaskState::Ready);
    }

    #[test]
    fn progress_counts_per_phase() {
        let mut g = TaskGraph::new(5, AggTreeShape::default()).unwrap();
        let s0 = seg(&g, 0);
        g.start(s0).unwrap();
        g.complete(s0).unwrap();
        let p = g.progress();
        assert_eq!(p[0], ("segments".to_string(), 1, 5));
        assert_eq!(p[1], ("leaf".to_string(), 0, 2));
        assert_eq!(p.last().unwrap(), &("wrap".to_string(), 0, 1));
    }
}
