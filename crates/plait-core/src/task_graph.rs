//! The task graph of one job: every segment proof and every aggregation node is one task, and a
//! node becomes ready the moment its own children are done, not when its whole layer is.

use serde::{Deserialize, Serialize};

use crate::{AggLayer, AggTree, AggTreeShape, ChildRef, TaskId, TreeShapeError};

/// What a task produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TaskKind {
    /// Proves one segment of the execution.
    ProveSegment { segment: u32 },
    /// Joins the proofs of its children into one recursion proof.
    Aggregate { layer: AggLayer, index: u32 },
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskGraphError {
    #[error("{0} does not exist in this job")]
    UnknownTask(TaskId),
    #[error("{task} is {state:?}, expected {expected:?}")]
    WrongState {
        task: TaskId,
        state: TaskState,
        expected: TaskState,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TaskEntry {
    kind: TaskKind,
    state: TaskState,
    /// Children in execution order; empty for segment tasks.
    children: Vec<TaskId>,
    parent: Option<TaskId>,
    /// Half-open range of segments the task's proof covers.
    covers: (u32, u32),
}

/// The dependency graph of one job's tasks and the state of each.
///
/// Task ids are dense: segments first (`task-i` proves segment `i`), then aggregation nodes layer
/// by layer, so the last task is the wrap node whose proof is the job's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskGraph {
    tree: AggTree,
    tasks: Vec<TaskEntry>,
}

impl TaskGraph {
    /// Builds the graph for `num_segments` segments joined by a tree of the given shape. All
    /// segment tasks start ready.
    pub fn new(num_segments: u32, shape: AggTreeShape) -> Result<Self, TreeShapeError> {
        let tree = AggTree::plan(num_segments, shape)?;
        let mut tasks: Vec<TaskEntry> = (0..num_segments)
            .map(|segment| TaskEntry {
                kind: TaskKind::ProveSegment { segment },
                state: TaskState::Ready,
                children: Vec::new(),
                parent: None,
                covers: (segment, segment + 1),
            })
            .collect();
        let mut layer_start = 0usize;
        for layer in &tree.layers {
            let this_start = tasks.len();
            for node in layer {
                let id = TaskId(tasks.len() as u32);
                let children: Vec<TaskId> = node
                    .children
                    .iter()
                    .map(|c| match c {
                        ChildRef::Segment(i) => TaskId(*i),
                        ChildRef::Node(i) => TaskId((layer_start + *i as usize) as u32),
                    })
                    .collect();
                for child in &children {
                    tasks[child.0 as usize].parent = Some(id);
                }
                tasks.push(TaskEntry {
                    kind: TaskKind::Aggregate {
                        layer: node.layer,
                        index: node.index,
                    },
                    state: TaskState::Waiting,
                    children,
                    parent: None,
                    covers: node.covers,
                });
            }
            layer_start = this_start;
        }
        Ok(Self { tree, tasks })
    }

    pub fn tree(&self) -> &AggTree {
        &self.tree
    }

    pub fn num_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Returns the wrap task, whose proof is the job's final proof.
    pub fn root(&self) -> TaskId {
        TaskId(self.tasks.len() as u32 - 1)
    }

    pub fn kind(&self, task: TaskId) -> Result<TaskKind, TaskGraphError> {
        Ok(self.entry(task)?.kind)
    }

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

    /// Returns every ready task, segments first, then lower layers before higher ones.
    pub fn ready_tasks(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.ids()
            .filter(|id| self.tasks[id.0 as usize].state == TaskState::Ready)
    }

    /// The scheduling rule the coordinator and the simulator share: the first ready task, in
    /// the order of [`Self::ready_tasks`], that `fits` accepts.
    pub fn next_ready(&self, mut fits: impl FnMut(TaskId) -> bool) -> Option<TaskId> {
        self.ready_tasks().find(|t| fits(*t))
    }

    pub fn is_complete(&self) -> bool {
        self.tasks[self.root().0 as usize].state == TaskState::Done
    }

    /// Hands a ready task to a worker.
    pub fn start(&mut self, task: TaskId) -> Result<(), TaskGraphError> {
        self.transition(task, TaskState::Ready, TaskState::Running)
    }

    /// Puts a running task back to ready, after its worker failed or its result was rejected.
    pub fn retry(&mut self, task: TaskId) -> Result<(), TaskGraphError> {
        self.transition(task, TaskState::Running, TaskState::Ready)
    }

    /// Records a running task's result as accepted. Returns the parent if this made it ready.
    pub fn complete(&mut self, task: TaskId) -> Result<Option<TaskId>, TaskGraphError> {
        self.transition(task, TaskState::Running, TaskState::Done)?;
        let Some(parent) = self.tasks[task.0 as usize].parent else {
            return Ok(None);
        };
        let all_done = self.tasks[parent.0 as usize]
            .children
            .iter()
            .all(|c| self.tasks[c.0 as usize].state == TaskState::Done);
        if all_done {
            self.tasks[parent.0 as usize].state = TaskState::Ready;
            return Ok(Some(parent));
        }
        Ok(None)
    }

    /// Counts (done, total) per phase: segments first, then each aggregation layer.
    pub fn progress(&self) -> Vec<(String, usize, usize)> {
        let mut rows: Vec<(String, usize, usize)> = Vec::new();
        for entry in &self.tasks {
            let phase = match entry.kind {
                TaskKind::ProveSegment { .. } => "segments".to_string(),
                TaskKind::Aggregate { layer, .. } => layer.to_string(),
            };
            let done = usize::from(entry.state == TaskState::Done);
            match rows.last_mut() {
                Some(row) if row.0 == phase => {
                    row.1 += done;
                    row.2 += 1;
                }
                _ => rows.push((phase, done, 1)),
            }
        }
        rows
    }

    fn ids(&self) -> impl Iterator<Item = TaskId> {
        (0..self.tasks.len() as u32).map(TaskId)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_ready_as_soon_as_its_own_children_are_done() {
        // 8 segments: two leaves of 4. Finishing the first four must release leaf 0 even though
        // leaf 1's segments are still outstanding.
        let mut g = TaskGraph::new(8, AggTreeShape::default()).unwrap();
        let ready: Vec<_> = g.ready_tasks().collect();
        assert_eq!(ready, (0..8).map(TaskId).collect::<Vec<_>>());
        for i in 0..8 {
            g.start(TaskId(i)).unwrap();
        }
        for i in 0..3 {
            assert_eq!(g.complete(TaskId(i)).unwrap(), None);
        }
        let leaf0 = g.complete(TaskId(3)).unwrap().expect("leaf 0 released");
        assert_eq!(
            g.kind(leaf0).unwrap(),
            TaskKind::Aggregate {
                layer: AggLayer::Leaf,
                index: 0
            }
        );
        assert_eq!(g.children(leaf0).unwrap(), &[0, 1, 2, 3].map(TaskId));
        assert_eq!(g.ready_tasks().collect::<Vec<_>>(), vec![leaf0]);
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
    fn illegal_transitions_are_refused() {
        let mut g = TaskGraph::new(2, AggTreeShape::default()).unwrap();
        assert!(matches!(
            g.complete(TaskId(0)),
            Err(TaskGraphError::WrongState { .. })
        ));
        let leaf = TaskId(2);
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
        g.start(TaskId(0)).unwrap();
        g.retry(TaskId(0)).unwrap();
        assert_eq!(g.state(TaskId(0)).unwrap(), TaskState::Ready);
    }

    #[test]
    fn progress_counts_per_phase() {
        let mut g = TaskGraph::new(5, AggTreeShape::default()).unwrap();
        g.start(TaskId(0)).unwrap();
        g.complete(TaskId(0)).unwrap();
        let p = g.progress();
        assert_eq!(p[0], ("segments".to_string(), 1, 5));
        assert_eq!(p[1], ("leaf".to_string(), 0, 2));
        assert_eq!(p.last().unwrap(), &("wrap".to_string(), 0, 1));
    }
}
