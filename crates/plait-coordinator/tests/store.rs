//! The store suite, run on SQLite and on PostgreSQL: the store round-trips everything it is
//! given, applies a batch all or nothing, refuses stores it cannot read; and a coordinator on
//! it resumes jobs after a restart, and pauses, resumes, cancels and retries them.
//!
//! The PostgreSQL cases need `PLAIT_TEST_POSTGRES_URL` (a role that may create databases);
//! `scripts/test.sh` starts a scratch cluster and sets it. Each test gets its own database.

use std::{collections::BTreeMap, sync::Arc};

use plait_api::{ClaimTaskRequest, TaskAssignment, Work};
use plait_coordinator::{
    clients::Client,
    store::{
        scratch_postgres_database, JobOwner, JobRecord, StoreError, StoreOp, StoredJob, StoredTask,
    },
    Ban, Coordinator, CoordinatorConfig, CoordinatorError, Identity, JobAction, JobStatus, Origin,
    PlannerConfig, Store,
};
use plait_core::{
    cost::{DeviceProfile, NodeCost, SegmentCost},
    planner::Pool,
    AggLayer, AggTreeShape, Device, DeviceKind, JobId, ProgramInput, TaskId, TraceSize,
};
use plait_prover::{
    dev::{DevBackend, DevFault},
    KeySetId, ProgramImage, ProofBlob, ProofMeta, ProverBackend, ProvingParams, SegmentStart,
    Verdict, VmConfig,
};

fn keys(vm_config: VmConfig, segment_height: u32) -> KeySetId {
    KeySetId {
        vm_config,
        segment_height,
    }
}

/// A fresh, empty store of the given kind; the guard keeps a SQLite file alive.
async fn fresh_store(kind: &str) -> (String, Option<tempfile::TempDir>) {
    match kind {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("store.sqlite").display());
            (url, Some(dir))
        }
        "postgres" => {
            let admin = std::env::var("PLAIT_TEST_POSTGRES_URL").expect(
                "PLAIT_TEST_POSTGRES_URL is not set: run scripts/test.sh (it starts PostgreSQL), \
                 or export PLAIT_TEST_POSTGRES_URL=$(scripts/start-postgres.sh)",
            );
            (scratch_postgres_database(&admin).await.unwrap(), None)
        }
        _ => unreachable!(),
    }
}

/// Defines each test once per store kind.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name("sqlite").await } )* }
        mod postgres { $( #[tokio::test] async fn $name() { super::$name("postgres").await } )* }
    };
}

on_both_stores!(
    round_trips_everything,
    a_failing_batch_changes_nothing,
    refuses_a_store_of_another_schema_version,
    migrates_a_version_1_store,
    migrates_a_version_5_store,
    migrates_a_version_8_store,
    migrates_a_version_9_store,
    node_needs_are_learned_per_program,
    nodes_are_placed_by_their_own_predicted_need,
    a_second_coordinator_on_the_same_store_is_refused,
    stores_and_deletes_blobs,
    jobs_cancelled_or_failed_while_executing,
    a_job_whose_execution_failed_stays_failed_across_a_restart,
    a_restarted_coordinator_keeps_accepted_proofs_and_reissues_the_rest,
    pause_resume_cancel_and_retry,
    ended_jobs_leave_memory_and_are_read_from_the_store,
    a_task_a_worker_failed_goes_to_another_live_worker,
    segments_are_placed_by_the_peaks_workers_measured,
    local_workers_share_the_machines_memory,
    gpu_workers_are_placed_by_their_device_memory,
    tasks_no_live_worker_can_take_are_reported,
    a_failed_finalization_discards_unusable_proofs_and_proves_them_again,
    lost_leases_are_counted_apart_from_reported_failures,
    a_lease_whose_grant_was_not_stored_is_withdrawn_uncounted,
    a_store_that_fails_for_too_long_stops_the_coordinator,
    execution_waits_out_a_store_outage,
    a_submission_that_was_not_stored_is_forgotten,
    a_full_pool_displaces_an_idle_registered_worker,
    a_result_the_coordinator_cannot_check_charges_nobody,
    failure_reasons_cannot_forge_lines_of_the_event_log,
    the_operator_sees_and_forgets_learned_memory_needs,
    new_identities_cannot_fail_a_job_by_reporting_failures,
    a_revoked_clients_name_is_not_issued_again,
    a_version_7_store_gives_its_programs_owners,
    program_quotas_hold_across_a_restart_and_deleted_programs_leave_the_store,
    a_store_keeps_the_backend_it_was_made_for,
);

fn record(id: u64, state: JobStatus) -> JobRecord {
    JobRecord {
        id: JobId(id),
        program_sha256: "ab".repeat(32),
        input_json: r#"{"items":[[1,2,3]]}"#.into(),
        params_json: "{}".into(),
        plan_json: String::new(),
        submitted_unix_ms: 1_700_000_000_123,
        state,
        prediction_json: (id % 2 == 1).then(|| r#"{"segment-height":20}"#.into()),
        execution_ended: false,
        public_values: None,
        // Odd jobs belong to a named client, with a priority.
        owner: if id % 2 == 1 {
            JobOwner {
                client: "alice".into(),
                priority: -3,
            }
        } else {
            JobOwner::default()
        },
    }
}

async fn round_trips_everything(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let store = Store::open(&url).await.unwrap();
    // Proof-sized blobs, with every byte value.
    let big: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i * 7 % 251) as u8).collect();
    let elf = Arc::new(vec![0x7f, b'E', b'L', b'F', 0, 255]);
    // Proofs live in the blob store; tasks name them.
    let big_sha = store.put_blob(JobId(1), &big).await.unwrap();
    let empty_sha = store.put_blob(JobId(1), &[]).await.unwrap();
    let alice = Client {
        id: "alice".into(),
        credential_sha256: [7; 32],
        created_unix_ms: 1_700_000_000_000,
        limits: plait_api::ClientLimits {
            max_jobs_in_flight: Some(3),
            max_instructions: Some(1 << 30),
            max_program_bytes: Some(1 << 20),
            max_input_bytes: Some(1 << 16),
            weight: 5,
        },
    };
    let banned = worker_identity(
        "w",
        2,
        Some(Ban {
            reason: "2 of its proofs were rejected".into(),
            at_unix_ms: 1_700_000_000_123,
            by_operator: false,
        }),
    );
    let ops = vec![
        StoreOp::Program {
            sha256: "p1".into(),
            bytes: elf.clone(),
        },
        // Programs are content-addressed: storing one twice is a no-op.
        StoreOp::Program {
            sha256: "p1".into(),
            bytes: elf.clone(),
        },
        StoreOp::ProgramOwner {
            sha256: "p1".into(),
            client: "alice".into(),
        },
        StoreOp::ProgramOwner {
            sha256: "p1".into(),
            client: "alice".into(),
        },
        StoreOp::InsertJob(record(1, JobStatus::Running)),
        StoreOp::InsertJob(record(2, JobStatus::Running)),
        StoreOp::Segment {
            job: JobId(1),
            index: 0,
            spec_json: "{\"s\":0}".into(),
        },
        StoreOp::Segment {
            job: JobId(1),
            index: 1,
            spec_json: "{\"s\":1}".into(),
        },
        StoreOp::ExecutionEnded {
            job: JobId(1),
            public_values: Some(vec![0, 255, 7]),
        },
        // An execution that failed ends without public values.
        StoreOp::ExecutionEnded {
            job: JobId(2),
            public_values: None,
        },
        StoreOp::Prediction {
            job: JobId(2),
            prediction_json: "{\"p\":2}".into(),
        },
        StoreOp::Event {
            job: JobId(1),
            seq: 0,
            at_seconds: 0.25,
            message: "planned ünïcode ✓".into(),
        },
        StoreOp::Event {
            job: JobId(1),
            seq: 1,
            at_seconds: 1.5,
            message: "second".into(),
        },
        StoreOp::TaskCounters {
            job: JobId(1),
            task: TaskId(0),
            attempts: 1,
            failures: 0,
        },
        StoreOp::TaskCounters {
            job: JobId(1),
            task: TaskId(0),
            attempts: 3,
            failures: 2,
        },
        StoreOp::TaskAccepted {
            job: JobId(1),
            task: TaskId(0),
            proof_sha256: big_sha.clone(),
            timing_json: "{\"t\":1}".into(),
        },
        StoreOp::TaskAccepted {
            job: JobId(1),
            task: TaskId(4),
            proof_sha256: empty_sha.clone(),
            timing_json: "{}".into(),
        },
        StoreOp::JobState {
            job: JobId(1),
            state: JobStatus::Succeeded(big.clone()),
            ended_unix_ms: Some(1_700_000_005_000),
        },
        StoreOp::JobState {
            job: JobId(2),
            state: JobStatus::Failed("task-3 failed 3 times".into()),
            ended_unix_ms: Some(1_700_000_006_000),
        },
        StoreOp::NodeMemory {
            keys: keys(VmConfig::Rv32im, 19),
            layer: "leaf".into(),
            peak_bytes: 5 << 30,
        },
        StoreOp::NodeMemory {
            keys: keys(VmConfig::Rv32im, 19),
            layer: "leaf".into(),
            peak_bytes: 6 << 30,
        },
        // The same phase and height under another VM config is a need of its own.
        StoreOp::NodeMemory {
            keys: keys(VmConfig::Rv32imSha2, 19),
            layer: "leaf".into(),
            peak_bytes: 7 << 30,
        },
        StoreOp::WorkerIdentity(worker_identity("w", 1, None)),
        StoreOp::WorkerIdentity(banned.clone()),
        StoreOp::WorkerIdentity(worker_identity("revoked", 0, None)),
        StoreOp::ForgetWorker {
            id: "revoked".into(),
        },
        StoreOp::Client(alice.clone()),
        StoreOp::Client(Client {
            id: "gone".into(),
            credential_sha256: [9; 32],
            ..alice.clone()
        }),
        StoreOp::ForgetClient { id: "gone".into() },
    ];
    store.apply(&ops).await.unwrap();
    drop(store);

    // A new connection (as after a restart) reads back exactly what was written.
    let store = Store::open(&url).await.unwrap();
    let snapshot = store.load().await.unwrap();
    // Programs are read back with the jobs that use them (job 1's is not stored here), and
    // each when asked for, to the clients that uploaded it.
    assert_eq!(snapshot.programs, vec![]);
    assert_eq!(store.program("p1").await.unwrap(), Some(elf.to_vec()));
    assert_eq!(
        store.program_of("alice", "p1").await.unwrap(),
        Some(elf.to_vec())
    );
    assert_eq!(store.program_of("bob", "p1").await.unwrap(), None);
    assert_eq!(snapshot.worker_identities, vec![banned]);
    assert_eq!(snapshot.clients, vec![alice]);
    assert_eq!(
        snapshot.node_memory,
        vec![
            (keys(VmConfig::Rv32im, 19), "leaf".to_string(), 6 << 30),
            (keys(VmConfig::Rv32imSha2, 19), "leaf".to_string(), 7 << 30)
        ]
    );
    // Both jobs ended: a coordinator does not load them, and reads each when asked.
    assert_eq!(snapshot.jobs, vec![]);
    assert_eq!(snapshot.last_job_id, 2);
    assert_eq!(store.job_ids().await.unwrap(), [JobId(1), JobId(2)]);
    assert_eq!(store.load_job(JobId(3)).await.unwrap(), None);
    let expected_tasks = BTreeMap::from([
        (
            TaskId(0),
            StoredTask {
                attempts: 3,
                failures: 2,
                // Only the proof's name is loaded; the proof stays in the blob store.
                accepted: Some((big_sha.clone(), "{\"t\":1}".into())),
            },
        ),
        (
            TaskId(4),
            StoredTask {
                attempts: 0,
                failures: 0,
                accepted: Some((empty_sha.clone(), "{}".into())),
            },
        ),
    ]);
    assert_eq!(
        vec![
            store.load_job(JobId(1)).await.unwrap().unwrap(),
            store.load_job(JobId(2)).await.unwrap().unwrap()
        ],
        vec![
            StoredJob {
                record: JobRecord {
                    execution_ended: true,
                    public_values: Some(vec![0, 255, 7]),
                    ..record(1, JobStatus::Succeeded(big.clone()))
                },
                segments: vec!["{\"s\":0}".into(), "{\"s\":1}".into()],
                tasks: expected_tasks,
                events: vec![(0.25, "planned ünïcode ✓".into()), (1.5, "second".into())],
            },
            StoredJob {
                record: JobRecord {
                    prediction_json: Some("{\"p\":2}".into()),
                    execution_ended: true,
                    public_values: None,
                    ..record(2, JobStatus::Failed("task-3 failed 3 times".into()))
                },
                segments: vec![],
                tasks: BTreeMap::new(),
                events: vec![],
            },
        ]
    );
    // The succeeded job's blobs are due for deletion once its retention passed (the failed one
    // may be retried: it keeps them); recording the deletion logs it after its last event.
    assert_eq!(
        store
            .jobs_due_for_blob_deletion(1_700_000_004_999)
            .await
            .unwrap(),
        []
    );
    assert_eq!(
        store
            .jobs_due_for_blob_deletion(1_700_000_005_000)
            .await
            .unwrap(),
        [JobId(1)]
    );
    // Proofs are read when asked for.
    assert_eq!(
        store.task_proofs(JobId(1)).await.unwrap(),
        BTreeMap::from([(TaskId(0), big.clone()), (TaskId(4), vec![])])
    );
    assert!(store.task_proofs(JobId(2)).await.unwrap().is_empty());
    store
        .apply(&[StoreOp::BlobsDeleted {
            job: JobId(1),
            at_unix_ms: 1_700_000_010_123,
            message: "deleted".into(),
        }])
        .await
        .unwrap();
    assert_eq!(
        store.jobs_due_for_blob_deletion(i64::MAX).await.unwrap(),
        [],
        "deleted once"
    );
    let events = store.load_job(JobId(1)).await.unwrap().unwrap().events;
    assert_eq!(events.last().unwrap(), &(10.0, "deleted".to_string()));
    assert_eq!(events.len(), 3);
}

async fn a_failing_batch_changes_nothing(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let store = Store::open(&url).await.unwrap();
    store
        .apply(&[StoreOp::InsertJob(record(1, JobStatus::Running))])
        .await
        .unwrap();
    let before = store.load().await.unwrap();
    // The second insert of job 1 violates its primary key: the whole batch must roll back.
    let err = store
        .apply(&[
            StoreOp::InsertJob(record(2, JobStatus::Running)),
            StoreOp::JobState {
                job: JobId(1),
                state: JobStatus::Cancelled,
                ended_unix_ms: Some(1),
            },
            StoreOp::InsertJob(record(1, JobStatus::Running)),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("store: "), "{err}");
    assert_eq!(store.load().await.unwrap(), before);
}

async fn refuses_a_store_of_another_schema_version(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    drop(Store::open(&url).await.unwrap());
    {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE plait_meta SET value = '99' WHERE key = 'schema'")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let err = Store::open(&url).await.unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
}

/// A store written by schema version 1 (jobs had no prediction, whole plans, tasks numbered
/// segments first) opens, keeps its job with its tasks renumbered to creation order, and is
/// version 3 from then on.
async fn migrates_a_version_1_store(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let bytes = if kind == "sqlite" { "BLOB" } else { "BYTEA" };
    {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let connect = if kind == "sqlite" {
            format!("{url}?mode=rwc")
        } else {
            url.clone()
        };
        let mut conn = sqlx::AnyConnection::connect(&connect).await.unwrap();
        let segment = r#"{"index":0,"instret_start":0,"num_insns":8,"memory_estimate_bytes":0,"backend_hint":null}"#;
        let plan = format!(
            r#"{{"segments":[{}],"public_values":[1]}}"#,
            [segment; 5].join(",")
        );
        let params = r#"{"segment-height":3,"tree":{"num-children-leaf":4,"num-children-internal":3},"max-instructions":100}"#;
        for statement in [
            "CREATE TABLE plait_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)".to_string(),
            "INSERT INTO plait_meta (key, value) VALUES ('schema', '1')".into(),
            format!("CREATE TABLE programs (sha256 TEXT PRIMARY KEY, elf {bytes} NOT NULL)"),
            format!(
                "CREATE TABLE jobs (id BIGINT PRIMARY KEY, program_sha256 TEXT NOT NULL, \
                 input TEXT NOT NULL, params TEXT NOT NULL, plan TEXT NOT NULL, \
                 submitted_unix_ms BIGINT NOT NULL, state TEXT NOT NULL, reason TEXT, \
                 final_proof {bytes})"
            ),
            format!(
                "CREATE TABLE tasks (job_id BIGINT NOT NULL, task_id BIGINT NOT NULL, \
                 attempts BIGINT NOT NULL, failures BIGINT NOT NULL, proof {bytes}, timing TEXT, \
                 PRIMARY KEY (job_id, task_id))"
            ),
            format!(
                "INSERT INTO jobs (id, program_sha256, input, params, plan, submitted_unix_ms, \
                 state) VALUES (7, 'ab', '{{}}', '{params}', '{plan}', 5, 'running')"
            ),
            "INSERT INTO tasks (job_id, task_id, attempts, failures) VALUES (7, 9, 1, 1)".into(),
            // A cancelled job whose leaves (old tasks 5 and 6) reported their peak memory on
            // two workers, and whose segment 0 reported one on one worker only (not learned).
            format!(
                "INSERT INTO jobs (id, program_sha256, input, params, plan, submitted_unix_ms, \
                 state) VALUES (8, 'ab', '{{}}', '{params}', '{plan}', 5, 'cancelled')"
            ),
            r#"INSERT INTO tasks (job_id, task_id, attempts, failures, timing) VALUES (8, 5, 1, 0, '{"task":5,"phase":"leaf","worker":"w1","meta":{"process_peak_rss_bytes":123}}')"#.into(),
            r#"INSERT INTO tasks (job_id, task_id, attempts, failures, timing) VALUES (8, 6, 1, 0, '{"task":6,"phase":"leaf","worker":"w2","meta":{"process_peak_rss_bytes":999}}')"#.into(),
            r#"INSERT INTO tasks (job_id, task_id, attempts, failures, timing) VALUES (8, 0, 1, 0, '{"task":0,"phase":"segments","worker":"w1","meta":{"process_peak_rss_bytes":77}}')"#.into(),
        ] {
            sqlx::query(&statement).execute(&mut conn).await.unwrap();
        }
        // Old numbering of 5 segments: segments 0-4, leaves 5-6, then 7, 8, 9 (wrap); accepted
        // proofs were stored in the tasks table.
        for (task, attempts, failures, proof) in [(4, 1, 0, vec![1u8, 2, 3]), (5, 2, 1, vec![4, 5])]
        {
            sqlx::query(
                "INSERT INTO tasks (job_id, task_id, attempts, failures, proof, timing) \
                 VALUES (7, $1, $2, $3, $4, $5)",
            )
            .bind(task as i64)
            .bind(attempts as i64)
            .bind(failures as i64)
            .bind(proof)
            .bind(format!(r#"{{"task":{task}}}"#))
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
    let store = Store::open(&url).await.unwrap();
    let snapshot = store.load().await.unwrap();
    // Version 4: learned node memory has a table, and the cancelled job is not loaded but is
    // due for blob deletion (it ended at its submission: it has no events).
    assert_eq!(
        snapshot.node_memory,
        vec![(keys(VmConfig::Rv32im, 3), "leaf:ab".to_string(), 123)]
    );
    assert_eq!(snapshot.last_job_id, 8);
    assert_eq!(
        store.jobs_due_for_blob_deletion(5).await.unwrap(),
        [JobId(8)]
    );
    let jobs = snapshot.jobs;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].record.id, JobId(7));
    assert_eq!(jobs[0].record.prediction_json, None);
    assert!(
        jobs[0].record.execution_ended,
        "a planned job's execution has ended"
    );
    // New numbering: segments 0-3, leaf 0 (4), segment 4 (5), leaf 1 (6), 7, 8, wrap (9).
    let tasks = &jobs[0].tasks;
    assert_eq!(
        tasks.keys().copied().collect::<Vec<_>>(),
        [4, 5, 9].map(TaskId)
    );
    assert_eq!(
        tasks[&TaskId(5)].accepted.as_ref().unwrap().1,
        r#"{"task":5}"#
    );
    assert_eq!(
        tasks[&TaskId(5)].attempts,
        1,
        "segment 4 moved from task-4 to task-5"
    );
    assert_eq!(
        tasks[&TaskId(4)].attempts,
        2,
        "leaf 0 moved from task-5 to task-4"
    );
    let mut with_prediction = record(9, JobStatus::Running);
    with_prediction.prediction_json = Some("{}".into());
    store
        .apply(&[StoreOp::InsertJob(with_prediction.clone())])
        .await
        .unwrap();
    drop(store);
    // Reopening finds the current version: no second migration.
    let jobs = Store::open(&url).await.unwrap().load().await.unwrap().jobs;
    assert_eq!(jobs[1].record, with_prediction);
    assert_eq!(
        jobs[0].tasks.keys().copied().collect::<Vec<_>>(),
        [4, 5, 9].map(TaskId)
    );
}

/// A version 5 store learned memory needs without a VM config and for every program of a
/// height: they go (version 10 learns each program's), and so does the old table.
async fn migrates_a_version_5_store(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let store = Store::open(&url).await.unwrap();
    drop(store);
    {
        use sqlx::Connection;
        let connect = if kind == "sqlite" {
            format!("{url}?mode=rwc")
        } else {
            url.clone()
        };
        let mut conn = sqlx::AnyConnection::connect(&connect).await.unwrap();
        for statement in [
            "UPDATE plait_meta SET value = '5' WHERE key = 'schema'",
            "DROP TABLE memory_needs",
            "CREATE TABLE node_memory (segment_height BIGINT NOT NULL, layer TEXT NOT NULL, \
             peak_bytes BIGINT NOT NULL, PRIMARY KEY (segment_height, layer))",
            "INSERT INTO node_memory (segment_height, layer, peak_bytes) VALUES (20, 'leaf', 99)",
            "INSERT INTO node_memory (segment_height, layer, peak_bytes) VALUES (20, 'segments', 98)",
        ] {
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
    }
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.load().await.unwrap().node_memory, vec![]);
    drop(store);
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.load().await.unwrap().node_memory, vec![]);
}

async fn migrates_a_version_8_store(kind: &str) {
    needs_learned_for_every_program_go(kind, "8").await
}

async fn migrates_a_version_9_store(kind: &str) {
    needs_learned_for_every_program_go(kind, "9").await
}

/// A version 8 store learned needs for all programs of a height (`segments`, `leaf`), a
/// version 9 store those of nodes: they go, as version 10 reads every need per program; the
/// rest stays, and no program gains an owner.
async fn needs_learned_for_every_program_go(kind: &str, old: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let store = Store::open(&url).await.unwrap();
    let program = "ab".repeat(32);
    let per_program = format!("segments:{program}");
    let need = |layer: &str, peak_bytes| StoreOp::NodeMemory {
        keys: keys(VmConfig::Rv32imSha2, 19),
        layer: layer.to_string(),
        peak_bytes,
    };
    let ops = vec![
        StoreOp::Program {
            sha256: program.clone(),
            bytes: Arc::new(b"alice's".to_vec()),
        },
        StoreOp::ProgramOwner {
            sha256: program.clone(),
            client: "alice".into(),
        },
        need("segments", 5),
        need(&per_program, 6),
        need("leaf", 7),
        need(&format!("leaf:{program}"), 8),
    ];
    store.apply(&ops).await.unwrap();
    drop(store);
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE plait_meta SET value = $1 WHERE key = 'schema'")
            .bind(old.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let store = Store::open(&url).await.unwrap();
    let mut needs = store.load().await.unwrap().node_memory;
    needs.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        needs,
        vec![
            (keys(VmConfig::Rv32imSha2, 19), format!("leaf:{program}"), 8),
            (keys(VmConfig::Rv32imSha2, 19), per_program, 6),
        ]
    );
    assert!(store.program_of("alice", &program).await.unwrap().is_some());
    assert!(
        store
            .program_of("default", &program)
            .await
            .unwrap()
            .is_none(),
        "a version {old} store's owners stand"
    );
}

/// Two coordinators on one store would number records from their own memory and overwrite
/// each other (seen: a second `plait serve` that failed to bind had already written an event
/// under the first's next number, and the first could store nothing more). The second is
/// refused, and the store is free again once the first is gone.
async fn a_second_coordinator_on_the_same_store_is_refused(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let first = open(&url).await;
    let second = Coordinator::open(
        Arc::new(DevBackend::default()),
        test_config(),
        Store::open(&url).await.unwrap(),
    )
    .await;
    let err = second
        .err()
        .expect("a second coordinator is refused")
        .to_string();
    assert!(
        err.contains("another coordinator is using the store"),
        "{err}"
    );
    // Reading the store (as tools and tests do) needs no lock.
    Store::open(&url).await.unwrap().load().await.unwrap();
    // Migrating it does: a newer Plait must not change the tables under a running coordinator.
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE plait_meta SET value = '6' WHERE key = 'schema'")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let err = Store::open(&url).await.err().expect("refused").to_string();
    assert!(
        err.contains("another coordinator is using the store"),
        "{err}"
    );
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        let version: String =
            sqlx::query_scalar("SELECT value FROM plait_meta WHERE key = 'schema'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(version, "6", "nothing migrated");
        sqlx::query("UPDATE plait_meta SET value = '7' WHERE key = 'schema'")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    drop(first);
    open(&url).await;
}

/// Blobs (checkpoints) are stored per job by content hash, read back whole, and deleted with
/// their job.
async fn stores_and_deletes_blobs(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let store = Store::open(&url).await.unwrap();
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let digest = store.put_blob(JobId(3), &blob).await.unwrap();
    assert_eq!(digest.len(), 64);
    assert_eq!(
        store.put_blob(JobId(3), &blob).await.unwrap(),
        digest,
        "idempotent"
    );
    let other = store.put_blob(JobId(4), b"other").await.unwrap();
    drop(store);
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.blob(JobId(3), &digest).await.unwrap(), Some(blob));
    assert_eq!(
        store.blob(JobId(4), &digest).await.unwrap(),
        None,
        "blobs are per job"
    );
    assert_eq!(
        store.blob(JobId(3), "../../etc/passwd").await.unwrap(),
        None
    );
    assert_eq!(store.blob_bytes(JobId(3)).await.unwrap(), 100_000);
    assert_eq!(store.delete_blobs(JobId(3)).await.unwrap(), 100_000);
    assert_eq!(store.blob(JobId(3), &digest).await.unwrap(), None);
    assert_eq!(
        store.blob(JobId(4), &other).await.unwrap(),
        Some(b"other".to_vec())
    );
}

#[tokio::test]
async fn a_store_url_of_unknown_kind_is_refused() {
    for url in ["mysql://x/y", "sqlite://", "/tmp/store.db"] {
        let err = Store::open(url).await.unwrap_err().to_string();
        assert!(
            err.contains("expected sqlite://PATH or postgres://"),
            "{err}"
        );
    }
}

// --- A coordinator on the store, driven in-process with the dev backend. ---

async fn event_messages(c: &Coordinator, job: JobId) -> Vec<String> {
    c.events(job)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect()
}

/// Waits for a job's execution to end. The bound only keeps a hung test from running forever:
/// a loaded CI machine can take many seconds to execute and store thousands of segments.
async fn wait_until_executed(c: &Coordinator, job: JobId) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while c.summary(job).await.unwrap().progress.executing {
        assert!(
            std::time::Instant::now() < deadline,
            "{job} still executing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A guest that fails fails its job, and a restarted coordinator still knows its execution
/// failed: it opens, the job stays failed, and a retry is refused by name.
async fn a_job_whose_execution_failed_stays_failed_across_a_restart(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let c = open(&url).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    // Past params()'s limit of 10,000 instructions.
    let job = c
        .submit_job(program.clone(), dev_input(20_000), params())
        .await
        .unwrap();
    wait_until_executed(&c, job).await;
    let JobStatus::Failed(reason) = c.status(job).await.unwrap() else {
        panic!("{:?}", c.status(job).await)
    };
    assert!(reason.starts_with("execution failed"), "{reason}");
    c.halt();
    drop(c);
    let c = open(&url).await;
    assert!(matches!(c.status(job).await.unwrap(), JobStatus::Failed(_)));
    let summary = c.summary(job).await.unwrap();
    assert!(!summary.progress.executing && summary.execution_failed);
    let err = c.act(job, JobAction::Retry).await.unwrap_err().to_string();
    assert!(err.contains("its execution failed"), "{err}");
}

/// A coordinator whose dev backend executes 50 ms per segment (so that a test can act while
/// a job executes), with a dev program.
async fn open_executing_slowly(url: &str) -> (Arc<Coordinator>, ProgramImage) {
    let slow = DevBackend {
        execute_delay: std::time::Duration::from_millis(50),
        ..DevBackend::default()
    };
    let c = open_with(url, slow).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    (c, program)
}

/// Cancelling a job stops its execution; a job that fails while its program still executes
/// keeps executing, so that a retry can finish it.
async fn jobs_cancelled_or_failed_while_executing(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let (c, program) = open_executing_slowly(&url).await;
    let cancelled = submit_dev(&c, &program, 160).await; // 20 segments, 50 ms each
    c.act(cancelled, JobAction::Cancel).await.unwrap();
    wait_until_executed(&c, cancelled).await;
    let segments = c.plan(cancelled).await.unwrap().segments.len();
    assert!(
        segments < 20,
        "execution went on after the cancel: {segments}"
    );
    let events = event_messages(&c, cancelled).await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("execution stopped after")),
        "{events:#?}"
    );

    let job = submit_dev(&c, &program, 160).await;
    // Failing every task it gets fails the job once one task has failed 3 times.
    for _ in 0..200 {
        if !c.status(job).await.unwrap().is_live() {
            break;
        }
        if let Some(task) = c.claim("w", &worker()).await.unwrap() {
            report_out_of_memory(&c, "w", &task).await;
        }
    }
    assert!(matches!(c.status(job).await.unwrap(), JobStatus::Failed(_)));
    assert!(
        c.summary(job).await.unwrap().progress.executing,
        "failed while executing"
    );
    wait_until_executed(&c, job).await;
    assert_eq!(
        c.plan(job).await.unwrap().segments.len(),
        20,
        "execution finished"
    );
    // An ended job's summary is kept as it leaves memory; a retry makes it live again, and it
    // is kept anew when the job ends.
    assert_eq!(c.summary(job).await.unwrap().state, "failed");
    c.act(job, JobAction::Retry).await.unwrap();
    assert_eq!(c.summary(job).await.unwrap().state, "running");
    run_to_end(&c, &program, job).await;
    assert!(matches!(
        c.status(job).await.unwrap(),
        JobStatus::Succeeded(_)
    ));
    assert_eq!(c.summary(job).await.unwrap().state, "succeeded");
}

fn params() -> ProvingParams {
    ProvingParams {
        segment_height: 3, // dev segments of 8 instructions
        tree: AggTreeShape::default(),
        max_instructions: 10_000,
        vm_config: Default::default(),
    }
}

/// Submits a job of `instructions` dev instructions (8 per segment) of `program`.
async fn submit_dev(c: &Arc<Coordinator>, program: &ProgramImage, instructions: u64) -> JobId {
    c.submit_job(program.clone(), dev_input(instructions), params())
        .await
        .unwrap()
}

fn dev_input(instructions: u64) -> ProgramInput {
    ProgramInput {
        items: vec![instructions.to_le_bytes().to_vec()],
    }
}

/// A stored worker identity.
fn worker_identity(id: &str, rejections: u32, ban: Option<Ban>) -> Identity {
    Identity {
        id: id.into(),
        origin: Origin::Registered,
        name: "laptop".into(),
        // Distinct per identity, as the store requires.
        credential_sha256: std::array::from_fn(|i| id.as_bytes().get(i).copied().unwrap_or(0)),
        created_unix_ms: 1_700_000_000_000,
        rejections,
        ban,
    }
}

/// A claim of a worker with one slot and 1 TiB of memory (room for anything a dev job needs).
fn worker() -> ClaimTaskRequest {
    let info = DevBackend::default().info();
    ClaimTaskRequest {
        slots: 1,
        cores: 1,
        memory_bytes: 1 << 40,
        backend: info.name,
        backend_version: info.version,
        plait_version: "test".into(),
        key_sets: vec![],
        gpus: 0,
        device_profile: None,
        device: None,
    }
}

async fn open(url: &str) -> Arc<Coordinator> {
    open_with(url, DevBackend::default()).await
}

async fn open_with(url: &str, backend: DevBackend) -> Arc<Coordinator> {
    open_configured(url, backend, test_config()).await
}

/// Most tests count every worker's failures; the trust a failure needs has its own test
/// (`new_identities_cannot_fail_a_job_by_reporting_failures`).
fn test_config() -> CoordinatorConfig {
    CoordinatorConfig {
        claim_wait: std::time::Duration::from_millis(50),
        retry_backoff: std::time::Duration::from_millis(1),
        trusted_after_accepted: 0,
        ..CoordinatorConfig::default()
    }
}

async fn open_configured(
    url: &str,
    backend: DevBackend,
    config: CoordinatorConfig,
) -> Arc<Coordinator> {
    Coordinator::open(Arc::new(backend), config, Store::open(url).await.unwrap())
        .await
        .unwrap()
}

/// Proves a claimed task the honest way.
async fn prove(c: &Coordinator, program: &ProgramImage, task: &TaskAssignment) -> ProofBlob {
    let dev = DevBackend::default();
    match &task.work {
        Work::ProveSegment {
            segment, is_last, ..
        } => {
            let digest = segment
                .checkpoint
                .as_deref()
                .expect("segments have checkpoints");
            let bytes = c.checkpoint(task.job_id, digest).await.unwrap();
            let start = SegmentStart::Checkpoint {
                job: task.job_id,
                bytes: &bytes,
            };
            dev.prove_segment(program, &task.params, segment, *is_last, start)
                .unwrap()
                .0
        }
        Work::Aggregate { layer, children } => {
            let mut proofs: Vec<ProofBlob> = Vec::new();
            for child in children {
                proofs.push(c.accepted_proof(task.job_id, *child).await.unwrap());
            }
            let children = proofs;
            dev.aggregate(&task.params, *layer, &children).unwrap()
        }
    }
}

async fn claim_and_prove(
    c: &Coordinator,
    program: &ProgramImage,
    who: &str,
) -> Option<(TaskAssignment, Verdict)> {
    let task = c.claim(who, &worker()).await.unwrap()?;
    let proof = prove(c, program, &task).await;
    let verdict = c
        .submit_result(
            who,
            task.job_id,
            task.task_id,
            task.attempt,
            &task.lease_secret,
            proof,
            ProofMeta::default(),
        )
        .await
        .unwrap();
    Some((task, verdict))
}

/// The task's worker reports that it ran out of memory.
async fn report_out_of_memory(c: &Coordinator, who: &str, task: &TaskAssignment) {
    c.report_failure(
        who,
        task.job_id,
        task.task_id,
        task.attempt,
        &task.lease_secret,
        "out of memory",
    )
    .await
    .unwrap();
}

async fn run_to_end(c: &Coordinator, program: &ProgramImage, job: JobId) {
    for _ in 0..200 {
        if !c.status(job).await.unwrap().is_live() {
            break;
        }
        claim_and_prove(c, program, "finisher").await;
    }
}

async fn a_restarted_coordinator_keeps_accepted_proofs_and_reissues_the_rest(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let c = open(&url).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &program, 80).await; // 10 segments
    let mut accepted = Vec::new();
    for _ in 0..4 {
        let (task, verdict) = claim_and_prove(&c, &program, "before").await.unwrap();
        assert_eq!(verdict, Verdict::Accepted);
        accepted.push((
            task.task_id,
            c.accepted_proof(job, task.task_id).await.unwrap(),
        ));
    }
    // Two more leased and never finished: in flight when the coordinator dies.
    let in_flight: Vec<TaskAssignment> = vec![
        c.claim("lost-1", &worker()).await.unwrap().unwrap(),
        c.claim("lost-2", &worker()).await.unwrap().unwrap(),
    ];
    // No shutdown: what is not in the store is lost, as with kill -9.
    c.halt();
    drop(c);

    let c = open(&url).await;
    for (task, proof) in &accepted {
        assert_eq!(&c.accepted_proof(job, *task).await.unwrap(), proof);
    }
    // The lost leases are gone; a late result from before the restart is refused…
    let late = &in_flight[0];
    let err = c
        .submit_result(
            "lost-1",
            job,
            late.task_id,
            late.attempt,
            &late.lease_secret,
            prove(&c, &program, late).await,
            ProofMeta::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CoordinatorError::StaleLease { .. }), "{err}");
    // …and the task is handed out again under a new attempt number, never a reused one.
    let mut reissued = Vec::new();
    while let Some((task, verdict)) = claim_and_prove(&c, &program, "after").await {
        assert_eq!(verdict, Verdict::Accepted);
        assert!(
            !accepted.iter().any(|(t, _)| *t == task.task_id),
            "{} was re-proven",
            task.task_id
        );
        reissued.push(task);
        if !c.status(job).await.unwrap().is_live() {
            break;
        }
    }
    for lost in &in_flight {
        let again = reissued.iter().find(|t| t.task_id == lost.task_id).unwrap();
        assert!(again.attempt > lost.attempt, "{again:?} vs {lost:?}");
    }
    let status = c.status(job).await.unwrap();
    assert!(
        matches!(status, JobStatus::Succeeded(_)),
        "{status:?}: {:#?}",
        c.events(job).await.unwrap()
    );
    let events = event_messages(&c, job).await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("coordinator restarted: 4 of")),
        "{events:#?}"
    );
    // The log kept what happened before the restart.
    assert!(events[0].starts_with("submitted; executing"), "{events:#?}");
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("execution done: 10 segments")),
        "{events:#?}"
    );

    // And a third start sees the finished job, with its proof.
    drop(c);
    let c = open(&url).await;
    assert!(matches!(
        c.status(job).await.unwrap(),
        JobStatus::Succeeded(_)
    ));
    let next = submit_dev(&c, &program, 8).await;
    assert!(next > job, "job ids are not reused: {next} after {job}");
}

async fn pause_resume_cancel_and_retry(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let c = open(&url).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &program, 40).await; // 5 segments

    // Paused: nothing is handed out, but a result in flight is still accepted.
    let in_flight = c.claim("holder", &worker()).await.unwrap().unwrap();
    assert_eq!(
        c.act(job, JobAction::Pause).await.unwrap(),
        JobStatus::Paused
    );
    assert!(c.claim("w", &worker()).await.unwrap().is_none());
    let verdict = c
        .submit_result(
            "holder",
            job,
            in_flight.task_id,
            in_flight.attempt,
            &in_flight.lease_secret,
            prove(&c, &program, &in_flight).await,
            ProofMeta::default(),
        )
        .await
        .unwrap();
    assert_eq!(verdict, Verdict::Accepted);
    // Pausing survives a restart.
    drop(c);
    let c = open(&url).await;
    assert_eq!(c.status(job).await.unwrap(), JobStatus::Paused);
    assert!(c.claim("w", &worker()).await.unwrap().is_none());
    let err = c.act(job, JobAction::Pause).await.unwrap_err();
    assert!(matches!(err, CoordinatorError::InvalidState(_)), "{err}");
    assert_eq!(
        c.act(job, JobAction::Resume).await.unwrap(),
        JobStatus::Running
    );

    // A task that keeps failing (on one worker after another: a task a worker failed goes to
    // another live one) fails its job; retry keeps every accepted proof.
    let mut failing = None;
    for attempt in 0..3 {
        // Wait out the retry backoff (1 ms, doubling), so the failed task is ready again.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let task = c
            .claim(&format!("flaky-{attempt}"), &worker())
            .await
            .unwrap()
            .unwrap();
        failing.get_or_insert(task.task_id);
        assert_eq!(
            Some(task.task_id),
            failing,
            "the failed task comes back first"
        );
        report_out_of_memory(&c, &format!("flaky-{attempt}"), &task).await;
    }
    let JobStatus::Failed(reason) = c.status(job).await.unwrap() else {
        panic!("the job should have failed")
    };
    assert!(
        reason.contains("failed 3 times") && reason.contains("out of memory"),
        "{reason}"
    );
    assert!(c.claim("w", &worker()).await.unwrap().is_none());
    let kept = c.accepted_proofs(job).await.unwrap();
    assert_eq!(kept.len(), 1);
    drop(c);
    let c = open(&url).await;
    assert_eq!(
        c.act(job, JobAction::Retry).await.unwrap(),
        JobStatus::Running
    );
    run_to_end(&c, &program, job).await;
    assert!(matches!(
        c.status(job).await.unwrap(),
        JobStatus::Succeeded(_)
    ));
    // The proofs kept across the retry are the job's proofs still, read from the store.
    let after = c.accepted_proofs(job).await.unwrap();
    assert_eq!(after.len(), c.timings(job).await.unwrap().len());
    for (task, proof) in kept {
        assert_eq!(after[&task], proof);
        assert_eq!(c.accepted_proof(job, task).await.unwrap(), proof);
    }
    let events = event_messages(&c, job).await;
    assert!(
        events
            .iter()
            .any(|e| e == "retried by its owner; 1 accepted proofs kept"),
        "{events:#?}"
    );
    let reproved = events
        .iter()
        .filter(|e| e.starts_with(&format!("{} (", in_flight.task_id)) && e.contains("accepted"))
        .count();
    assert_eq!(reproved, 1, "{events:#?}");

    // Cancel: in-flight results are refused and nothing more is handed out; a succeeded job
    // cannot be cancelled.
    let err = c.act(job, JobAction::Cancel).await.unwrap_err();
    assert!(matches!(err, CoordinatorError::InvalidState(_)), "{err}");
    let other = submit_dev(&c, &program, 40).await;
    let task = c.claim("w", &worker()).await.unwrap().unwrap();
    assert_eq!(
        c.act(other, JobAction::Cancel).await.unwrap(),
        JobStatus::Cancelled
    );
    let err = c
        .submit_result(
            "w",
            other,
            task.task_id,
            task.attempt,
            &task.lease_secret,
            prove(&c, &program, &task).await,
            ProofMeta::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CoordinatorError::StaleLease { .. }), "{err}");
    assert!(c.claim("w", &worker()).await.unwrap().is_none());
    drop(c);
    let c = open(&url).await;
    assert_eq!(c.status(other).await.unwrap(), JobStatus::Cancelled);
    let err = c.act(other, JobAction::Resume).await.unwrap_err();
    assert!(matches!(err, CoordinatorError::InvalidState(_)), "{err}");
}

/// A job that ended leaves the coordinator's memory; everything about it is then read from the
/// store: status, final proof, events, timings, accepted proofs. A late call on one of its
/// leases is stale, not an unknown job. A retried job comes back; blobs past their retention
/// are deleted once, and the deletion is logged.
async fn ended_jobs_leave_memory_and_are_read_from_the_store(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let config = CoordinatorConfig {
        blob_retention: std::time::Duration::ZERO,
        ..test_config()
    };
    let c = open_configured(&url, DevBackend::default(), config.clone()).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &program, 40).await; // 5 segments
    assert_eq!(c.resident_jobs(), 1);
    let (first, _) = claim_and_prove(&c, &program, "w").await.unwrap();
    run_to_end(&c, &program, job).await;
    assert_eq!(
        c.resident_jobs(),
        0,
        "a succeeded job is not kept in memory"
    );
    let JobStatus::Succeeded(final_proof) = c.status(job).await.unwrap() else {
        panic!("{:?}", c.status(job).await)
    };
    let summary = c.summary(job).await.unwrap();
    assert_eq!(summary.state, "succeeded");
    assert_eq!(summary.instructions, 40);
    let timings = c.timings(job).await.unwrap();
    assert_eq!(
        timings.len(),
        summary
            .progress
            .phases
            .iter()
            .map(|(_, _, total)| total)
            .sum::<usize>()
    );
    assert_eq!(c.plan(job).await.unwrap().segments.len(), 5);
    assert!(event_messages(&c, job)
        .await
        .iter()
        .any(|e| e.starts_with("final proof assembled and verified")));
    assert!(c.accepted_proof(job, first.task_id).await.is_ok());
    assert_eq!(c.job_ids().await.unwrap(), [job]);
    assert_eq!(c.resident_jobs(), 0, "reading does not bring a job back");
    let err = c
        .heartbeat("w", job, first.task_id, first.attempt, &first.lease_secret)
        .unwrap_err();
    assert!(matches!(err, CoordinatorError::StaleLease { .. }), "{err}");
    let err = c.heartbeat("w", JobId(99), TaskId(0), 1, "").unwrap_err();
    assert!(matches!(err, CoordinatorError::UnknownJob(_)), "{err}");
    let err = c.status(JobId(99)).await.unwrap_err();
    assert!(matches!(err, CoordinatorError::UnknownJob(_)), "{err}");
    let err = c.act(job, JobAction::Cancel).await.unwrap_err();
    assert!(matches!(err, CoordinatorError::InvalidState(_)), "{err}");

    // Past the retention time, its checkpoints and task proofs go, once; its final proof stays.
    assert!(c.store().blob_bytes(job).await.unwrap() > 0);
    c.collect_expired_blobs().await.unwrap();
    c.collect_expired_blobs().await.unwrap();
    assert_eq!(c.store().blob_bytes(job).await.unwrap(), 0);
    let deletions: Vec<String> = event_messages(&c, job)
        .await
        .into_iter()
        .filter(|e| e.starts_with("blobs deleted after the retention time"))
        .collect();
    assert_eq!(deletions.len(), 1, "{deletions:?}");
    assert_eq!(
        c.status(job).await.unwrap(),
        JobStatus::Succeeded(final_proof)
    );

    // A failed job leaves memory too, and comes back when retried; it keeps its blobs.
    let failing = submit_dev(&c, &program, 40).await;
    for attempt in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let task = c
            .claim(&format!("flaky-{attempt}"), &worker())
            .await
            .unwrap()
            .unwrap();
        report_out_of_memory(&c, &format!("flaky-{attempt}"), &task).await;
    }
    assert!(matches!(
        c.status(failing).await.unwrap(),
        JobStatus::Failed(_)
    ));
    assert_eq!(c.resident_jobs(), 0);
    c.collect_expired_blobs().await.unwrap();
    assert!(c.store().blob_bytes(failing).await.unwrap() > 0);
    assert_eq!(
        c.act(failing, JobAction::Retry).await.unwrap(),
        JobStatus::Running
    );
    assert_eq!(c.resident_jobs(), 1);
    run_to_end(&c, &program, failing).await;
    assert!(matches!(
        c.status(failing).await.unwrap(),
        JobStatus::Succeeded(_)
    ));
    assert_eq!(c.resident_jobs(), 0);

    // A restarted coordinator loads neither, and still answers for both.
    drop(c);
    let c = open_configured(&url, DevBackend::default(), config).await;
    assert_eq!(c.resident_jobs(), 0);
    assert_eq!(c.job_ids().await.unwrap(), [job, failing]);
    assert!(matches!(
        c.status(failing).await.unwrap(),
        JobStatus::Succeeded(_)
    ));
}

/// A task a worker failed is not handed back to it while another worker that can take it is
/// live (one under-sized machine must not fail a job by itself); with no other, it is.
async fn a_task_a_worker_failed_goes_to_another_live_worker(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let c = open(&url).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &program, 8).await; // 1 segment
    wait_until_executed(&c, job).await;
    // Alone, the small worker gets the task back after failing it.
    let task = c.claim("small", &worker()).await.unwrap().unwrap();
    report_out_of_memory(&c, "small", &task).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let again = c.claim("small", &worker()).await.unwrap().unwrap();
    assert_eq!(again.task_id, task.task_id);
    // Another worker asks for work (there is none: the task is leased), so it is live.
    assert!(c.claim("big", &worker()).await.unwrap().is_none());
    report_out_of_memory(&c, "small", &again).await;
    // The failed task waits for the other worker.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(c.claim("small", &worker()).await.unwrap().is_none());
    let taken = c.claim("big", &worker()).await.unwrap().unwrap();
    assert_eq!(taken.task_id, task.task_id);
    assert!(matches!(c.status(job).await.unwrap(), JobStatus::Running));
}

/// A worker with `gib` GiB of memory.
fn worker_with_memory(gib: u64) -> ClaimTaskRequest {
    ClaimTaskRequest {
        memory_bytes: gib << 30,
        ..worker()
    }
}

/// Submits a 5-segment job; two 8 GiB workers, `a` and `b`, each prove one of its segments
/// and report a 6 GiB peak, so segments at this height are known to need 6 GiB.
async fn job_whose_segments_need_6_gib(c: &Arc<Coordinator>, program: &ProgramImage) -> JobId {
    let job = submit_dev(&c, &program, 40).await;
    wait_until_executed(c, job).await;
    for id in ["a", "b"] {
        let task = c.claim(id, &worker_with_memory(8)).await.unwrap().unwrap();
        let proof = prove(c, program, &task).await;
        let meta = ProofMeta {
            process_peak_rss_bytes: 6 << 30,
            ..ProofMeta::default()
        };
        assert_eq!(
            submit_as(c, id, &task, proof, meta).await,
            Verdict::Accepted
        );
    }
    job
}

/// Submits `proof` for `task` as worker `who`, with `meta`.
async fn submit_as(
    c: &Coordinator,
    who: &str,
    task: &TaskAssignment,
    proof: ProofBlob,
    meta: ProofMeta,
) -> Verdict {
    c.submit_result(
        who,
        task.job_id,
        task.task_id,
        task.attempt,
        &task.lease_secret,
        proof,
        meta,
    )
    .await
    .unwrap()
}

/// Segments are placed by the peak memory workers measured for them (once two workers
/// reported), not only by the backend's estimate: a machine too small for the measured peak
/// gets no segment.
async fn segments_are_placed_by_the_peaks_workers_measured(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let c = open(&url).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    job_whose_segments_need_6_gib(&c, &program).await;
    assert!(c
        .claim("small", &worker_with_memory(4))
        .await
        .unwrap()
        .is_none());
    let task = c
        .claim("big", &worker_with_memory(8))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(task.work, Work::ProveSegment { .. }));

    // What RV32IM segments need says nothing of another VM config's: a job under SHA-2 at the
    // same height goes by the backend's estimate, so the small machine gets its segment.
    let sha2 = ProvingParams {
        vm_config: VmConfig::Rv32imSha2,
        ..params()
    };
    let other = c
        .submit_job(program.clone(), dev_input(40), sha2)
        .await
        .unwrap();
    wait_until_executed(&c, other).await;
    let task = c
        .claim("small", &worker_with_memory(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(task.job_id, other);
}

/// Proves every ready segment of `job` as `who` (`gib` GiB), reporting a 1 GiB peak each
/// time, until a task that is not a segment of it comes up; returns that task, if any.
async fn prove_segments_of(
    c: &Arc<Coordinator>,
    program: &ProgramImage,
    job: JobId,
    who: &str,
    gib: u64,
) -> Option<TaskAssignment> {
    loop {
        let task = c.claim(who, &worker_with_memory(gib)).await.unwrap()?;
        if task.job_id != job || !matches!(task.work, Work::ProveSegment { .. }) {
            return Some(task);
        }
        let proof = prove(c, program, &task).await;
        let meta = ProofMeta {
            process_peak_rss_bytes: 1 << 30,
            ..ProofMeta::default()
        };
        assert_eq!(
            submit_as(c, who, &task, proof, meta).await,
            Verdict::Accepted
        );
    }
}

/// Node needs are learned per program, as segment needs are: the nodes above a zkML
/// program's segments verify proofs twice as large as fib's, so what its leaves measured must
/// not keep another program's leaves from small machines.
async fn node_needs_are_learned_per_program(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let c = open(&url).await;
    let large = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &large, 64).await; // 8 segments, 2 leaves
    wait_until_executed(&c, job).await;
    let first = prove_segments_of(&c, &large, job, "a", 8).await.unwrap();
    let second = prove_segments_of(&c, &large, job, "b", 8).await.unwrap();
    for (who, task) in [("a", first), ("b", second)] {
        assert!(matches!(
            task.work,
            Work::Aggregate {
                layer: AggLayer::Leaf,
                ..
            }
        ));
        let proof = prove(&c, &large, &task).await;
        let meta = ProofMeta {
            process_peak_rss_bytes: 6 << 30,
            ..ProofMeta::default()
        };
        assert_eq!(
            submit_as(&c, who, &task, proof, meta).await,
            Verdict::Accepted
        );
    }
    let phases: Vec<String> = c.memory_needs().into_iter().map(|n| n.phase).collect();
    assert!(
        phases.contains(&format!("leaf:{}", large.digest)),
        "{phases:?}"
    );
    c.act(job, JobAction::Cancel).await.unwrap();

    let small = c
        .add_program(b"another dev program".to_vec())
        .await
        .unwrap();
    let other = submit_dev(&c, &small, 32).await; // 4 segments, 1 leaf
    wait_until_executed(&c, other).await;
    let task = prove_segments_of(&c, &small, other, "small", 4)
        .await
        .expect("a 4 GiB machine gets the other program's leaf");
    assert_eq!(task.job_id, other);
    assert!(matches!(
        task.work,
        Work::Aggregate {
            layer: AggLayer::Leaf,
            ..
        }
    ));
}

/// A worker proving on a GPU with `host_gib` GiB of memory and a GPU of `device_bytes`.
/// A calibrated CPU profile at the dev segments' height whose leaves of four were measured over
/// 4,000 bytes of child proofs (2 GiB) and over 40,000 (9 GiB, as a leaf over zkML-sized
/// proofs); its segments (1 GiB) make proofs of 10 bytes per stacked column.
fn profile_with_small_and_large_leaves() -> DeviceProfile {
    let height = params().segment_height;
    let segment = |width: u64| SegmentCost {
        segment_height: height,
        instructions: 8,
        seconds: 1.0,
        peak_rss_bytes: 1 << 30,
        trace_size: Some(TraceSize {
            main_cells: width << height,
            ..Default::default()
        }),
        proof_bytes: 10 * width,
        ..Default::default()
    };
    let leaf = |child_proof_bytes: u64, gib: u64| NodeCost {
        kind: "leaf".into(),
        children: 4,
        seconds: 1.0,
        peak_rss_bytes: gib << 30,
        child_proof_bytes,
        proof_bytes: 1000,
        ..Default::default()
    };
    DeviceProfile {
        backend: "dev".into(),
        device: "calibrated".into(),
        memory_bytes: 16 << 30,
        segments: vec![segment(100), segment(200)],
        nodes: vec![leaf(4_000, 2), leaf(40_000, 9)],
        ..DeviceProfile::default()
    }
}

/// A node is placed by what its children's predicted proofs say it needs, not by the largest
/// node of its kind the operator's profile measured: a job's leaves predicted at 2 GiB go to a
/// 4 GiB machine although the profile measured a leaf over larger proofs at 9 GiB.
async fn nodes_are_placed_by_their_own_predicted_need(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let backend = DevBackend {
        // 4,000 bytes of predicted proofs for a leaf over four segments.
        trace_size: Some(TraceSize {
            main_cells: 100 << params().segment_height,
            ..Default::default()
        }),
        ..DevBackend::default()
    };
    let config = CoordinatorConfig {
        planner: Some(PlannerConfig {
            pool: Pool {
                profiles: vec![profile_with_small_and_large_leaves()],
                workers: vec![0],
            },
            fixed_size: true,
            heights: vec![params().segment_height],
        }),
        ..test_config()
    };
    let c = open_configured(&url, backend, config).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &program, 32).await; // 4 segments, 1 leaf
    wait_until_executed(&c, job).await;
    let task = prove_segments_of(&c, &program, job, "small", 4)
        .await
        .expect("a 4 GiB machine gets the leaf");
    assert!(
        matches!(
            task.work,
            Work::Aggregate {
                layer: AggLayer::Leaf,
                ..
            }
        ),
        "{:?}",
        task.work
    );
    assert_eq!(task.job_id, job);
}

fn gpu_worker(host_gib: u64, device_bytes: u64) -> ClaimTaskRequest {
    ClaimTaskRequest {
        gpus: 1,
        device: Some(Device {
            kind: DeviceKind::Gpu,
            model: "test GPU".into(),
            memory_bytes: device_bytes,
            compute_capability: Some("9.0".into()),
        }),
        ..worker_with_memory(host_gib)
    }
}

/// A GPU worker is placed by its device memory: the 6 GiB CPU workers measured for segments
/// does not keep a GPU worker with 4 GiB of host memory from one, a GPU smaller than the
/// segment's own estimate (8 KiB for a dev segment of 8 instructions) gets none, and what GPU
/// workers report of their host memory does not lower what CPU workers are thought to need.
async fn gpu_workers_are_placed_by_their_device_memory(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let c = open(&url).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    job_whose_segments_need_6_gib(&c, &program).await;
    assert!(c
        .claim("tiny-gpu", &gpu_worker(4, 4 << 10))
        .await
        .unwrap()
        .is_none());
    for id in ["gpu-1", "gpu-2"] {
        let task = c
            .claim(id, &gpu_worker(4, 80 << 30))
            .await
            .unwrap()
            .expect("a GPU with room gets a segment whatever its host memory");
        assert!(matches!(task.work, Work::ProveSegment { .. }));
        let proof = prove(&c, &program, &task).await;
        let meta = ProofMeta {
            process_peak_rss_bytes: 1 << 30,
            device_peak_bytes: 3 << 30,
            ..ProofMeta::default()
        };
        assert_eq!(
            submit_as(&c, id, &task, proof, meta).await,
            Verdict::Accepted
        );
    }
    // Two reports of 1 GiB beside two of 6 GiB would make the need 1 GiB if they counted;
    // the last segment stays out of small machines' reach (the first takes the leaf over the
    // four proven segments, ready meanwhile).
    for id in ["small-1", "small-2"] {
        let task = c.claim(id, &worker_with_memory(4)).await.unwrap();
        assert!(
            task.as_ref()
                .is_none_or(|t| !matches!(t.work, Work::ProveSegment { .. })),
            "{id} got {task:?}"
        );
    }
}

/// Local workers (one machine, `local_machine_memory`) each advertise the whole machine, but
/// the tasks leased at once may need at most its memory together: once one worker's peak set
/// the need (one is enough in a local pool), a second 6 GiB segment waits on a 10 GiB machine
/// until the first is done.
async fn local_workers_share_the_machines_memory(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let config = CoordinatorConfig {
        local_machine_memory: Some(10 << 30),
        ..test_config()
    };
    let c = open_configured(&url, DevBackend::default(), config).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &program, 40).await;
    wait_until_executed(&c, job).await;
    let local = worker_with_memory(10);
    let first = c.claim("local-0", &local).await.unwrap().unwrap();
    let proof = prove(&c, &program, &first).await;
    let meta = ProofMeta {
        process_peak_rss_bytes: 6 << 30,
        ..ProofMeta::default()
    };
    assert_eq!(
        submit_as(&c, "local-0", &first, proof, meta).await,
        Verdict::Accepted
    );
    let second = c.claim("local-0", &local).await.unwrap().unwrap();
    assert!(
        c.claim("local-1", &local).await.unwrap().is_none(),
        "6 GiB are leased on a 10 GiB machine: 4 GiB are left for a 6 GiB segment"
    );
    let proof = prove(&c, &program, &second).await;
    assert_eq!(
        submit_as(&c, "local-0", &second, proof, meta).await,
        Verdict::Accepted
    );
    let third = c.claim("local-1", &local).await.unwrap().unwrap();
    assert!(matches!(third.work, Work::ProveSegment { .. }));
}

/// Ready tasks that no live worker has the memory for are reported in the job's status and,
/// once, in its event log, with the figure and where it comes from; the report clears when a
/// worker that fits is live.
async fn tasks_no_live_worker_can_take_are_reported(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    // Workers count as live for a lease period plus a claim's wait: 250 ms here.
    let config = CoordinatorConfig {
        lease: std::time::Duration::from_millis(200),
        ..test_config()
    };
    let c = open_configured(&url, DevBackend::default(), config).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = job_whose_segments_need_6_gib(&c, &program).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // a and b are gone
    assert!(c
        .claim("small", &worker_with_memory(4))
        .await
        .unwrap()
        .is_none());
    c.report_unplaceable_tasks().await.unwrap();
    c.report_unplaceable_tasks().await.unwrap();
    let waiting = c.summary(job).await.unwrap().waiting_for_memory;
    assert_eq!(
        waiting.as_deref(),
        Some(
            "segments tasks need 6.0 GiB (the median of the peaks 2 workers measured, \
             weighted by their accepted results; `plait workers reset-needs` forgets it); the \
             largest live worker advertises 4.0 GiB, so they wait"
        )
    );
    let reported: Vec<String> = event_messages(&c, job)
        .await
        .into_iter()
        .filter(|e| e.starts_with("no live worker can take ready tasks"))
        .collect();
    assert_eq!(reported.len(), 1, "{reported:#?}");
    // A worker that fits arrives: it gets a segment, and the report clears.
    let task = c
        .claim("big", &worker_with_memory(8))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(task.work, Work::ProveSegment { .. }));
    c.report_unplaceable_tasks().await.unwrap();
    assert_eq!(c.summary(job).await.unwrap().waiting_for_memory, None);
}

/// Overwrites a stored blob with garbage, as a bad disk would.
async fn damage_blob(url: &str, job: JobId, bytes: &[u8]) {
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
    if let Some(path) = url.strip_prefix("sqlite://") {
        std::fs::write(format!("{path}.blobs/job-{}/{sha256}", job.0), b"rotten").unwrap();
    } else {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(url).await.unwrap();
        let updated = sqlx::query("UPDATE blobs SET bytes = $1 WHERE job_id = $2 AND sha256 = $3")
            .bind(b"rotten".to_vec())
            .bind(job.0 as i64)
            .bind(sha256)
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(updated.rows_affected(), 1);
    }
}

/// The last segment's stored proof is damaged after it was accepted, so the final proof
/// cannot be made from it. The job does not fail on it: the coordinator checks the final
/// inputs again, discards the unusable proof with every node above it, has them proven again,
/// and the job succeeds; every other proof is kept.
async fn a_failed_finalization_discards_unusable_proofs_and_proves_them_again(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let c = open(&url).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &program, 40).await; // 5 segments
    wait_until_executed(&c, job).await;
    let total = task_total(&c, job).await;
    // Everything but the root.
    for _ in 1..total {
        let (_, verdict) = claim_and_prove(&c, &program, "w").await.unwrap();
        assert_eq!(verdict, Verdict::Accepted);
    }
    // Task ids follow creation order: a node's comes right after its last child's.
    let last_segment = c
        .timings(job)
        .await
        .unwrap()
        .iter()
        .filter(|t| t.phase == "segments")
        .map(|t| t.task)
        .max()
        .unwrap();
    let last_proof = c.accepted_proof(job, last_segment).await.unwrap();
    damage_blob(&url, job, &last_proof.0).await;
    let (root, verdict) = claim_and_prove(&c, &program, "w").await.unwrap();
    assert_eq!(verdict, Verdict::Accepted);
    assert_eq!(c.status(job).await.unwrap(), JobStatus::Running);
    let events = event_messages(&c, job).await;
    let repair = events
        .iter()
        .find(|e| e.starts_with("final proof failed"))
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert!(
        repair.contains(&format!(
            "discarded the proofs of {last_segment} (segments)"
        )) && repair.contains(&format!("{root} ", root = root.task_id)),
        "{repair}"
    );
    // The segment, and the nodes over it, are proven again; the other segments are kept.
    let mut again = Vec::new();
    while let Some((task, verdict)) = claim_and_prove(&c, &program, "w").await {
        assert_eq!(verdict, Verdict::Accepted);
        again.push(task.task_id);
    }
    assert_eq!(again.first(), Some(&last_segment), "{again:?}");
    assert!(
        again.iter().all(|t| *t >= last_segment),
        "only the last segment and the nodes over it: {again:?}"
    );
    assert!(matches!(
        c.status(job).await.unwrap(),
        JobStatus::Succeeded(_)
    ));
    assert_eq!(c.timings(job).await.unwrap().len(), total);
    // What the store holds agrees.
    drop(c);
    let c = open(&url).await;
    assert!(matches!(
        c.status(job).await.unwrap(),
        JobStatus::Succeeded(_)
    ));
    assert_eq!(c.timings(job).await.unwrap().len(), total);
}

async fn task_total(c: &Coordinator, job: JobId) -> usize {
    let summary = c.summary(job).await.unwrap();
    summary
        .progress
        .phases
        .iter()
        .map(|(_, _, total)| total)
        .sum()
}

/// A lease that expires (its worker died, hung or was cut off) counts apart from a reported
/// failure: three lost leases on three workers do not fail the job as three reported failures
/// would; six do (a task that kills every worker must not go round forever).
async fn lost_leases_are_counted_apart_from_reported_failures(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let config = CoordinatorConfig {
        lease: std::time::Duration::from_millis(50),
        ..test_config()
    };
    let c = open_configured(&url, DevBackend::default(), config).await;
    let _reaper = c.spawn_lease_reaper();
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &program, 8).await; // 1 segment
    wait_until_executed(&c, job).await;
    let lose_a_lease = |n: usize| {
        let c = c.clone();
        async move {
            // The task comes back after its backoff; a claim waits 50 ms at most, so ask until
            // it is handed out (under load the backoff can outlast one claim).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while c
                .claim(&format!("dies-{n}"), &worker())
                .await
                .unwrap()
                .is_none()
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the task is handed out again"
                );
            }
            // The reaper looks every second; the deadline only stops a hung test.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                let events = event_messages(&c, job).await;
                if events
                    .iter()
                    .filter(|e| e.contains("lease expired"))
                    .count()
                    > n
                {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("lease {n} did not expire");
        }
    };
    for n in 0..3 {
        lose_a_lease(n).await;
    }
    assert_eq!(c.status(job).await.unwrap(), JobStatus::Running);
    for n in 3..6 {
        lose_a_lease(n).await;
    }
    let JobStatus::Failed(reason) = c.status(job).await.unwrap() else {
        panic!("{:?}", c.status(job).await)
    };
    assert!(
        reason.contains("lost its lease 6 times on 6 workers"),
        "{reason}"
    );
}

/// Makes every write of an event fail (another connection changes the schema under the
/// coordinator: a trigger in SQLite, an unsatisfiable constraint in PostgreSQL), or lets them
/// through again.
async fn break_event_writes(url: &str, broken: bool) {
    break_writes(url, "events", broken).await
}

/// Makes every new row of `table` fail, or lets them through again.
async fn break_writes(url: &str, table: &str, broken: bool) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let name = format!("injected_failure_{table}");
    let sql = match (url.starts_with("sqlite"), broken) {
        (true, true) => format!(
            "CREATE TRIGGER {name} BEFORE INSERT ON {table} \
             BEGIN SELECT RAISE(ABORT, 'injected store failure'); END"
        ),
        (true, false) => format!("DROP TRIGGER {name}"),
        (false, true) => {
            format!("ALTER TABLE {table} ADD CONSTRAINT {name} CHECK (false) NOT VALID")
        }
        (false, false) => format!("ALTER TABLE {table} DROP CONSTRAINT {name}"),
    };
    sqlx::query(&sql).execute(&mut conn).await.unwrap();
}

/// A claim whose lease cannot be stored fails (the worker never gets the lease), and the task
/// is ready again at once: it does not sit leased to nobody until it expires, and however often
/// it happens it counts neither as a failure nor as a lost lease against the task.
async fn a_lease_whose_grant_was_not_stored_is_withdrawn_uncounted(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let c = open(&url).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &program, 24).await; // 3 segments
    wait_until_executed(&c, job).await;
    break_event_writes(&url, true).await;
    // More often than a task may fail (3) or lose its lease (6).
    for _ in 0..8 {
        let err = c.claim("w", &worker()).await.unwrap_err();
        assert!(matches!(err, CoordinatorError::Store(_)), "{err}");
        let tree = c.tree(job).await.unwrap();
        assert!(
            tree.iter().all(|node| node.state != "leased"),
            "a lease nobody was given is held: {tree:?}"
        );
        let first = &tree[0];
        assert_eq!(first.state, "ready");
        let why = first.last_failure.as_deref().unwrap_or_default();
        assert!(why.contains("could not be stored"), "{why}");
    }
    break_event_writes(&url, false).await;
    let task = c.claim("w", &worker()).await.unwrap().unwrap();
    assert_eq!(task.task_id, TaskId(0));
    assert!(task.attempt > 8, "attempt numbers are never reused");
    let proof = prove(&c, &program, &task).await;
    assert_eq!(
        submit_as(&c, "w", &task, proof, ProofMeta::default()).await,
        Verdict::Accepted
    );
    run_to_end(&c, &program, job).await;
    assert!(
        matches!(c.status(job).await.unwrap(), JobStatus::Succeeded(_)),
        "{:?}",
        event_messages(&c, job).await
    );
}

/// A large tree is sent counted per layer, with only the tasks leased now and those failing;
/// a small one (or with a limit above its size) whole.
#[tokio::test]
async fn a_large_tree_is_counted_with_its_notable_nodes() {
    let (url, _guard) = fresh_store("sqlite").await;
    let c = open(&url).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let params = ProvingParams {
        max_instructions: 8 * 3000,
        ..params()
    };
    let job = c
        .submit_job(program.clone(), dev_input(8 * 3000), params) // 3,000 segments
        .await
        .unwrap();
    wait_until_executed(&c, job).await;
    let whole = c.tree_view(job, usize::MAX).await.unwrap();
    assert!(whole.complete);
    assert_eq!(whole.nodes.len(), whole.tasks);
    assert!(whole.tasks > 3000);

    let counted = c.tree_view(job, 100).await.unwrap();
    assert!(!counted.complete);
    assert_eq!(counted.tasks, whole.tasks);
    assert!(counted.nodes.is_empty(), "nothing is leased or failing yet");
    let segments = &counted.layers[0];
    assert_eq!(
        (segments.phase.as_str(), segments.ready),
        ("segments", 3000)
    );
    let in_layers: usize = counted
        .layers
        .iter()
        .map(|l| l.waiting + l.ready + l.leased + l.accepted)
        .sum();
    assert_eq!(in_layers, counted.tasks);

    let leased = c.claim("w1", &worker()).await.unwrap().unwrap();
    let failed = c.claim("w2", &worker()).await.unwrap().unwrap();
    report_out_of_memory(&c, "w2", &failed).await;
    let counted = c.tree_view(job, 100).await.unwrap();
    let notable: Vec<(TaskId, &str, Option<&str>)> = counted
        .nodes
        .iter()
        .map(|n| (n.task, n.state.as_str(), n.worker.as_deref()))
        .collect();
    assert_eq!(
        notable,
        [
            (leased.task_id, "leased", Some("w1")),
            (failed.task_id, "ready", None)
        ]
    );
    let segments = &counted.layers[0];
    assert_eq!(
        (segments.ready, segments.leased, segments.failing),
        (2999, 1, 1)
    );
    // At most `limit` nodes, whatever is notable.
    assert_eq!(c.tree_view(job, 1).await.unwrap().nodes.len(), 1);
}

/// A store that fails now and then is ridden out; one whose every write fails for longer than
/// the configured outage stops the coordinator (with the reason), which writes nothing more,
/// and a coordinator started again on the healed store carries on with the job.
async fn a_store_that_fails_for_too_long_stops_the_coordinator(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let config = CoordinatorConfig {
        store_outage_limit: std::time::Duration::from_millis(300),
        ..test_config()
    };
    let c = open_configured(&url, DevBackend::default(), config.clone()).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &program, 24).await; // 3 segments
    wait_until_executed(&c, job).await;
    let stopped = {
        let c = c.clone();
        tokio::spawn(async move { c.stopped().await })
    };
    // A short outage: the coordinator rides it out.
    break_event_writes(&url, true).await;
    assert!(c.claim("w", &worker()).await.is_err());
    break_event_writes(&url, false).await;
    let (_, verdict) = claim_and_prove(&c, &program, "w").await.unwrap();
    assert_eq!(verdict, Verdict::Accepted);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(!stopped.is_finished(), "a healed store resets the clock");
    // A long one stops it.
    break_event_writes(&url, true).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !stopped.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the coordinator never stopped"
        );
        let _ = c.claim("w", &worker()).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let reason = stopped.await.unwrap();
    assert!(reason.contains("every write to the store"), "{reason}");
    break_event_writes(&url, false).await;
    assert!(
        matches!(c.claim("w", &worker()).await, Err(CoordinatorError::Halted)),
        "a stopped coordinator stays stopped"
    );
    drop(c);
    let again = open_configured(&url, DevBackend::default(), config).await;
    run_to_end(&again, &program, job).await;
    assert!(matches!(
        again.status(job).await.unwrap(),
        JobStatus::Succeeded(_)
    ));
}

/// A store that fails while a job executes does not fail the job (an execution failure is for
/// good): the segment being stored waits until the store takes it, and execution goes on.
async fn execution_waits_out_a_store_outage(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let (c, program) = open_executing_slowly(&url).await;
    let job = submit_dev(&c, &program, 160).await; // 20 segments, 50 ms each
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    break_writes(&url, "segments", true).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let cut_during_outage = c.plan(job).await.unwrap().segments.len();
    assert!(cut_during_outage < 20, "the outage came too late");
    break_writes(&url, "segments", false).await;
    wait_until_executed(&c, job).await;
    assert_eq!(c.plan(job).await.unwrap().segments.len(), 20);
    run_to_end(&c, &program, job).await;
    assert!(
        matches!(c.status(job).await.unwrap(), JobStatus::Succeeded(_)),
        "{:?}",
        event_messages(&c, job).await
    );
}

/// A job whose submission could not be stored is refused and forgotten: the client's retry
/// after the outage makes one job, not two, and it executes and succeeds.
async fn a_submission_that_was_not_stored_is_forgotten(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let c = open(&url).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    break_event_writes(&url, true).await;
    let refused = c
        .submit_job(program.clone(), dev_input(24), params())
        .await
        .unwrap_err();
    assert!(matches!(refused, CoordinatorError::Store(_)), "{refused}");
    break_event_writes(&url, false).await;
    let job = submit_dev(&c, &program, 24).await;
    assert_eq!(c.job_ids_of("default", None, 10).await.unwrap(), [job]);
    wait_until_executed(&c, job).await;
    run_to_end(&c, &program, job).await;
    assert!(matches!(
        c.status(job).await.unwrap(),
        JobStatus::Succeeded(_)
    ));
    // Nothing of the refused job reached the store either.
    drop(c);
    let again = open(&url).await;
    assert_eq!(again.job_ids_of("default", None, 10).await.unwrap(), [job]);
}

/// A full pool makes room for a registration by displacing the registered identity seen least
/// recently, if it is idle (unseen for a lease period and a claim wait, holding no lease): a
/// flood of registrations never used cannot keep later workers out, and a working one is
/// never displaced. The displacement outlives a restart.
async fn a_full_pool_displaces_an_idle_registered_worker(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let config = CoordinatorConfig {
        worker_token: "pool".into(),
        max_workers: 2,
        // Idle after 1.05 s (a lease and a claim wait): room for a loaded machine between
        // two registrations. No reaper runs here, so the lease below does not expire.
        lease: std::time::Duration::from_secs(1),
        ..test_config()
    };
    let c = open_configured(&url, DevBackend::default(), config.clone()).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &program, 8).await; // 1 segment
    wait_until_executed(&c, job).await;
    let known = |c: &Coordinator, credential: &str| match c.authenticate_worker(credential) {
        Ok(plait_coordinator::WorkerCaller::Worker(id)) => Some(id),
        _ => None,
    };

    let (busy, busy_credential) = c.register_worker("busy").await.unwrap();
    c.claim(&busy, &worker())
        .await
        .unwrap()
        .expect("the segment");
    let (idle, idle_credential) = c.register_worker("idle").await.unwrap();
    let err = c.register_worker("late").await.unwrap_err();
    assert!(
        matches!(err, CoordinatorError::PoolFull { limit: 2, .. }),
        "both were seen just now: {err}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    // `busy` was seen first, but holds a lease.
    let (late, _) = c.register_worker("late").await.unwrap();
    assert_eq!(known(&c, &idle_credential), None, "{idle} was displaced");
    assert_eq!(known(&c, &busy_credential), Some(busy.clone()));
    let err = c.register_worker("later").await.unwrap_err();
    assert!(
        matches!(err, CoordinatorError::PoolFull { .. }),
        "{late} was seen just now and {busy} holds a lease: {err}"
    );

    c.halt();
    drop(c);
    let c = open_configured(&url, DevBackend::default(), config).await;
    assert_eq!(known(&c, &idle_credential), None);
    assert_eq!(known(&c, &busy_credential), Some(busy.clone()));
    let mut ids: Vec<String> = c.workers().into_iter().map(|w| w.worker_id).collect();
    ids.sort();
    let mut expected = vec![busy, late];
    expected.sort();
    assert_eq!(ids, expected);
}

/// A coordinator that cannot check results (its key cache unreadable, say) answers
/// `cannot-check` and charges nobody: however often the worker sends its proof, it keeps its
/// lease, no rejection is counted against it and it is not banned.
async fn a_result_the_coordinator_cannot_check_charges_nobody(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let broken = DevBackend {
        fault: Some(DevFault::CannotCheck),
        ..DevBackend::default()
    };
    let c = open_with(&url, broken).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &program, 8).await; // 1 segment
    wait_until_executed(&c, job).await;
    let task = c.claim("honest", &worker()).await.unwrap().unwrap();
    let proof = prove(&c, &program, &task).await;
    for _ in 0..3 {
        let err = c
            .submit_result(
                "honest",
                job,
                task.task_id,
                task.attempt,
                &task.lease_secret,
                proof.clone(),
                ProofMeta::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, CoordinatorError::CannotCheck(_)), "{err}");
    }
    c.heartbeat(
        "honest",
        job,
        task.task_id,
        task.attempt,
        &task.lease_secret,
    )
    .expect("the lease is kept");
    let events = event_messages(&c, job).await;
    assert!(
        !events
            .iter()
            .any(|e| e.contains("from honest failed") || e.contains("banned")),
        "{events:?}"
    );
    assert!(c.claim("other", &worker()).await.unwrap().is_none());
}

/// A worker's failure reason with line breaks and terminal escapes is stored escaped: it
/// cannot add a line to the job's event log that looks like the coordinator's.
async fn failure_reasons_cannot_forge_lines_of_the_event_log(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let c = open(&url).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &program, 8).await; // 1 segment
    wait_until_executed(&c, job).await;
    let task = c.claim("forger", &worker()).await.unwrap().unwrap();
    let forged = "oom\njob-5 succeeded: final proof assembled and verified\x1b[2K\u{202e}";
    c.report_failure(
        "forger",
        job,
        task.task_id,
        task.attempt,
        &task.lease_secret,
        forged,
    )
    .await
    .unwrap();
    // Read back from the store, not only from memory.
    drop(c);
    let c = open(&url).await;
    let events = event_messages(&c, job).await;
    let reported: Vec<&String> = events.iter().filter(|e| e.contains("oom")).collect();
    assert_eq!(reported.len(), 1, "{events:?}");
    assert!(
        reported[0].ends_with(
            "worker reports: oom\\njob-5 succeeded: final proof assembled and verified\\u{1b}[2K\\u{202e}"
        ),
        "{}",
        reported[0]
    );
    assert!(
        events.iter().all(|e| plait_core::text::is_printable(e)),
        "{events:?}"
    );
}

/// The operator sees what the pool learned a phase needs, and can forget it (a need set by
/// hostile reports would otherwise keep small workers idle): forgotten in the store too, so a
/// restart does not bring it back.
async fn the_operator_sees_and_forgets_learned_memory_needs(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let c = open(&url).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    job_whose_segments_need_6_gib(&c, &program).await;
    let needs = c.memory_needs();
    assert_eq!(needs.len(), 1, "{needs:?}");
    // Segment needs are learned per program: another guest's segments fill other chips.
    let phase = format!("segments:{}", program.digest);
    assert_eq!(
        (
            needs[0].phase.as_str(),
            needs[0].need_bytes,
            needs[0].reporters
        ),
        (phase.as_str(), 6 << 30, 2)
    );
    assert!(c
        .claim("small", &worker_with_memory(4))
        .await
        .unwrap()
        .is_none());
    c.forget_memory_needs().await.unwrap();
    assert!(c.memory_needs().is_empty());
    drop(c);
    let c = open(&url).await;
    assert!(c.memory_needs().is_empty(), "{:?}", c.memory_needs());
    let task = c.claim("small", &worker_with_memory(4)).await.unwrap();
    assert!(task.is_some(), "the small worker gets a segment again");
}

/// A revoked client's name, once it has jobs, cannot be issued again (the new holder would
/// inherit its jobs and proofs), across a restart too; a name without jobs can.
async fn a_revoked_clients_name_is_not_issued_again(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let c = open(&url).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let limits = plait_api::ClientLimits::default();
    c.issue_client("alice", limits).await.unwrap();
    c.issue_client("unused", limits).await.unwrap();
    let owner = JobOwner {
        client: "alice".into(),
        priority: 0,
    };
    let job = c
        .submit_for(owner, program, dev_input(8), params(), None)
        .await
        .unwrap();
    // Its execution must be over before the store is opened again (it holds the store).
    wait_until_executed(&c, job).await;
    c.revoke_client("alice").await.unwrap();
    c.revoke_client("unused").await.unwrap();
    let again = c.issue_client("alice", limits).await.unwrap_err();
    assert!(
        matches!(again, CoordinatorError::ClientExists(_)),
        "{again}"
    );
    c.halt();
    drop(c);
    let c = open(&url).await;
    let again = c.issue_client("alice", limits).await.unwrap_err();
    assert!(
        matches!(again, CoordinatorError::ClientExists(_)),
        "{again}"
    );
    c.issue_client("unused", limits).await.unwrap();
}

/// Version 7 had no program owners (every client could use every program): migrated, each
/// program is the client `default`'s and that of each client with jobs of it.
async fn a_version_7_store_gives_its_programs_owners(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let store = Store::open(&url).await.unwrap();
    let (used, unused) = ("ab".repeat(32), "cd".repeat(32));
    let ops = vec![
        StoreOp::Program {
            sha256: used.clone(),
            bytes: Arc::new(b"used".to_vec()),
        },
        StoreOp::Program {
            sha256: unused.clone(),
            bytes: Arc::new(b"unused".to_vec()),
        },
        StoreOp::InsertJob(record(1, JobStatus::Running)), // alice's, of `used`
    ];
    store.apply(&ops).await.unwrap();
    drop(store);
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        for statement in [
            "DROP TABLE program_owners",
            "UPDATE plait_meta SET value = '7' WHERE key = 'schema'",
        ] {
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
    }
    let store = Store::open(&url).await.unwrap();
    let has = |client: &'static str, sha256: String| {
        let store = &store;
        async move { store.program_of(client, &sha256).await.unwrap().is_some() }
    };
    assert!(has("alice", used.clone()).await);
    assert!(has("default", used.clone()).await);
    assert!(has("default", unused.clone()).await);
    assert!(!has("alice", unused.clone()).await);
    assert!(!has("bob", used.clone()).await);
}

/// A client's program bytes are counted from the store after a restart; a deleted program
/// leaves the store once no client keeps it and no job names it, and stays while one does.
async fn program_quotas_hold_across_a_restart_and_deleted_programs_leave_the_store(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let c = open(&url).await;
    let limits = plait_api::ClientLimits {
        max_program_bytes: Some(100),
        ..plait_api::ClientLimits::default()
    };
    c.issue_client("alice", limits).await.unwrap();
    c.issue_client("bob", limits).await.unwrap();
    let program = |n: u8| vec![n; 40];
    let unused = c.add_program_for("alice", program(1)).await.unwrap();
    let shared = c.add_program_for("alice", program(2)).await.unwrap();
    c.add_program_for("bob", program(2)).await.unwrap();
    let with_job = c.add_program_for("alice", program(3)).await.unwrap_err();
    assert!(
        matches!(
            with_job,
            CoordinatorError::OverProgramQuota { kept: 80, .. }
        ),
        "{with_job}"
    );
    c.delete_program_for("alice", &unused.digest).await.unwrap();
    let with_job = c.add_program_for("alice", program(3)).await.unwrap();
    let owner = JobOwner {
        client: "alice".into(),
        priority: 0,
    };
    let job = c
        .submit_for(owner, with_job.clone(), dev_input(8), params(), None)
        .await
        .unwrap();
    wait_until_executed(&c, job).await;
    c.halt();
    drop(c);

    let c = open(&url).await;
    let kept: Vec<String> = c
        .programs_of("alice")
        .into_iter()
        .map(|p| p.program_sha256)
        .collect();
    assert_eq!(kept.len(), 2);
    assert!(kept.contains(&shared.digest) && kept.contains(&with_job.digest));
    let full = c.add_program_for("alice", program(4)).await.unwrap_err();
    assert!(
        matches!(full, CoordinatorError::OverProgramQuota { kept: 80, .. }),
        "{full}"
    );
    assert!(matches!(
        c.delete_program_for("alice", &unused.digest).await,
        Err(CoordinatorError::UnknownProgram(_))
    ));
    c.delete_program_for("alice", &shared.digest).await.unwrap();
    c.delete_program_for("alice", &with_job.digest)
        .await
        .unwrap();
    assert!(c.programs_of("alice").is_empty());
    c.halt();
    drop(c);
    let store = Store::open(&url).await.unwrap();
    assert!(
        !store.has_program(&unused.digest).await.unwrap(),
        "kept by nobody"
    );
    assert!(
        store.has_program(&shared.digest).await.unwrap(),
        "bob keeps it"
    );
    assert!(
        store.has_program(&with_job.digest).await.unwrap(),
        "a job names it"
    );
    assert!(store
        .program_of("alice", &shared.digest)
        .await
        .unwrap()
        .is_none());
}

/// A store made by one backend is refused to a coordinator of another: dev-backend (fake)
/// proofs must never be finalized as real ones.
async fn a_store_keeps_the_backend_it_was_made_for(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let store = Store::open(&url).await.unwrap();
    store.claim_backend("dev").await.unwrap();
    store.claim_backend("dev").await.unwrap();
    let refused = store.claim_backend("openvm").await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::OtherBackend { stored, .. } if stored == "dev"),
        "{refused}"
    );
    assert!(refused.to_string().contains("holds the dev backend's jobs"));
    drop(store);
    // A coordinator claims its store when it opens: one of another backend is refused.
    let (url, _guard) = fresh_store(kind).await;
    Store::open(&url)
        .await
        .unwrap()
        .claim_backend("openvm")
        .await
        .unwrap();
    let store = Store::open(&url).await.unwrap();
    let refused = Coordinator::open(Arc::new(DevBackend::default()), test_config(), store)
        .await
        .err()
        .expect("a dev coordinator on an openvm store is refused");
    assert!(
        matches!(
            &refused,
            CoordinatorError::Store(StoreError::OtherBackend { stored, asked, .. })
                if stored == "openvm" && asked == "dev"
        ),
        "{refused}"
    );
}

/// Claims as `who` until a task is handed out (a failed task comes back after its backoff).
async fn claim_until_leased(c: &Coordinator, who: &str) -> TaskAssignment {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(task) = c.claim(who, &worker()).await.unwrap() {
            return task;
        }
        assert!(std::time::Instant::now() < deadline, "{who} got no task");
    }
}

/// Identities without a record of accepted results (anyone with an open pool's token can
/// register many) that claim a task in turn and report it failed do not fail the job: only
/// failures of workers with a record count. A worker with a record then proves it.
async fn new_identities_cannot_fail_a_job_by_reporting_failures(kind: &str) {
    let (url, _guard) = fresh_store(kind).await;
    let config = CoordinatorConfig {
        // A short lease, so the honest worker stops counting as live soon after it idles.
        lease: std::time::Duration::from_millis(300),
        trusted_after_accepted: 2,
        ..test_config()
    };
    let c = open_configured(&url, DevBackend::default(), config).await;
    let program = c.add_program(b"dev program".to_vec()).await.unwrap();
    let job = submit_dev(&c, &program, 24).await; // 3 segments
    wait_until_executed(&c, job).await;
    // The honest worker earns a record: two accepted segments.
    for _ in 0..2 {
        let (_, verdict) = claim_and_prove(&c, &program, "honest").await.unwrap();
        assert_eq!(verdict, Verdict::Accepted);
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for n in 0..6 {
        let who = format!("sybil-{n}");
        let task = claim_until_leased(&c, &who).await;
        assert!(matches!(task.work, Work::ProveSegment { .. }));
        report_out_of_memory(&c, &who, &task).await;
    }
    assert_eq!(c.status(job).await.unwrap(), JobStatus::Running);
    let events = event_messages(&c, job).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.contains("out of memory"))
            .count(),
        6,
        "every report is logged: {events:?}"
    );
    run_to_end(&c, &program, job).await;
    assert!(matches!(
        c.status(job).await.unwrap(),
        JobStatus::Succeeded(_)
    ));
}
