//! The adversarial suite: a hostile client holding the pool's worker token attacks a job an
//! honest worker proves (dev backend, real processes on 127.0.0.1). Whatever it tries, the job
//! completes, every task is accepted once, the honest worker is neither blamed nor banned, and
//! the event log names the attacker by the id the coordinator gave it.

mod common;

use std::time::Duration;

use common::*;
use plait_api::{TaskAssignment, Work, LEASE_SECRET_HEADER};
use plait_prover::{dev::DevBackend, ProgramImage, ProofBlob, ProverBackend, SegmentStart};
use serde_json::Value;

/// The (task, attempt) of the first lease the job's log shows for a worker registered as
/// `name` (its id is the name and a suffix).
fn first_lease_of(server: &Server, job: u64, name: &str) -> (u32, u32) {
    let mut found = None;
    server.wait_for(
        &format!("a lease to {name}"),
        Duration::from_secs(20),
        || {
            found = server.events(job).iter().find_map(|e| {
                // "task-N (phase) attempt A leased to WORKER-ID"
                let (rest, holder) = e.split_once(" leased to ")?;
                holder.strip_prefix(name)?.strip_prefix('-')?;
                let task = rest
                    .strip_prefix("task-")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()?;
                let attempt = rest.rsplit(' ').next()?.parse().ok()?;
                Some((task, attempt))
            });
            found.is_some()
        },
    );
    found.unwrap()
}

/// The status and error code of an answer; every refusal must have a JSON body.
fn refusal(response: reqwest::blocking::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().expect("error bodies are JSON");
    (status, body["code"].as_str().unwrap_or("").to_string())
}

/// The pool's events that would blame a worker registered as `name`: its failed or rejected
/// attempts.
fn blame(events: &[String], name: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.contains(&format!("from {name}-")) && e.contains(" failed"))
        .cloned()
        .collect()
}

#[test]
fn calls_on_another_workers_lease_are_refused_and_change_nothing() {
    let server = serve(&["--lease-seconds", "30"]);
    // Slow enough that each lease is live while the attacker tries it.
    let mut honest = server.worker("honest", &["--dev-segment-ms", "400"]);
    let job = server.submit("program", 40); // 5 segments
    let (task, attempt) = first_lease_of(&server, job, "honest");
    let attempt_path =
        |what: &str| format!("/v1/worker/jobs/{job}/tasks/{task}/attempts/{attempt}/{what}");
    let forged_secret = "ab".repeat(32);
    // The attacker is a registered worker of the pool, with its own credential.
    let (attacker, credential) = server.register("attacker");
    let post_as = |token: &str, path: &str, secret: Option<&str>, body: Vec<u8>| {
        let mut request = server
            .http
            .post(format!("{}{path}", server.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body);
        if let Some(secret) = secret {
            request = request.header("plait-lease-secret", secret);
        }
        refusal(request.send().unwrap())
    };
    let post =
        |path: &str, secret: Option<&str>, body: Vec<u8>| post_as(&credential, path, secret, body);
    let get = |path: &str, secret: Option<&str>| {
        let mut request = server
            .http
            .get(format!("{}{path}", server.url))
            .bearer_auth(&credential);
        if let Some(secret) = secret {
            request = request.header("plait-lease-secret", secret);
        }
        refusal(request.send().unwrap())
    };
    let not_holder = (403, "not-lease-holder".to_string());
    let failure = br#"{"reason": "attacker says it failed"}"#.to_vec();
    // The pool token itself only registers; an unknown token does nothing at all.
    assert_eq!(
        post_as(
            WORKER_TOKEN,
            &attempt_path("failure"),
            None,
            failure.clone()
        ),
        (401, "register-first".to_string())
    );
    assert_eq!(
        post_as(
            &forged_secret,
            &attempt_path("failure"),
            None,
            failure.clone()
        ),
        (401, "unauthorized".to_string())
    );
    for secret in [None, Some(forged_secret.as_str()), Some("not hex")] {
        assert_eq!(
            post(&attempt_path("failure"), secret, failure.clone()),
            not_holder
        );
        assert_eq!(post(&attempt_path("heartbeat"), secret, vec![]), not_holder);
        assert_eq!(
            post(&attempt_path("result"), secret, b"garbage".to_vec()),
            not_holder
        );
        // Downloads need a lease of the task that uses them (the program: of its job).
        assert_eq!(
            get(&format!("/v1/worker/jobs/{job}/tasks/0/proof"), secret),
            not_holder
        );
        assert_eq!(
            get(&format!("/v1/worker/jobs/{job}/program"), secret),
            not_holder
        );
        assert_eq!(
            get(
                &format!("/v1/worker/jobs/{job}/checkpoints/{}", "00".repeat(32)),
                secret
            ),
            not_holder
        );
    }
    // No route serves a program by its hash alone (one did, to any worker).
    use sha2::Digest;
    let program_sha256 = hex::encode(sha2::Sha256::digest(b"program"));
    assert_eq!(
        get(&format!("/v1/worker/programs/{program_sha256}"), None),
        (404, "not-found".to_string())
    );
    // Guessing: every task and attempt of the job, all refused.
    for task in 0..12u32 {
        for attempt in 1..=3u32 {
            let path = format!("/v1/worker/jobs/{job}/tasks/{task}/attempts/{attempt}");
            for (what, body) in [("failure", failure.clone()), ("result", b"x".to_vec())] {
                let (status, code) = post(&format!("{path}/{what}"), None, body);
                assert!(
                    matches!(status, 403 | 404 | 409),
                    "{what} on task-{task} attempt {attempt}: {status} {code}"
                );
            }
        }
    }

    server.wait_succeeded(job, Duration::from_secs(60));
    let events = server.events(job);
    assert_each_task_accepted_once(&events, task_count(&server, job));
    assert_eq!(blame(&events, "honest"), Vec::<String>::new());
    assert!(
        !events
            .iter()
            .any(|e| e.contains("attacker says") || e.contains(&attacker)),
        "{events:#?}"
    );
    // Not banned: the honest worker still runs.
    assert!(honest.0.try_wait().unwrap().is_none());
}

/// A worker under the test's control, speaking the worker API directly: it proves honestly
/// with the dev backend unless told otherwise, and sends whatever it is told to send.
struct Hostile<'a> {
    server: &'a Server,
    /// The id the coordinator gave it, and its credential.
    id: String,
    credential: String,
    memory_bytes: u64,
}

impl<'a> Hostile<'a> {
    /// Registers a worker named `name`.
    fn new(server: &'a Server, name: &str, memory_bytes: u64) -> Self {
        let (id, credential) = server.register(name);
        Self {
            server,
            id,
            credential,
            memory_bytes,
        }
    }

    fn claim_body(&self) -> Value {
        let info = DevBackend::default().info();
        serde_json::json!({
            "cores": 1, "memory-bytes": self.memory_bytes,
            "backend": info.name, "backend-version": info.version,
            "plait-version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// Claims once with `body` (the coordinator's long poll): the status, and the task if any.
    fn claim_with(&self, body: &Value) -> (u16, Option<TaskAssignment>) {
        let response = self
            .server
            .http
            .post(format!("{}/v1/worker/claim", self.server.url))
            .bearer_auth(&self.credential)
            .json(body)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().unwrap();
        (status, serde_json::from_value(body["task"].clone()).ok())
    }

    /// Claims once; the task, if any.
    fn claim(&self) -> Option<TaskAssignment> {
        let (status, task) = self.claim_with(&self.claim_body());
        assert_eq!(status, 200);
        task
    }

    fn get(&self, path: &str, lease: &TaskAssignment) -> Vec<u8> {
        let response = self
            .server
            .http
            .get(format!("{}/v1/worker{path}", self.server.url))
            .bearer_auth(&self.credential)
            .header(LEASE_SECRET_HEADER, &lease.lease_secret)
            .send()
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.bytes().unwrap().to_vec()
    }

    /// The proof an honest worker would return.
    fn prove(&self, task: &TaskAssignment) -> ProofBlob {
        let program =
            ProgramImage::new(self.get(&format!("/jobs/{}/program", task.job_id.0), task));
        let dev = DevBackend::default();
        match &task.work {
            Work::ProveSegment {
                segment, is_last, ..
            } => {
                let sha256 = segment
                    .checkpoint
                    .as_deref()
                    .expect("segments have checkpoints");
                let bytes = self.get(
                    &format!("/jobs/{}/checkpoints/{sha256}", task.job_id.0),
                    task,
                );
                let start = SegmentStart::Checkpoint {
                    job: task.job_id,
                    bytes: &bytes,
                };
                dev.prove_segment(&program, &task.params, segment, *is_last, start)
                    .unwrap()
                    .0
            }
            Work::Aggregate { layer, children } => {
                let children: Vec<ProofBlob> = children
                    .iter()
                    .map(|c| {
                        ProofBlob(self.get(
                            &format!("/jobs/{}/tasks/{}/proof", task.job_id.0, c.0),
                            task,
                        ))
                    })
                    .collect();
                dev.aggregate(&task.params, *layer, &children).unwrap()
            }
        }
    }

    fn attempt_path(task: &TaskAssignment, what: &str) -> String {
        format!(
            "{}/v1/worker/jobs/{}/tasks/{}/attempts/{}/{what}",
            "", task.job_id.0, task.task_id.0, task.attempt
        )
    }

    /// Submits `proof` for its own lease with `meta` as the task-meta header.
    fn submit(&self, task: &TaskAssignment, proof: ProofBlob, meta: &str) -> (u16, Value) {
        let response = self
            .server
            .http
            .post(format!(
                "{}{}",
                self.server.url,
                Self::attempt_path(task, "result")
            ))
            .bearer_auth(&self.credential)
            .header(LEASE_SECRET_HEADER, &task.lease_secret)
            .header("plait-task-meta", meta)
            .body(proof.0)
            .send()
            .unwrap();
        (response.status().as_u16(), response.json().unwrap())
    }

    fn report_failure(&self, task: &TaskAssignment, reason: &str) -> reqwest::blocking::Response {
        self.server
            .http
            .post(format!(
                "{}{}",
                self.server.url,
                Self::attempt_path(task, "failure")
            ))
            .bearer_auth(&self.credential)
            .header(LEASE_SECRET_HEADER, &task.lease_secret)
            .json(&serde_json::json!({ "reason": reason }))
            .send()
            .unwrap()
    }
}

/// Absurd measurements sent with valid proofs are bounded: a peak memory of 2^64 - 1 bytes
/// counts as at most what the worker advertised, and the median of the workers' figures sets
/// an aggregation layer's need, so the next job's aggregation nodes still go to an honest
/// worker with little memory. Seconds outside the lease are cut to it.
#[test]
fn absurd_measurements_cannot_stall_a_layer_or_skew_timings() {
    let server = serve(&[]);
    let attacker = Hostile::new(&server, "attacker", 1 << 40);
    let job = server.submit("program", 40); // 5 segments, 2 leaves, 1 internal, 1 wrap
    let absurd = serde_json::json!({
        "process_peak_rss_bytes": u64::MAX,
        "proving_seconds": 1e300,
        "reexecution_seconds": -5.0,
        "process_cpu_seconds": 1e300,
    })
    .to_string();
    // The attacker proves the whole job (valid proofs), with absurd figures.
    let mut accepted = 0;
    while server.status(job)["state"] == "running" {
        if let Some(task) = attacker.claim() {
            let proof = attacker.prove(&task);
            let (status, body) = attacker.submit(&task, proof, &absurd);
            assert_eq!(
                (status, body["verdict"]["verdict"].as_str()),
                (200, Some("accepted")),
                "{body}"
            );
            accepted += 1;
        }
    }
    server.wait_succeeded(job, Duration::from_secs(20));
    assert_eq!(accepted, task_count(&server, job));
    let timings: Vec<Value> = server
        .get(&format!("/v1/jobs/{job}/timings"), CLIENT_TOKEN)
        .json()
        .unwrap();
    for t in &timings {
        let meta = &t["meta"];
        assert_eq!(meta["process_peak_rss_bytes"], 1u64 << 40, "{t}");
        let wall = t["wall_seconds"].as_f64().unwrap();
        assert!(meta["proving_seconds"].as_f64().unwrap() <= wall, "{t}");
        assert_eq!(meta["reexecution_seconds"], 0.0, "{t}");
    }
    // The attacker's figure, clamped to the 1 TiB it advertised, is one worker's: it does not
    // set the need, so the next job's nodes go to an honest worker with a machine's memory.
    let _honest = server.worker("honest", &[]);
    let next = server.submit("program", 40);
    server.wait_succeeded(next, Duration::from_secs(60));
}

#[test]
fn oversized_worker_inputs_are_refused_and_change_nothing() {
    let server = serve(&["--lease-seconds", "30"]);
    let job = server.submit("program", 8); // 1 segment
    let attacker = Hostile::new(&server, "attacker", 1 << 30);
    let task = attacker.claim().expect("a task");
    // A failure reason past the limit is refused; the lease stays the attacker's.
    let long = "x".repeat(plait_api::limits::FAILURE_REASON_BYTES + 1);
    assert_eq!(
        refusal(attacker.report_failure(&task, &long)),
        (400, "bad-request".into())
    );
    // A body past the route's limit is refused before it is read.
    let huge = "x".repeat(plait_api::limits::FAILURE_BODY_BYTES);
    assert_eq!(refusal(attacker.report_failure(&task, &huge)).0, 413);
    assert!(
        !server.events(job).iter().any(|e| e.contains("failed")),
        "{:#?}",
        server.events(job)
    );
    // Worker names and claims are bounded too.
    let register = |name: &str| refusal(server.register_as(WORKER_TOKEN, name));
    assert_eq!(register(&"w".repeat(65)), (400, "bad-request".into()));
    assert_eq!(register("evil\nworker"), (400, "bad-request".into()));
    let huge = "w".repeat(plait_api::limits::REGISTER_BODY_BYTES);
    assert_eq!(register(&huge).0, 413, "a registration's body is bounded");
    let mut body = attacker.claim_body();
    body["slots"] = Value::from(1000);
    assert_eq!(attacker.claim_with(&body).0, 400);
    body["slots"] = Value::from(1);
    // Memory must be stated (0 once meant "takes anything") and within a real machine's.
    for memory in [0, u64::MAX, (1 << 46) + 1] {
        body["memory-bytes"] = Value::from(memory);
        assert_eq!(attacker.claim_with(&body).0, 400, "memory {memory}");
    }
    body["memory-bytes"] = Value::from(1u64 << 30);
    let key_sets = |n: usize| {
        Value::from(vec![
            serde_json::json!({"vm-config": "rv32im", "segment-height": 19});
            n
        ])
    };
    body["key-sets"] = key_sets(plait_api::limits::KEY_SETS + 1);
    assert_eq!(
        attacker.claim_with(&body).0,
        400,
        "a claim lists at most 64 key sets"
    );
    // Just past the claim body's bound (a far larger body can be cut off mid-send, which the
    // client sees as a reset rather than a 413).
    body["key-sets"] = key_sets(plait_api::limits::CLAIM_BODY_BYTES / 40);
    assert_eq!(attacker.claim_with(&body).0, 413);
    // The attacker's own lease still works: its honest proof is accepted.
    let proof = attacker.prove(&task);
    let (status, verdict) = attacker.submit(&task, proof, "{}");
    assert_eq!(status, 200, "{verdict}");
    let _honest = server.worker("honest", &[]);
    server.wait_succeeded(job, Duration::from_secs(20));
}

/// A worker that claims a task and only heartbeats loses it at the lease's time limit (here
/// the coordinator's ceiling, as it sent no device profile); its later heartbeats are stale.
#[test]
fn a_worker_that_only_heartbeats_loses_its_task_at_the_time_limit() {
    let server = serve(&["--lease-seconds", "1", "--max-lease-seconds", "3"]);
    let job = server.submit("program", 8); // 1 segment
    let attacker = Hostile::new(&server, "attacker", 1 << 30);
    let task = attacker.claim().expect("a task");
    assert_eq!(task.time_limit_seconds, 3);
    let _honest = server.worker("honest", &[]);
    let heartbeat = || {
        server
            .http
            .post(format!(
                "{}{}",
                server.url,
                Hostile::attempt_path(&task, "heartbeat")
            ))
            .bearer_auth(&attacker.credential)
            .header(LEASE_SECRET_HEADER, &task.lease_secret)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    while started.elapsed() < Duration::from_secs(6) {
        statuses.push(heartbeat());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(statuses[0], 204);
    assert_eq!(*statuses.last().unwrap(), 409, "{statuses:?}");
    server.wait_succeeded(job, Duration::from_secs(20));
    let events = server.events(job);
    assert!(
        events.iter().any(|e| e.contains(&format!(
            "from {} failed: lease reached its time limit",
            attacker.id
        ))),
        "{events:#?}"
    );
    assert_each_task_accepted_once(&events, task_count(&server, job));
}

/// A worker holds at most as many leases as the slots it advertises: claiming more gets
/// nothing while other tasks are ready.
#[test]
fn a_worker_holds_no_more_leases_than_its_slots() {
    let server = serve(&["--lease-seconds", "30"]);
    let job = server.submit("program", 40); // 5 segments
    let attacker = Hostile::new(&server, "attacker", 1 << 30);
    let first = attacker.claim().expect("a task");
    // One slot, one lease: the next claim waits out the long poll with nothing.
    assert!(attacker.claim().is_none());
    let mut two_slots = attacker.claim_body();
    two_slots["slots"] = Value::from(2);
    let (status, second) = attacker.claim_with(&two_slots);
    assert_eq!(status, 200);
    let second = second.expect("a second task for a second slot");
    assert_ne!(second.task_id, first.task_id);
    let (status, third) = attacker.claim_with(&two_slots);
    assert_eq!((status, third.is_none()), (200, true));
    // The operator sees the leases it holds.
    let workers = server.operator(&["list"]).unwrap();
    let record = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker-id"] == attacker.id.as_str())
        .unwrap();
    assert_eq!(
        (record["leases"].as_u64(), record["live"].as_bool()),
        (Some(2), Some(true))
    );
    for task in [&first, &second] {
        let proof = attacker.prove(task);
        assert_eq!(attacker.submit(task, proof, "{}").0, 200);
    }
    let _honest = server.worker("honest", &[]);
    server.wait_succeeded(job, Duration::from_secs(30));
    assert_each_task_accepted_once(&server.events(job), task_count(&server, job));
}

/// A worker returns its child's proof as an aggregation task's result, then replays an
/// accepted proof for another job's task: both are rejected at the gate, the log names it,
/// its second rejection bans it, and honest workers finish both jobs.
#[test]
fn replayed_proofs_and_a_childs_proof_are_rejected_and_their_sender_banned() {
    let server = serve(&["--lease-seconds", "30"]);
    let first_job = server.submit("program", 8); // 1 segment, then aggregation nodes over it
    let attacker = Hostile::new(&server, "attacker", 1 << 30);
    let segment = attacker.claim().expect("the segment task");
    assert!(matches!(segment.work, Work::ProveSegment { .. }));
    let accepted = attacker.prove(&segment);
    let (status, body) = attacker.submit(&segment, accepted.clone(), "{}");
    assert_eq!(body["verdict"]["verdict"], "accepted", "{status} {body}");

    // Its child's proof, returned as the aggregation node's own.
    let node = attacker.claim().expect("the node over the segment");
    let Work::Aggregate { children, .. } = &node.work else {
        panic!("expected an aggregation task, got {:?}", node.work)
    };
    assert_eq!(children, &[segment.task_id]);
    let (_, body) = attacker.submit(&node, accepted.clone(), "{}");
    assert_eq!(body["verdict"]["verdict"], "rejected", "{body}");

    // The accepted proof, replayed for another job's task: rejected, and the second
    // rejection bans the attacker.
    let second_job = server.submit("program", 40);
    let other = attacker.claim().expect("another task");
    let (_, body) = attacker.submit(&other, accepted, "{}");
    assert_eq!(body["verdict"]["verdict"], "rejected", "{body}");
    let (status, _) = attacker.claim_with(&attacker.claim_body());
    assert_eq!(status, 403, "a banned worker gets no work");

    let _honest = server.worker("honest", &[]);
    let mut events = Vec::new();
    for job in [first_job, second_job] {
        server.wait_succeeded(job, Duration::from_secs(30));
        let log = server.events(job);
        assert_each_task_accepted_once(&log, task_count(&server, job));
        events.extend(log);
    }
    let rejected = format!("from {} failed: proof rejected", attacker.id);
    assert_eq!(
        events.iter().filter(|e| e.contains(&rejected)).count(),
        2,
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with(&format!("worker {} banned", attacker.id))),
        "{events:#?}"
    );
    assert_eq!(blame(&events, "honest"), Vec::<String>::new());
    let workers = server.operator(&["list"]).unwrap();
    let record = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker-id"] == attacker.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(record["rejections"], 2, "{record}");
    assert_eq!(record["ban"]["by"], "coordinator", "{record}");
}

/// A closed pool (no pool token) admits only workers whose credentials the operator issued;
/// the operator lists them, bans one (it stops getting work and exits), lifts the ban, and
/// revokes its credential.
#[test]
fn a_closed_pool_admits_issued_workers_only_and_the_operator_bans_and_unbans() {
    let server = serve(&["--worker-token", ""]);
    let register = server.register_as(WORKER_TOKEN, "stranger");
    assert_eq!(refusal(register), (401, "unauthorized".into()));

    let issued = server.operator(&["issue", "gpu-1"]).unwrap();
    assert_eq!(issued["worker-id"], "gpu-1");
    let token = issued["token"].as_str().unwrap().to_string();
    let start_worker = || {
        Worker(
            plait()
                .args(["worker", "--dev", "--coordinator", &server.url])
                .env("PLAIT_WORKER_TOKEN", &token)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut worker = start_worker();
    let job = server.submit("program", 8);
    server.wait_succeeded(job, Duration::from_secs(30));
    assert!(server
        .events(job)
        .iter()
        .any(|e| e.ends_with(" leased to gpu-1")));
    let record = |server: &Server| {
        server
            .operator(&["list"])
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["worker-id"] == "gpu-1")
            .cloned()
    };
    let listed = record(&server).expect("gpu-1 is listed");
    assert_eq!(
        (listed["origin"].as_str(), listed["live"].as_bool()),
        (Some("issued"), Some(true))
    );

    server.operator(&["ban", "gpu-1", "--reason", "lent to a stranger"]);
    server.wait_for("the banned worker to exit", Duration::from_secs(30), || {
        worker.0.try_wait().unwrap().is_some()
    });
    let listed = record(&server).unwrap();
    assert_eq!(listed["ban"]["reason"], "lent to a stranger", "{listed}");
    assert_eq!(listed["ban"]["by"], "operator", "{listed}");
    let waiting = server.submit("program", 16);
    let _restarted = start_worker();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        server.status(waiting)["state"],
        "running",
        "no banned worker proves"
    );

    server.operator(&["unban", "gpu-1"]);
    assert!(record(&server).unwrap().get("ban").is_none());
    worker = start_worker();
    server.wait_succeeded(waiting, Duration::from_secs(30));

    server.operator(&["revoke", "gpu-1"]);
    assert!(record(&server).is_none());
    let claim = server.register_as(&token, "gpu-1");
    assert_eq!(refusal(claim), (401, "unauthorized".into()));
    drop(worker);
}

/// A flood of registrations fills the pool, and its identities are never used: after a lease
/// period and a claim wait they make room for a worker that comes later (its registration,
/// refused meanwhile as `pool-full`, is retried), which proves the job. A worker whose
/// identity is forgotten (here the operator revokes it) registers again and keeps working.
#[test]
fn registrations_never_used_cannot_keep_a_later_worker_out() {
    let server = serve(&["--max-workers", "3", "--lease-seconds", "1"]);
    for i in 0..3 {
        server.register(&format!("flood-{i}"));
    }
    assert_eq!(
        refusal(server.register_as(WORKER_TOKEN, "flood-3")),
        (503, "pool-full".into())
    );

    let job = server.submit("program", 8);
    let worker = server.worker("honest", &[]);
    server.wait_succeeded(job, Duration::from_secs(60));
    let ids = |server: &Server| -> Vec<String> {
        let mut ids: Vec<String> = server
            .operator(&["list"])
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["worker-id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let listed = ids(&server);
    assert_eq!(listed.len(), 3, "{listed:?}");
    let honest_id = listed
        .iter()
        .find(|id| id.starts_with("honest-"))
        .expect("the honest worker displaced one flood identity")
        .clone();

    server.operator(&["revoke", &honest_id]);
    let next = server.submit("program", 16);
    server.wait_succeeded(next, Duration::from_secs(60));
    let again = ids(&server)
        .into_iter()
        .find(|id| id.starts_with("honest-"))
        .expect("the worker registered again");
    assert_ne!(again, honest_id);
    assert!(server
        .events(next)
        .iter()
        .any(|e| e.ends_with(&format!(" leased to {again}"))));
    drop(worker);
}

/// A connection from `source` (a loopback address of the attacker's) to the server at `url`.
fn connect_from(source: &str, url: &str) -> std::net::TcpStream {
    use socket2::{Domain, Socket, Type};
    let target: std::net::SocketAddr = url.strip_prefix("http://").unwrap().parse().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let source: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&target.into()).unwrap();
    socket.into()
}

/// Whether the server closed `stream` (its read sees the end, or a reset) within `wait`.
fn closed_within(stream: &mut std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (408, 431) before the close
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// Slowloris: an attacker opens as many connections as it may and trickles each a byte of a
/// request's headers at a time. A connection past its address's cap is closed at once, a
/// trickling one when its header time is up, and meanwhile an honest worker (from another
/// address) registers, claims and proves a job.
#[test]
fn slow_connections_cannot_lock_workers_out() {
    use std::io::Write;
    let server = serve(&[
        "--max-connections-per-ip",
        "8",
        "--header-timeout-seconds",
        "3",
    ]);
    let mut slow: Vec<_> = (0..8)
        .map(|_| {
            let mut stream = connect_from("127.0.0.2", &server.url);
            stream
                .write_all(b"POST /v1/worker/claim HTTP/1.1\r\nHo")
                .unwrap();
            stream
        })
        .collect();
    let mut over = connect_from("127.0.0.2", &server.url);
    assert!(
        closed_within(&mut over, Duration::from_secs(2)),
        "a connection over the address's cap is closed at once"
    );
    assert!(
        !closed_within(&mut slow[0], Duration::from_millis(200)),
        "the connections under the cap are held"
    );

    let job = server.submit("program", 24);
    let _worker = server.worker("honest", &[]);
    // Trickle a byte a second on one of them: it is closed when its header time is up.
    let started = std::time::Instant::now();
    let trickled = loop {
        if slow[1].write_all(b"s").is_err() || closed_within(&mut slow[1], Duration::from_secs(1)) {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a trickling connection is still open after 30 s"
        );
    };
    assert!(
        trickled < Duration::from_secs(10),
        "closed after {trickled:?}"
    );
    server.wait_succeeded(job, Duration::from_secs(60));
    assert!(slow
        .iter_mut()
        .all(|s| closed_within(s, Duration::from_secs(5))));
}

/// A client limited to one job in flight sends 40 submissions at once, while loading a
/// program takes the coordinator 300 ms (as OpenVM's takes seconds): exactly one is accepted,
/// the others are refused as `too-many-jobs`. The shared token's client `default` is limited
/// the same way (`--default-client-max-jobs`).
#[test]
fn concurrent_submissions_cannot_pass_a_clients_job_limit() {
    let server = serve(&["--dev-prepare-ms", "300", "--default-client-max-jobs", "1"]);
    let issued = server
        .clients(&["issue", "limited", "--max-jobs", "1"])
        .unwrap();
    let limited = issued["token"].as_str().unwrap().to_string();
    for token in [limited.as_str(), CLIENT_TOKEN] {
        let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
            let sending: Vec<_> = (0..40)
                .map(|_| {
                    let server = &server;
                    scope.spawn(move || {
                        let response = server.submit_as(token, "program", 16, 1 << 20);
                        let status = response.status().as_u16();
                        let body: Value = response.json().unwrap();
                        (status, body["code"].as_str().unwrap_or("").to_string())
                    })
                })
                .collect();
            sending.into_iter().map(|s| s.join().unwrap()).collect()
        });
        let accepted = answers.iter().filter(|(status, _)| *status == 200).count();
        assert_eq!(accepted, 1, "{answers:?}");
        assert!(
            answers.iter().all(|(status, code)| *status == 200
                || (*status, code.as_str()) == (429, "too-many-jobs")),
            "{answers:?}"
        );
    }
}

/// A job's input is bounded by its client's `max-input-bytes` (the shared token's client
/// `default` by `--default-client-max-input-bytes`): a job carrying more is refused as
/// `over-input-limit` before anything is stored.
#[test]
fn a_jobs_input_is_bounded_by_its_clients_limit() {
    let server = serve(&["--default-client-max-input-bytes", "1000"]);
    let issued = server
        .clients(&["issue", "limited", "--max-input-bytes", "100"])
        .unwrap();
    let limited = issued["token"].as_str().unwrap().to_string();
    let submit = |token: &str, padding: usize| {
        let upload: Value = server
            .post_bytes("/v1/programs", token, b"program".to_vec())
            .json()
            .unwrap();
        let items = vec![16u64.to_le_bytes().to_vec(), vec![0u8; padding]];
        let sha256 = upload["program-sha256"].as_str().unwrap();
        let response = server.submit_items_as(token, sha256, items, 1000);
        let status = response.status().as_u16();
        let body: Value = response.json().unwrap();
        (status, body["code"].as_str().unwrap_or("").to_string())
    };
    let refused = (413, "over-input-limit".to_string());
    assert_eq!(submit(&limited, 92).0, 200, "8 + 92 bytes fit 100");
    assert_eq!(submit(&limited, 93), refused);
    assert_eq!(submit(CLIENT_TOKEN, 992).0, 200);
    assert_eq!(submit(CLIENT_TOKEN, 993), refused);
    let jobs: Vec<Value> = server.get("/v1/jobs", &limited).json().unwrap();
    assert_eq!(jobs.len(), 1, "the refused job was not stored: {jobs:?}");
}

/// A program belongs to the clients that uploaded it: another client cannot submit a job of
/// it by its hash (it is told no such program exists) unless it uploads the same bytes itself.
#[test]
fn a_client_cannot_run_another_clients_program_by_its_hash() {
    let server = serve(&[]);
    let token = |id: &str| {
        let issued = server.clients(&["issue", id]).unwrap();
        issued["token"].as_str().unwrap().to_string()
    };
    let (alice, bob) = (token("alice"), token("bob"));
    let submit = |token: &str, sha256: &str| {
        let items = vec![16u64.to_le_bytes().to_vec()];
        let response = server.submit_items_as(token, sha256, items, 1000);
        let status = response.status().as_u16();
        let body: Value = response.json().unwrap();
        (status, body["code"].as_str().unwrap_or("").to_string())
    };
    let upload = |token: &str| -> String {
        let uploaded: Value = server
            .post_bytes("/v1/programs", token, b"alice's program".to_vec())
            .json()
            .unwrap();
        uploaded["program-sha256"].as_str().unwrap().to_string()
    };
    let sha256 = upload(&alice);
    let unknown = (404, "unknown-program".to_string());
    assert_eq!(submit(&bob, &sha256), unknown);
    assert_eq!(submit(CLIENT_TOKEN, &sha256), unknown);
    assert_eq!(submit(&alice, &sha256).0, 200);
    assert_eq!(upload(&bob), sha256);
    assert_eq!(submit(&bob, &sha256).0, 200);
}

/// A client may keep so many bytes of programs: of 12 distinct 10 KiB programs uploaded at
/// once by a client allowed 30 KiB, exactly 3 are kept and the rest refused
/// (`over-program-quota`); deleting one makes room for another. The shared token's client
/// `default` is limited the same way (`--default-client-max-program-bytes`).
#[test]
fn uploads_sent_at_once_cannot_pass_a_clients_program_bytes() {
    const KIB: usize = 1024;
    let server = serve(&["--default-client-max-program-bytes", "15000"]);
    let issued = server
        .clients(&[
            "issue",
            "limited",
            "--max-program-bytes",
            &(30 * KIB).to_string(),
        ])
        .unwrap();
    let token = issued["token"].as_str().unwrap().to_string();
    let program = |n: usize| vec![n as u8; 10 * KIB];
    let upload = |token: &str, bytes: Vec<u8>| {
        let response = server.post_bytes("/v1/programs", token, bytes);
        let status = response.status().as_u16();
        let body: Value = response.json().unwrap();
        let code = body["code"].as_str().unwrap_or("").to_string();
        (
            status,
            code,
            body["program-sha256"].as_str().map(String::from),
        )
    };
    let answers: Vec<_> = std::thread::scope(|scope| {
        let sending: Vec<_> = (0..12)
            .map(|n| {
                let (upload, token) = (&upload, &token);
                scope.spawn(move || upload(token, program(n)))
            })
            .collect();
        sending.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let kept: Vec<String> = answers.iter().filter_map(|a| a.2.clone()).collect();
    assert_eq!(kept.len(), 3, "{answers:?}");
    assert!(
        answers.iter().all(|(status, code, _)| *status == 200
            || (*status, code.as_str()) == (413, "over-program-quota")),
        "{answers:?}"
    );
    let listed: Vec<Value> = server.get("/v1/programs", &token).json().unwrap();
    assert_eq!(listed.len(), 3);
    // A program it keeps costs nothing to upload again; a new one does not fit.
    let again = answers.iter().position(|a| a.2.is_some()).unwrap();
    assert_eq!(upload(&token, program(again)).0, 200);
    assert_eq!(upload(&token, program(100)).0, 413);
    let deleted = server
        .http
        .delete(format!("{}/v1/programs/{}", server.url, kept[0]))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(upload(&token, program(100)).0, 200);
    // Deleted, it is unknown to its client: no job of it, no second delete.
    let again = server
        .http
        .delete(format!("{}/v1/programs/{}", server.url, kept[0]))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(again.status(), 404);

    // The client `default`: one 10 KiB program fits its 15,000 bytes, a second does not.
    assert_eq!(upload(CLIENT_TOKEN, program(1)).0, 200);
    let (status, code, _) = upload(CLIENT_TOKEN, program(2));
    assert_eq!((status, code.as_str()), (413, "over-program-quota"));
}
