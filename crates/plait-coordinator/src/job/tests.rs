use std::time::{Duration, Instant};

use plait_api::ClaimTaskRequest;
use plait_core::{
    cost::{DeviceProfile, NodeCost, SegmentCost, TraceCostFit},
    AggLayer, JobId, ProgramInput, SegmentSpec, TraceSize,
};
use plait_prover::{ProgramImage, ProvingParams};

use super::{Job, RetryPolicy};
use crate::store::JobOwner;

fn worker(memory_bytes: u64) -> ClaimTaskRequest {
    ClaimTaskRequest {
        cores: 1,
        memory_bytes,
        backend: "dev".into(),
        backend_version: "0".into(),
        plait_version: String::new(),
        key_sets: Vec::new(),
        gpus: 0,
        device_profile: None,
        device: None,
        slots: 1,
    }
}

/// A job of the default parameters, as submitted at `now`.
fn new_job(now: Instant) -> Job {
    Job::new(
        JobId(1),
        JobOwner::default(),
        ProgramImage::new(b"program".to_vec()),
        ProgramInput::default(),
        ProvingParams::default(),
        now,
        0,
    )
    .unwrap()
}

/// Whether a ready task fits `capacity`, by walking every ready task (what the summary
/// saves a claim from doing).
fn fits_by_walk(
    job: &Job,
    capacity: u64,
    need: &dyn Fn(&ProvingParams, &str, Option<AggLayer>) -> u64,
) -> bool {
    job.graph
        .ready_tasks()
        .any(|task| job.memory_need(task, need) <= capacity)
}

/// Leases the next ready task that fits `memory` to worker `w`, with a one-minute lease and
/// time limit.
fn lease(
    job: &mut Job,
    memory: u64,
    need: &dyn Fn(&ProvingParams, &str, Option<AggLayer>) -> u64,
    now: Instant,
) -> Option<plait_api::TaskAssignment> {
    job.lease_next(
        "w",
        &worker(memory),
        u64::MAX,
        Duration::from_secs(60),
        now,
        need,
        &|_, _| false,
        &|_, _, _| Duration::from_secs(60),
    )
}

/// The brief of the ready tasks a claim reads instead of walking them agrees with a walk
/// after every lease, failure, acceptance and new segment.
#[test]
fn the_ready_summary_follows_every_change() {
    let now = Instant::now();
    let mut job = new_job(now);
    // Segments need 10..=80 bytes by their estimates; nodes of the leaf layer 50, others 5.
    let need = |_: &ProvingParams, _: &str, layer: Option<AggLayer>| match layer {
        None => 0,
        Some(AggLayer::Leaf) => 50,
        Some(_) => 5,
    };
    let estimates = [40u64, 80, 10, 60, 30, 70, 20, 50, 90, 10, 40, 60];
    job.segment_fits = vec![logup_cells_fit()];
    // Leaves need what their children's proof sizes predict: each leaf's floor differs.
    job.node_profiles = vec![node_profile(job.params.segment_height)];
    let policy = RetryPolicy {
        max_attempts: 100,
        max_lost_leases: 100,
        live_workers: 1,
        counts: true,
        backoff: Duration::from_secs(1),
    };
    let check = |job: &mut Job| {
        for capacity in [0, 5, 9, 10, 25, 50, 79, 1000, 1050, 1100, 1200, 100_000] {
            assert_eq!(
                job.fits_a_ready_task(capacity, &need),
                fits_by_walk(job, capacity, &need),
                "capacity {capacity}"
            );
        }
        let mut walked = std::collections::BTreeMap::new();
        for task in job.graph.ready_tasks().collect::<Vec<_>>() {
            *walked.entry(job.task_kind(task)).or_insert(0i64) += 1;
        }
        assert_eq!(job.ready_by_kind(), walked);
    };
    let mut leased = Vec::new();
    for (index, &memory) in estimates.iter().enumerate() {
        let spec = SegmentSpec {
            index: index as u32,
            instret_start: index as u64 * 8,
            num_insns: 8,
            memory_estimate_bytes: memory,
            backend_hint: serde_json::Value::Null,
            checkpoint: None,
            // Odd segments have a trace size the fit below puts above their estimate; even
            // ones one it puts at 0. Their main cells size their proofs, for the leaves.
            trace_size: Some(TraceSize {
                main_cells: (1 + index as u64 % 5) << job.params.segment_height,
                logup_cells: if index % 2 == 1 { memory + 15 } else { 0 },
                interaction_cells: 0,
                memory_cells: 0,
            }),
        };
        let last = index + 1 == estimates.len();
        job.add_segment(spec, last.then(Vec::new), now).unwrap();
        check(&mut job);
        // Lease to workers of growing memory as segments arrive; fail every third lease.
        let lease = |job: &mut Job, memory: u64| lease(job, memory, &need, now);
        if let Some(a) = lease(&mut job, 10 * index as u64) {
            leased.push(a);
        }
        check(&mut job);
        if index % 3 == 2 {
            let a = leased.remove(0);
            job.fail_attempt(
                a.task_id,
                a.attempt,
                &a.lease_secret,
                "test",
                Some(policy),
                now,
            )
            .unwrap();
            check(&mut job);
        }
    }
    // Prove everything: accept each lease, lease again, until the job is done.
    let mut later = now;
    loop {
        later += Duration::from_secs(3600); // past every backoff
        for a in std::mem::take(&mut leased) {
            let proof_bytes = 3 + 7 * (a.task_id.0 as u64 % 11);
            job.accept(
                a.task_id,
                a.attempt,
                &a.lease_secret,
                (String::new(), proof_bytes),
                Default::default(),
                later,
            )
            .unwrap();
            check(&mut job);
        }
        while let Some(a) = lease(&mut job, 100_000, &need, later) {
            leased.push(a);
            check(&mut job);
        }
        if leased.is_empty() {
            break;
        }
    }
    assert!(job.graph.is_complete(), "every task was proven");
}

/// A fit that predicts a segment needs as many bytes as it has LogUp cells.
fn logup_cells_fit() -> TraceCostFit {
    TraceCostFit {
        memory: [0.0, 0.0, 1.0, 0.0],
        seconds: [0.0; 4],
        least_memory: 0.0,
    }
}

/// A profile whose segments' proofs have 10 bytes per stacked column (main cells over
/// 2^height), whose leaves of two children need 1000 bytes plus their children's proof bytes
/// and make proofs of 300 bytes plus a tenth of those, and whose internal-for-leaf nodes of
/// one child were measured over 400 and 800 bytes (10,000 and 20,000 bytes of memory).
fn node_profile(height: u32) -> DeviceProfile {
    let segment = |width: u64, proof_bytes| SegmentCost {
        segment_height: height,
        instructions: 1,
        trace_size: Some(TraceSize {
            main_cells: width << height,
            ..Default::default()
        }),
        proof_bytes,
        ..Default::default()
    };
    let leaf = |child_proof_bytes: u64| NodeCost {
        kind: "leaf".into(),
        children: 2,
        seconds: 1.0,
        peak_rss_bytes: 1000 + child_proof_bytes,
        child_proof_bytes,
        proof_bytes: 300 + child_proof_bytes / 10,
        ..Default::default()
    };
    let internal_for_leaf = |child_proof_bytes: u64, peak_rss_bytes| NodeCost {
        kind: "internal-for-leaf".into(),
        children: 1,
        seconds: 1.0,
        peak_rss_bytes,
        child_proof_bytes,
        proof_bytes: 500,
        ..Default::default()
    };
    DeviceProfile {
        backend: "dev".into(),
        device: "test".into(),
        memory_bytes: 1 << 30,
        segments: vec![segment(100, 1000), segment(200, 2000)],
        nodes: vec![
            leaf(1000),
            leaf(4000),
            internal_for_leaf(400, 10_000),
            internal_for_leaf(800, 20_000),
        ],
        ..DeviceProfile::default()
    }
}

/// A node is placed by what its children's proofs predict (a leaf over zkML segments needs 1.7
/// times one over as many fib segments; an internal-recursive node over three full children
/// 4.6 GiB, over one 1.4), sized from the segments' trace sizes, which the coordinator
/// measured itself, and up the tree by the profile's proof sizes: a worker that pads its proof
/// cannot make the node above it too large for the pool. The lease's time limit is given the
/// real bytes (it is bounded anyway).
#[test]
fn a_node_is_placed_by_its_childrens_predicted_proofs() {
    let now = Instant::now();
    let mut job = new_job(now);
    let height = job.params.segment_height;
    job.node_profiles = vec![node_profile(height)];
    for (index, width) in [(0u32, 100u64), (1, 150)] {
        let spec = SegmentSpec {
            index,
            instret_start: index as u64 * 8,
            num_insns: 8,
            memory_estimate_bytes: 10,
            backend_hint: serde_json::Value::Null,
            checkpoint: None,
            trace_size: Some(TraceSize {
                main_cells: width << height,
                ..Default::default()
            }),
        };
        job.add_segment(spec, (index == 1).then(Vec::new), now)
            .unwrap();
    }
    let need = |_: &ProvingParams, _: &str, _: Option<AggLayer>| 50;
    let limited_by = std::cell::Cell::new(None);
    let lease = |job: &mut Job, memory: u64| {
        job.lease_next(
            "w",
            &worker(memory),
            u64::MAX,
            Duration::from_secs(60),
            now,
            &need,
            &|_, _| false,
            &|_, _, child_proof_bytes| {
                limited_by.set(child_proof_bytes);
                Duration::from_secs(60)
            },
        )
    };
    // The workers padded their proofs to a gigabyte each.
    for _ in 0..2 {
        let a = lease(&mut job, 1 << 40).expect("a segment is ready");
        job.accept(
            a.task_id,
            a.attempt,
            &a.lease_secret,
            (String::new(), 1 << 30),
            Default::default(),
            now,
        )
        .unwrap();
    }
    // Predicted: 1000 + 1500 bytes of proofs; the cheapest leaf measured at least as large
    // (4000 bytes) needed 5000.
    assert!(
        lease(&mut job, 4999).is_none(),
        "the leaf needs 5000 bytes, above the layer's 50"
    );
    let leaf = lease(&mut job, 5000).expect("the leaf fits 5000 bytes, padding or not");
    assert!(matches!(
        leaf.work,
        plait_api::Work::Aggregate {
            layer: AggLayer::Leaf,
            ..
        }
    ));
    assert_eq!(limited_by.get(), Some(2 << 30));
    // The leaf's proof, padded too, is predicted as the leaf its cost is taken from made
    // (700 bytes): the internal-for-leaf node over it is placed as the one measured over 800.
    let (_, timing) = job
        .accept(
            leaf.task_id,
            leaf.attempt,
            &leaf.lease_secret,
            (String::new(), 1 << 30),
            Default::default(),
            now,
        )
        .unwrap();
    // Its timing record keeps what was predicted beside what was measured.
    assert_eq!(timing.predicted_peak_bytes, 5000);
    assert_eq!(timing.placed_by_bytes, 5000);
    assert_eq!(timing.predicted_seconds, Some(1.0));
    assert!(
        lease(&mut job, 19_999).is_none(),
        "the internal-for-leaf node needs 20,000 bytes"
    );
    let node = lease(&mut job, 20_000).expect("the node fits 20,000 bytes");
    assert!(matches!(
        node.work,
        plait_api::Work::Aggregate {
            layer: AggLayer::InternalForLeaf,
            ..
        }
    ));
}

/// A segment is placed by the larger of the backend's estimate and what the operator's
/// calibrated fit predicts from its trace size: a worker with room for the estimate but not
/// for the prediction does not get it.
#[test]
fn a_segment_is_placed_by_its_trace_size() {
    let now = Instant::now();
    let mut job = new_job(now);
    job.segment_fits = vec![logup_cells_fit()];
    for (index, logup_cells) in [Some(100u64), None].into_iter().enumerate() {
        let spec = SegmentSpec {
            index: index as u32,
            instret_start: index as u64 * 8,
            num_insns: 8,
            memory_estimate_bytes: 10,
            backend_hint: serde_json::Value::Null,
            checkpoint: None,
            trace_size: logup_cells.map(|logup_cells| TraceSize {
                main_cells: 1,
                logup_cells,
                interaction_cells: 0,
                memory_cells: 0,
            }),
        };
        job.add_segment(spec, (index == 1).then(Vec::new), now)
            .unwrap();
    }
    assert_eq!(job.segment_floor(0), 100);
    assert_eq!(job.segment_floor(1), 10);
    let need = |_: &ProvingParams, _: &str, _: Option<AggLayer>| 0;
    let lease = |job: &mut Job, memory: u64| lease(job, memory, &need, now);
    let small = lease(&mut job, 50).expect("the unsized segment fits 50 bytes");
    assert!(matches!(
        small.work,
        plait_api::Work::ProveSegment { ref segment, .. } if segment.index == 1
    ));
    assert!(lease(&mut job, 50).is_none(), "segment 0 needs 100 bytes");
    let large = lease(&mut job, 1000).expect("segment 0 fits 1000 bytes");
    assert!(matches!(
        large.work,
        plait_api::Work::ProveSegment { ref segment, .. } if segment.index == 0
    ));

    // A segment that peaks more than 15% above its prediction is logged; one without a
    // prediction is not.
    let above = |job: &Job| {
        job.events()
            .iter()
            .filter(|e| e.message.contains("above the"))
            .count()
    };
    for (assignment, peak) in [(&small, 900u64), (&large, 114)] {
        let meta = plait_api::TaskMeta {
            process_peak_rss_bytes: peak,
            ..Default::default()
        };
        job.accept(
            assignment.task_id,
            assignment.attempt,
            &assignment.lease_secret,
            (String::new(), 0),
            meta,
            now,
        )
        .unwrap();
    }
    assert_eq!(
        above(&job),
        0,
        "900 bytes has no prediction, 114 is within 15% of 100"
    );
}

/// Leases the next ready task to a worker of 1000 bytes and accepts its result with a measured
/// peak of `peak` bytes; returns its work.
fn prove_next(
    job: &mut Job,
    need: &dyn Fn(&ProvingParams, &str, Option<AggLayer>) -> u64,
    peak: u64,
    now: Instant,
) -> plait_api::Work {
    let a = lease(job, 1000, need, now).expect("a task is ready");
    let meta = plait_api::TaskMeta {
        process_peak_rss_bytes: peak,
        ..Default::default()
    };
    job.accept(
        a.task_id,
        a.attempt,
        &a.lease_secret,
        (String::new(), 0),
        meta,
        now,
    )
    .unwrap();
    a.work
}

/// A segment's measured peak well above its prediction is logged in the job's events.
#[test]
fn a_peak_above_its_prediction_is_logged() {
    let now = Instant::now();
    let mut job = new_job(now);
    job.segment_fits = vec![logup_cells_fit()];
    let spec = SegmentSpec {
        index: 0,
        instret_start: 0,
        num_insns: 8,
        memory_estimate_bytes: 10,
        backend_hint: serde_json::Value::Null,
        checkpoint: None,
        trace_size: Some(TraceSize {
            main_cells: 1,
            logup_cells: 100,
            interaction_cells: 0,
            memory_cells: 0,
        }),
    };
    job.add_segment(spec, Some(Vec::new()), now).unwrap();
    prove_next(&mut job, &|_, _, _| 0, 200, now);
    let logged: Vec<_> = job
        .events()
        .iter()
        .filter(|e| e.message.contains("100% above the"))
        .collect();
    assert_eq!(logged.len(), 1, "{:?}", job.events());
}

/// A node's measured peak well above the need it was placed by is logged too (a leaf over
/// segments with many chips peaks far above one over fib, which profiles measure); one
/// within 15% is not.
#[test]
fn a_node_peak_above_its_placement_is_logged() {
    for (peak, logged) in [(200u64, 1), (114, 0)] {
        let now = Instant::now();
        let mut job = new_job(now);
        let spec = SegmentSpec {
            index: 0,
            instret_start: 0,
            num_insns: 8,
            memory_estimate_bytes: 10,
            backend_hint: serde_json::Value::Null,
            checkpoint: None,
            trace_size: None,
        };
        job.add_segment(spec, Some(Vec::new()), now).unwrap();
        // Leaves are placed by 100 bytes, everything else by nothing known.
        let need = |_: &ProvingParams, _: &str, layer: Option<AggLayer>| match layer {
            Some(AggLayer::Leaf) => 100,
            _ => 0,
        };
        // The segment, with no prediction, logs nothing whatever its peak.
        prove_next(&mut job, &need, 10_000, now);
        let leaf = prove_next(&mut job, &need, peak, now);
        assert!(matches!(
            leaf,
            plait_api::Work::Aggregate {
                layer: AggLayer::Leaf,
                ..
            }
        ));
        let above: Vec<_> = job
            .events()
            .iter()
            .filter(|e| e.message.contains("above the"))
            .map(|e| e.message.clone())
            .collect();
        assert_eq!(above.len(), logged, "peak {peak}: {above:?}");
        if logged == 1 {
            assert!(
                above[0].contains("(leaf) peaked at") && above[0].contains("100% above the"),
                "{}",
                above[0]
            );
        }
    }
}
