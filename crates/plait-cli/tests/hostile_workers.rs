//! The adversarial suite: a hostile client holding the pool's worker token attacks a job an
//! honest worker proves (dev backend, real processes on 127.0.0.1). Whatever it tries, the job
//! completes, every task is accepted once, and the honest worker is neither blamed nor banned.

mod common;

use std::time::Duration;

use common::*;
use plait_api::{TaskAssignment, Work, LEASE_SECRET_HEADER};
use plait_prover::{dev::DevBackend, ProgramImage, ProofBlob, ProverBackend, SegmentStart};
use serde_json::Value;

/// The (task, attempt) of the first lease the job's log shows for `worker`.
fn first_lease_of(server: &Server, job: u64, worker: &str) -> (u32, u32) {
    let mut found = None;
    server.wait_for(
        &format!("a lease to {worker}"),
        Duration::from_secs(20),
        || {
            found = server.events(job).iter().find_map(|e| {
                // "task-N (phase) attempt A leased to WORKER"
                let rest = e.strip_suffix(&format!(" leased to {worker}"))?;
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

/// The pool's events about `worker` that would blame it: failed or rejected attempts.
fn blame(events: &[String], worker: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.contains(&format!("from {worker} failed")))
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
    let post = |path: &str, secret: Option<&str>, body: Vec<u8>| {
        let mut request = server
            .http
            .post(format!("{}{path}", server.url))
            .bearer_auth(WORKER_TOKEN)
            .header("content-type", "application/json")
            .body(body);
        if let Some(secret) = secret {
            request = request.header("plait-lease-secret", secret);
        }
        refusal(request.send().unwrap())
    };
    let get = |path: &str, secret: Option<&str>| {
        let mut request = server
            .http
            .get(format!("{}{path}", server.url))
            .bearer_auth(WORKER_TOKEN);
        if let Some(secret) = secret {
            request = request.header("plait-lease-secret", secret);
        }
        refusal(request.send().unwrap())
    };
    let not_holder = (403, "not-lease-holder".to_string());
    let failure = br#"{"reason": "attacker says it failed"}"#.to_vec();
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
        // Downloads need a lease of the task that uses them.
        assert_eq!(
            get(&format!("/v1/worker/jobs/{job}/tasks/0/proof"), secret),
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
        !events.iter().any(|e| e.contains("attacker says")),
        "{events:#?}"
    );
    // Not banned: the honest worker still runs.
    assert!(honest.0.try_wait().unwrap().is_none());
}

/// A worker under the test's control, speaking the worker API directly: it proves honestly
/// with the dev backend unless told otherwise, and sends whatever it is told to send.
struct Hostile<'a> {
    server: &'a Server,
    id: String,
    memory_bytes: u64,
}

impl<'a> Hostile<'a> {
    fn new(server: &'a Server, id: &str, memory_bytes: u64) -> Self {
        Self {
            server,
            id: id.into(),
            memory_bytes,
        }
    }

    fn claim_body(&self) -> Value {
        let info = DevBackend::default().info();
        serde_json::json!({
            "worker-id": self.id, "cores": 1, "memory-bytes": self.memory_bytes,
            "backend": info.name, "backend-version": info.version,
            "plait-version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// Claims once (the coordinator's long poll); the task, if any.
    fn claim(&self) -> Option<TaskAssignment> {
        let response = self
            .server
            .http
            .post(format!("{}/v1/worker/claim", self.server.url))
            .bearer_auth(WORKER_TOKEN)
            .json(&self.claim_body())
            .send()
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().unwrap()
        );
        let body: Value = response.json().unwrap();
        serde_json::from_value(body["task"].clone()).unwrap()
    }

    fn get(&self, path: &str, lease: &TaskAssignment) -> Vec<u8> {
        let response = self
            .server
            .http
            .get(format!("{}/v1/worker{path}", self.server.url))
            .bearer_auth(WORKER_TOKEN)
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
            ProgramImage::new(self.get(&format!("/programs/{}", task.program_sha256), task));
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
            .bearer_auth(WORKER_TOKEN)
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
            .bearer_auth(WORKER_TOKEN)
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
    // Worker ids and claims are bounded too.
    let claim = |body: &Value| {
        refusal(
            server
                .http
                .post(format!("{}/v1/worker/claim", server.url))
                .bearer_auth(WORKER_TOKEN)
                .json(body)
                .send()
                .unwrap(),
        )
    };
    let mut body = attacker.claim_body();
    body["worker-id"] = Value::from("w".repeat(65));
    assert_eq!(claim(&body), (400, "bad-request".into()));
    body["worker-id"] = Value::from("evil\nworker");
    assert_eq!(claim(&body), (400, "bad-request".into()));
    body["worker-id"] = Value::from("ok");
    body["key-heights"] = Value::from(vec![19; 1_000_000]);
    assert_eq!(claim(&body).0, 413);
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
            .bearer_auth(WORKER_TOKEN)
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
        events
            .iter()
            .any(|e| e.contains("from attacker failed: lease reached its time limit")),
        "{events:#?}"
    );
    assert_each_task_accepted_once(&events, task_count(&server, job));
}
