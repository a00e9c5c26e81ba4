//! The pool over real processes and HTTP on 127.0.0.1, with the dev backend (fake proofs, so
//! these run in seconds): a coordinator (`plait serve --dev`), worker processes, clients.
//! Faults are real: workers are killed with SIGKILL, frozen with SIGSTOP, cut off from the
//! coordinator by a proxy that stalls like a network partition, or told to return corrupt
//! proofs or proofs of the wrong segment.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
#[test]
fn twenty_concurrent_jobs_complete_on_three_workers() {
    let server = serve(&[]);
    let _workers: Vec<Worker> = (0..3)
        .map(|i| {
            server.worker(
                &format!("w{i}"),
                &["--dev-segment-ms", "5", "--dev-aggregate-ms", "2"],
            )
        })
        .collect();
    let jobs: Vec<u64> = (0..20)
        .map(|i| server.submit(&format!("program {}", i % 4), 40 + 7 * i))
        .collect();
    for &job in &jobs {
        server.wait_succeeded(job, Duration::from_secs(60));
        let proof = server.get(&format!("/v1/jobs/{job}/proof"), CLIENT_TOKEN);
        assert!(proof.status().is_success());
        assert!(proof
            .bytes()
            .unwrap()
            .starts_with(b"PLAIT DEV-BACKEND PROOF"));
        assert_each_task_accepted_once(&server.events(job), task_count(&server, job));
    }
}

#[test]
fn a_killed_worker_loses_its_task_to_another() {
    let server = serve(&["--lease-seconds", "1"]);
    let slow = server.worker("doomed", &["--dev-segment-ms", "60000"]);
    let job = server.submit("program", 10); // 2 segments
    server.wait_for("the doomed worker's lease", Duration::from_secs(20), || {
        server
            .events(job)
            .iter()
            .any(|e| e.contains("leased to doomed"))
    });
    slow.signal("-KILL");
    let _rescuer = server.worker("rescuer", &[]);
    server.wait_succeeded(job, Duration::from_secs(30));
    let events = server.events(job);
    assert!(
        events.iter().any(|e| e.contains("lease expired")),
        "{events:#?}"
    );
    assert_each_task_accepted_once(&events, task_count(&server, job));
    let metrics = server.metrics();
    assert!(metric(&metrics, r#"plait_leases_expired_total{kind="segment"}"#) >= 1.0);
}

#[test]
fn a_frozen_worker_resumes_late_and_its_result_is_ignored() {
    let server = serve(&["--lease-seconds", "1"]);
    let frozen = server.worker("frozen", &["--dev-segment-ms", "1500", "--max-tasks", "1"]);
    let job = server.submit("program", 6); // 1 segment
    server.wait_for("the frozen worker's lease", Duration::from_secs(20), || {
        server
            .events(job)
            .iter()
            .any(|e| e.contains("leased to frozen"))
    });
    frozen.signal("-STOP");
    let _rescuer = server.worker("rescuer", &[]);
    server.wait_succeeded(job, Duration::from_secs(30));
    frozen.signal("-CONT");
    // The frozen worker wakes, finishes its stale attempt and submits it; it must change
    // nothing. It exits after its one task.
    let mut frozen = frozen;
    let started = Instant::now();
    while frozen.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "frozen worker never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_lease_lost(&server, job, "frozen");
}

#[test]
fn corrupt_and_wrong_segment_proofs_are_rejected_and_their_workers_banned() {
    let server = serve(&[]);
    let mut corrupt = server.worker("corrupt", &["--dev-fault", "corrupt-proof"]);
    let mut wrong = server.worker("wrong", &["--dev-fault", "wrong-segment"]);
    let jobs: Vec<u64> = (0..2)
        .map(|i| server.submit(&format!("p{i}"), 40))
        .collect();
    // Let the bad workers take (and lose) work before an honest one joins.
    server.wait_for("two rejections each", Duration::from_secs(20), || {
        corrupt.0.try_wait().unwrap().is_some() && wrong.0.try_wait().unwrap().is_some()
    });
    let _honest = server.worker("honest", &[]);
    let mut all_events = Vec::new();
    for &job in &jobs {
        server.wait_succeeded(job, Duration::from_secs(30));
        let events = server.events(job);
        assert_each_task_accepted_once(&events, task_count(&server, job));
        all_events.extend(events);
    }
    assert!(all_events
        .iter()
        .any(|e| e.contains("from corrupt-") && e.contains("failed: proof rejected")));
    assert!(all_events
        .iter()
        .any(|e| e.contains("from wrong-") && e.contains("failed: proof rejected")));
    // Banned workers were told so and stopped.
    assert!(!corrupt.0.wait().unwrap().success());
    assert!(!wrong.0.wait().unwrap().success());
    // Two rejections each (then the ban), all of segments.
    let metrics = server.metrics();
    let rejected = r#"plait_results_total{kind="segment",verdict="rejected"}"#;
    assert_eq!(metric(&metrics, rejected), 4.0, "{metrics}");
}

#[test]
fn bad_requests_get_json_errors_and_change_nothing() {
    let server = serve(&["--max-upload-bytes", "1000"]);
    let code = |response: reqwest::blocking::Response| -> (u16, String) {
        let status = response.status().as_u16();
        let body: Value = response.json().expect("error bodies are JSON");
        (status, body["code"].as_str().unwrap().to_string())
    };
    assert_eq!(
        code(server.get("/v1/jobs/42", CLIENT_TOKEN)),
        (404, "unknown-job".into())
    );
    assert_eq!(
        code(server.get("/v1/jobs/42", "wrong-token")),
        (401, "unauthorized".into())
    );
    // Worker and client tokens do not open each other's routes.
    assert_eq!(
        code(server.get("/v1/jobs/42", WORKER_TOKEN)),
        (401, "unauthorized".into())
    );
    let malformed = server
        .http
        .post(format!("{}/v1/jobs", server.url))
        .bearer_auth(CLIENT_TOKEN)
        .header("content-type", "application/json")
        .body("{\"program-sha256\": ")
        .send()
        .unwrap();
    let (status, malformed_code) = code(malformed);
    assert_eq!(status, 400);
    assert_eq!(malformed_code, "bad-request");
    assert_eq!(
        code(server.post_bytes("/v1/programs", CLIENT_TOKEN, vec![7; 2000])),
        (413, "payload-too-large".into())
    );
    let unknown_program = server
        .http
        .post(format!("{}/v1/jobs", server.url))
        .bearer_auth(CLIENT_TOKEN)
        .json(&serde_json::json!({
            "program-sha256": "00",
            "input": {"items": []},
            "params": {"segment-height": 3, "tree": {"num-children-leaf": 4, "num-children-internal": 3}, "max-instructions": 10},
        }))
        .send()
        .unwrap();
    assert_eq!(code(unknown_program), (404, "unknown-program".into()));
    // Nothing above created a job.
    assert_eq!(
        code(server.get("/v1/jobs/1", CLIENT_TOKEN)),
        (404, "unknown-job".into())
    );
}

#[test]
fn a_real_coordinator_refuses_a_program_that_is_not_an_elf() {
    // Without --dev the coordinator uses OpenVM; checking an upload needs no keys.
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server(
        &["--cache-dir", dir.path().to_str().unwrap()],
        &[],
        &[],
        None,
    );
    let response = server.post_bytes(
        "/v1/programs",
        CLIENT_TOKEN,
        b"#!/bin/sh\necho hi\n".to_vec(),
    );
    assert_eq!(response.status().as_u16(), 422);
    let body: Value = response.json().unwrap();
    assert_eq!(body["code"], "invalid-program");
    assert!(body["message"].as_str().unwrap().contains("not an ELF"));
}

/// kill -9 the coordinator mid-job and start it again on the same store: the job completes,
/// no accepted task is proven again, and the event log tells the story.
fn coordinator_restart(store: Option<String>) {
    let mut server = spawn_server(&[], &["--dev"], &["--lease-seconds", "2"], store);
    let _workers: Vec<Worker> = (0..3)
        .map(|i| {
            server.worker(
                &format!("w{i}"),
                &["--dev-segment-ms", "150", "--dev-aggregate-ms", "150"],
            )
        })
        .collect();
    let jobs: Vec<u64> = (0..3)
        .map(|i| server.submit(&format!("p{i}"), 120))
        .collect();
    server.wait_for("some accepted tasks", Duration::from_secs(30), || {
        let events = server.events(jobs[0]);
        events
            .iter()
            .filter(|e| e.contains(") accepted from "))
            .count()
            >= 4
    });
    server.kill_and_restart();
    for &job in &jobs {
        server.wait_succeeded(job, Duration::from_secs(90));
        let events = server.events(job);
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("coordinator restarted: ")),
            "{events:#?}"
        );
        assert_each_task_accepted_once(&events, task_count(&server, job));
    }
    // The restarted coordinator kept what was stored before the kill. (Not necessarily all 4
    // acceptances the log showed: one may have been in memory, its write not yet committed,
    // and so never confirmed to its worker.)
    let restart = server.events(jobs[0]);
    let kept: usize = restart
        .iter()
        .find_map(|e| e.strip_prefix("coordinator restarted: "))
        .and_then(|e| e.split(' ').next()?.parse().ok())
        .unwrap();
    assert!(kept >= 1, "{restart:#?}");
    assert!(
        restart.iter().any(|e| e
            .ends_with("tasks already accepted and kept; tasks in flight are handed out again")),
        "{restart:#?}"
    );
}

/// Segments are proven while the program still executes: submission answers at once, status
/// shows execution advancing, and a coordinator killed mid-execution resumes the job without
/// cutting any segment twice (each is stored once, under a primary key) or proving any task
/// twice.
#[test]
fn a_coordinator_killed_while_executing_resumes_and_cuts_each_segment_once() {
    // 40 dev segments of 8 instructions, 100 ms of execution each: 4 s of execution.
    let mut server = spawn_server(&[], &["--dev", "--dev-execute-ms", "100"], &[], None);
    let _workers: Vec<Worker> = (0..2)
        .map(|i| server.worker(&format!("w{i}"), &["--dev-segment-ms", "20"]))
        .collect();
    let submitted = Instant::now();
    let job = server.submit("long", 320);
    assert!(
        submitted.elapsed() < Duration::from_secs(2),
        "submission waits for execution"
    );
    let mut seen = Vec::new();
    server.wait_for(
        "segments proven while executing",
        Duration::from_secs(20),
        || {
            let status = server.status(job);
            assert_eq!(status["executing"], true, "{status}");
            seen.push(status["instructions"].as_u64().unwrap());
            let proven = status["phases"][0][1].as_u64().unwrap();
            proven >= 5
        },
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]) && seen.last() > seen.first(),
        "execution advances: {seen:?}"
    );
    server.kill_and_restart();
    server.wait_succeeded(job, Duration::from_secs(60));
    let status = server.status(job);
    assert_eq!(
        status["phases"][0],
        serde_json::json!(["segments", 40, 40]),
        "{status}"
    );
    assert_eq!(status["instructions"], 320, "{status}");
    let events = server.events(job);
    let resumed: u64 = events
        .iter()
        .find_map(|e| e.strip_prefix("execution was interrupted by the restart after "))
        .and_then(|e| e.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert!((5..40).contains(&resumed), "{events:#?}");
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("execution done: 40 segments")),
        "{events:#?}"
    );
    assert_each_task_accepted_once(&events, task_count(&server, job));
}

#[test]
fn a_killed_coordinator_restarts_on_sqlite_and_finishes_its_jobs() {
    coordinator_restart(None);
}

#[test]
fn a_killed_coordinator_restarts_on_postgres_and_finishes_its_jobs() {
    let admin = std::env::var("PLAIT_TEST_POSTGRES_URL").expect(
        "PLAIT_TEST_POSTGRES_URL is not set: run scripts/test.sh (it starts PostgreSQL), \
         or export PLAIT_TEST_POSTGRES_URL=$(scripts/start-postgres.sh)",
    );
    let url = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(plait_coordinator::store::scratch_postgres_database(&admin))
        .unwrap();
    coordinator_restart(Some(url));
}

#[test]
fn client_commands_list_pause_resume_cancel_and_show_events_as_json() {
    let server = serve(&[]);
    let job = server.submit("program", 40);
    let other = server.submit("program", 16);
    let id = job.to_string();
    let paused = server.client(&["pause", &id]);
    assert_eq!(paused["state"], "paused");
    // No worker yet: nothing of the paused job may be handed out once one joins.
    let _worker = server.worker("w", &[]);
    server.wait_succeeded(other, Duration::from_secs(30));
    let status = server.client(&["status", &format!("job-{job}")]);
    assert_eq!(status["state"], "paused");
    assert!(status["phases"][0][1] == 0, "{status}");
    assert_eq!(server.client(&["resume", &id])["state"], "running");
    server.wait_succeeded(job, Duration::from_secs(30));
    let jobs = server.client(&["jobs"]);
    assert_eq!(jobs.as_array().unwrap().len(), 2, "{jobs}");
    // Newest first, a page at a time.
    assert!(
        jobs[0]["job-id"].as_u64() > jobs[1]["job-id"].as_u64(),
        "{jobs}"
    );
    let newest = server.client(&["jobs", "--limit", "1"]);
    assert_eq!(newest.as_array().unwrap().len(), 1, "{newest}");
    assert_eq!(newest[0]["job-id"], jobs[0]["job-id"]);
    let before = format!("job-{}", jobs[0]["job-id"]);
    let older = server.client(&["jobs", "--before", &before]);
    assert_eq!(older.as_array().unwrap().len(), 1, "{older}");
    assert_eq!(older[0]["job-id"], jobs[1]["job-id"]);
    let events = server.client(&["events", &id]);
    let messages: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(messages.contains(&"paused by its owner"), "{messages:#?}");
    assert!(messages.contains(&"running by its owner"), "{messages:#?}");

    // A finished job cannot be cancelled: a 409 with a code, exit code 3 (bad input).
    assert_refused_as_bad_input(
        &["cancel", &id, "--coordinator", &server.url],
        &["409", "invalid-state"],
    );
    let third = server.submit("program", 16).to_string();
    assert_eq!(server.client(&["cancel", &third])["state"], "cancelled");

    let dir = tempfile::tempdir().unwrap();
    let proof = dir.path().join("job.proof");
    let out = plait()
        .args(["fetch", &id, "-o", proof.to_str().unwrap()])
        .args(["--coordinator", &server.url])
        .env("PLAIT_CLIENT_TOKEN", CLIENT_TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(std::fs::read(&proof)
        .unwrap()
        .starts_with(b"PLAIT DEV-BACKEND PROOF"));

    // `plait events … | head`: a reader that goes away ends the command quietly (killed by
    // SIGPIPE, as `cat` would be), not with a panic.
    let mut events = plait()
        .args(["events", &id, "--coordinator", &server.url])
        .env("PLAIT_CLIENT_TOKEN", CLIENT_TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(events.stdout.take()); // the reader is gone before the first line
    let out = events.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
    // The coordinator it talked to is unaffected.
    assert_eq!(server.status(job)["state"], "succeeded");
}

/// `plait prove` runs the embedded pool (coordinator on a scratch SQLite store, worker
/// processes) in one command; with the dev backend its proof is loudly fake and
/// `plait verify` refuses it.
#[test]
fn plait_prove_runs_the_embedded_pool_and_verify_refuses_its_dev_proof() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("dev-program");
    std::fs::write(&program, b"any bytes: the dev backend runs anything").unwrap();
    let proof = dir.path().join("dev.proof");
    let cache = dir.path().join("cache");
    let out = plait()
        .args(["--cache-dir", cache.to_str().unwrap()])
        .args([
            "prove",
            program.to_str().unwrap(),
            "--dev",
            "--workers",
            "2",
        ])
        .args(["--input", "40", "--segment-height", "3"])
        .args(["-o", proof.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("FAKE dev proof"), "{stderr}");
    assert!(std::fs::read(&proof)
        .unwrap()
        .starts_with(b"PLAIT DEV-BACKEND PROOF"));
    let out = plait()
        .args(["--cache-dir", cache.to_str().unwrap()])
        .args(["verify", proof.to_str().unwrap(), "--program"])
        .arg(&program)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A device profile for the dev backend: a segment costs one second per 4 instructions (so
/// every height does the same segment work), each aggregation node 2 s (the wrap 1 s). More
/// segments therefore cost more work but, on a wide pool, finish sooner.
fn dev_profile(dir: &std::path::Path) -> String {
    dev_profile_of(dir, "dev-box", 1.0)
}

/// A dev-backend profile of device `name`, whose every task takes `slowness` times as long.
fn dev_profile_of(dir: &std::path::Path, name: &str, slowness: f64) -> String {
    let segment = |h: u32| {
        serde_json::json!({"segment-height": h, "instructions": 1u64 << h,
            "seconds": (1u64 << h) as f64 / 4.0 * slowness, "peak-rss-bytes": 1 << 20})
    };
    let node = |kind: &str, children: u32, seconds: f64| {
        serde_json::json!({"kind": kind, "children": children, "seconds": seconds * slowness,
            "peak-rss-bytes": 1 << 20})
    };
    let profile = serde_json::json!({
        "format": "plait-device-profile", "format-version": 1,
        "plait-version": env!("CARGO_PKG_VERSION"), "backend": "dev", "backend-version": "0",
        "device": name, "cores": 2, "memory-bytes": 1u64 << 32,
        "tree": {"num-children-leaf": 4, "num-children-internal": 3},
        "segments": [segment(2), segment(3), segment(4)],
        "nodes": [node("leaf", 1, 2.0), node("leaf", 4, 2.0), node("internal-for-leaf", 1, 2.0),
            node("internal-recursive", 1, 2.0), node("wrap", 1, 1.0)],
    });
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, profile.to_string()).unwrap();
    path.display().to_string()
}

impl Server {
    /// `plait submit PROGRAM --input N [args…] --json`, and the job's id.
    fn submit_cli(&self, program: &std::path::Path, instructions: u64, args: &[&str]) -> Value {
        let mut command = vec!["submit", program.to_str().unwrap()];
        let n = instructions.to_string();
        command.extend(["--input", &n]);
        command.extend(args);
        self.client(&command)
    }
}

/// `--segment-size auto`: the coordinator executes the job at each candidate height, simulates
/// each on its pool and picks the goal's height; the job keeps the prediction, and once done its
/// status shows predicted beside measured, as does `plait predictions --coordinator`.
#[test]
fn auto_segment_size_follows_the_goal_and_jobs_show_predicted_and_measured() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dev_profile(dir.path());
    let program = dir.path().join("dev-program");
    std::fs::write(&program, b"dev program").unwrap();
    let pool_of_16 = format!("{profile}:16");
    let server = serve(&["--plan-profile", &pool_of_16, "--plan-heights", "2,3,4"]);

    // 64 instructions: 16, 8 or 4 segments. On 16 workers the most segments finish first; the
    // fewest need the least aggregation work.
    let fast = server.submit_cli(
        &program,
        64,
        &["--segment-size", "auto", "--goal", "latency"],
    );
    assert_eq!(fast["segment-height"], 2, "{fast}");
    let cheap = server.submit_cli(&program, 64, &["--segment-size", "auto", "--goal", "cost"]);
    assert_eq!(cheap["segment-height"], 4, "{cheap}");
    // An explicit height is kept, and still predicted.
    let fixed = server.submit_cli(&program, 64, &["--segment-height", "3"]);
    assert_eq!(fixed["segment-height"], 3, "{fixed}");

    let id = |v: &Value| v["job-id"].as_u64().unwrap();
    // Jobs answer before they execute; a job without `auto` is predicted once it has.
    for job in [&fast, &cheap, &fixed] {
        server.wait_for("execution", Duration::from_secs(20), || {
            server.status(id(job))["executing"] == false
        });
    }
    let status = server.status(id(&fast));
    assert_eq!(
        status["phases"][0],
        serde_json::json!(["segments", 0, 16]),
        "{status}"
    );
    let prediction = &status["prediction"];
    assert_eq!(prediction["goal"], "latency", "{status}");
    assert_eq!(prediction["workers"], 16, "{status}");
    assert!(
        prediction["reason"]
            .as_str()
            .unwrap()
            .contains("lowest predicted latency"),
        "{status}"
    );
    let (t_fast, l_fast) = (
        prediction["latency-seconds"].as_f64().unwrap(),
        prediction["work-seconds"].as_f64().unwrap(),
    );
    let cheap_prediction = &server.status(id(&cheap))["prediction"];
    assert!(t_fast < cheap_prediction["latency-seconds"].as_f64().unwrap());
    assert!(l_fast > cheap_prediction["work-seconds"].as_f64().unwrap());
    assert!(status["measured"].is_null(), "not done yet: {status}");
    let fixed_prediction = &server.status(id(&fixed))["prediction"];
    assert!(fixed_prediction["goal"].is_null(), "{fixed_prediction}");
    assert_eq!(fixed_prediction["segment-height"], 3);

    let _worker = server.worker("w", &[]);
    for job in [&fast, &cheap, &fixed] {
        server.wait_succeeded(id(job), Duration::from_secs(60));
    }
    let done = server.status(id(&fast));
    let measured = &done["measured"];
    assert!(
        measured["latency-seconds"].as_f64().unwrap() > 0.0,
        "{done}"
    );
    let phases: Vec<&str> = measured["work-by-phase"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert_eq!(phases[0], "segments", "{done}");
    assert!(phases.contains(&"wrap"), "{done}");
    // A finished job's elapsed time stops when it ended.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        server.status(id(&fast))["elapsed-seconds"],
        done["elapsed-seconds"]
    );
    let events: Vec<String> = server
        .client(&["events", &id(&fast).to_string()])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("segment height chosen for latency: height 2")),
        "{events:#?}"
    );

    let records = server.client(&["predictions"]);
    assert_eq!(records.as_array().unwrap().len(), 3, "{records}");
    assert_eq!(records[0]["predicted"]["segment-height"], 2, "{records}");
}

/// Without a fixed count, the planner sizes the pool to the workers asking for work; a
/// coordinator without profiles refuses `auto` by name and stores nothing.
#[test]
fn the_planner_sizes_the_pool_to_live_workers_and_auto_needs_a_profile() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dev_profile(dir.path());
    let program = dir.path().join("dev-program");
    std::fs::write(&program, b"dev program").unwrap();
    let server = serve(&["--plan-profile", &profile, "--plan-heights", "2,3,4"]);
    let id = |v: &Value| v["job-id"].as_u64().unwrap();
    let alone = server.submit_cli(&program, 64, &["--segment-size", "auto"]);
    assert_eq!(server.status(id(&alone))["prediction"]["workers"], 1);
    // One worker: latency is best with the fewest segments too.
    assert_eq!(alone["segment-height"], 4, "{alone}");
    let _workers: Vec<_> = (0..3)
        .map(|i| server.worker(&format!("w{i}"), &[]))
        .collect();
    server.wait_succeeded(id(&alone), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let three = server.submit_cli(&program, 64, &["--segment-size", "auto"]);
    assert_eq!(server.status(id(&three))["prediction"]["workers"], 3);

    let bare = serve(&[]);
    assert_refused_as_bad_input(
        &[
            "submit",
            program.to_str().unwrap(),
            "--input",
            "64",
            "--segment-size",
            "auto",
            "--coordinator",
            &bare.url,
        ],
        &["cannot-plan", "no device profile"],
    );
    assert_eq!(bare.client(&["jobs"]).as_array().unwrap().len(), 0);
}

/// A TCP proxy in front of the coordinator that the test can partition. While partitioned it
/// forwards nothing: connections stay open and requests hang, as when packets are dropped
/// between two machines. Healed, it delivers what it held, as TCP does after a short outage.
struct Partition {
    url: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Partition {
    fn in_front_of(upstream: &str) -> Self {
        use std::{
            net::{TcpListener, TcpStream},
            sync::{atomic::AtomicBool, Arc},
        };
        let upstream = upstream.strip_prefix("http://").unwrap().to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        std::thread::spawn(move || {
            for down in listener.incoming().flatten() {
                let Ok(up) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (down2, up2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                let (f1, f2) = (flag.clone(), flag.clone());
                std::thread::spawn(move || Self::pump(down, up, f1));
                std::thread::spawn(move || Self::pump(up2, down2, f2));
            }
        });
        Self { url, cut }
    }

    fn pump(
        mut from: std::net::TcpStream,
        mut to: std::net::TcpStream,
        cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        use std::io::{Read, Write};
        let mut buf = [0u8; 1 << 14];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            while cut.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    }

    fn cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A coordinator with leases of `lease_seconds`, a worker "flaky" behind a partition proxy
/// whose segments take `segment_ms`, and a 1-segment job that flaky has leased.
fn flaky_worker_holding_a_task(
    lease_seconds: &str,
    segment_ms: &str,
) -> (Server, Partition, Worker, u64) {
    let server = serve(&["--lease-seconds", lease_seconds]);
    let net = Partition::in_front_of(&server.url);
    let flaky = server.worker_via(&net.url, "flaky", &["--dev-segment-ms", segment_ms]);
    let job = server.submit("program", 6);
    server.wait_for("the lease", Duration::from_secs(20), || {
        server
            .events(job)
            .iter()
            .any(|e| e.contains("leased to flaky"))
    });
    (server, net, flaky, job)
}

/// A worker whose network drops for less than its lease keeps its task: its heartbeats and
/// result wait out the outage, and the result is accepted.
#[test]
fn a_worker_that_loses_the_network_briefly_keeps_its_task() {
    let (server, net, _flaky, job) = flaky_worker_holding_a_task("6", "1500");
    net.cut(true);
    // The proof is done at 1.5 s; its upload waits for the network.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!server
        .events(job)
        .iter()
        .any(|e| e.contains("task-0 (segments) accepted")));
    net.cut(false);
    server.wait_succeeded(job, Duration::from_secs(30));
    let events = server.events(job);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("task-0 (segments) accepted from flaky")),
        "{events:#?}"
    );
    assert!(!events.iter().any(|e| e.contains("expired")), "{events:#?}");
}

/// A worker cut off for longer than its lease loses the task to another worker; when the
/// network returns, its late result is refused, nothing is accepted twice, and the worker
/// takes new work.
#[test]
fn a_worker_cut_off_past_its_lease_loses_the_task_and_works_on_after() {
    let (server, net, _flaky, job) = flaky_worker_holding_a_task("1", "500");
    net.cut(true);
    let rescuer = server.worker("rescuer", &[]);
    server.wait_succeeded(job, Duration::from_secs(30));
    drop(rescuer);
    net.cut(false);
    assert_lease_lost(&server, job, "flaky");
    // Back on the network, the worker proves the next job on its own.
    let next = server.submit("program", 40);
    server.wait_succeeded(next, Duration::from_secs(60));
    let events = server.events(next);
    assert!(
        events
            .iter()
            .all(|e| !e.contains(" accepted from ") || e.contains("accepted from flaky")),
        "{events:#?}"
    );
    assert_each_task_accepted_once(&events, task_count(&server, next));
}

/// Workers that send their own device profiles are the pool the coordinator plans on, each
/// with its own costs, with no profile given to the coordinator itself.
#[test]
fn the_planner_predicts_on_the_profiles_workers_send() {
    let dir = tempfile::tempdir().unwrap();
    let slow = dev_profile_of(dir.path(), "slow-box", 2.0);
    let fast = dev_profile_of(dir.path(), "fast-box", 0.5);
    let program = dir.path().join("dev-program");
    std::fs::write(&program, b"dev program").unwrap();
    let server = serve(&["--plan-heights", "2,3,4"]);
    let _a = server.worker("a", &["--profile", &slow]);
    let _b = server.worker("b", &["--profile", &fast]);
    let _c = server.worker("c", &["--profile", &fast]);
    server.wait_for("three workers", Duration::from_secs(20), || {
        // A job planned with an explicit height shows the pool it was predicted on.
        let probe = server.submit_cli(&program, 4, &["--segment-height", "2"]);
        let status = server.status(probe["job-id"].as_u64().unwrap());
        status["prediction"]["workers"] == 3
    });
    let job = server.submit_cli(&program, 64, &["--segment-size", "auto", "--goal", "cost"]);
    let prediction = &server.status(job["job-id"].as_u64().unwrap())["prediction"];
    assert_eq!(
        prediction["devices"],
        serde_json::json!([["slow-box", 1], ["fast-box", 2]]),
        "{prediction}"
    );
    // The same job on the slow device alone is predicted to take longer.
    let slow_only = serve(&[
        "--plan-profile",
        &format!("{slow}:3"),
        "--plan-heights",
        "2,3,4",
    ]);
    let alone = slow_only.submit_cli(&program, 64, &["--segment-size", "auto", "--goal", "cost"]);
    let slow_prediction = &slow_only.status(alone["job-id"].as_u64().unwrap())["prediction"];
    assert!(
        slow_prediction["latency-seconds"].as_f64().unwrap()
            > prediction["latency-seconds"].as_f64().unwrap(),
        "{slow_prediction} vs {prediction}"
    );
}

/// `plait serve --tls-cert/--tls-key` serves HTTPS: a worker and the client commands that trust
/// its certificate (`--ca-cert`) prove a job over it; a client that does not trust it, or
/// speaks plain HTTP, gets nothing.
#[test]
fn workers_and_clients_work_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

    let mut server = serve(&["--tls-cert", cert, "--tls-key", key]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    // Untrusted, and plain HTTP: refused before any request is made.
    assert!(server
        .http
        .get(format!("{}/v1/health", server.url))
        .send()
        .is_err());
    let plain = server.url.replace("https://", "http://");
    assert!(server
        .http
        .get(format!("{plain}/v1/health"))
        .send()
        .map_or(true, |r| !r.status().is_success()));
    server.http = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();

    let _worker = server.worker("tls", &["--ca-cert", cert]);
    let job = server.submit("program", 40);
    server.wait_succeeded(job, Duration::from_secs(30));
    let status = server.client(&["status", &job.to_string(), "--ca-cert", cert]);
    assert_eq!(status["state"], "succeeded", "{status}");
    let workers = server.operator(&["list", "--ca-cert", cert]).unwrap();
    assert_eq!(workers.as_array().unwrap().len(), 1, "{workers}");
    // A bad certificate file is named in a clear error.
    assert_refused_as_bad_input(
        &[
            "status",
            "1",
            "--coordinator",
            &server.url,
            "--ca-cert",
            key,
        ],
        &["CA certificate", "key.pem"],
    );
}

/// `GET /metrics`: Prometheus' text format, behind its own token if the operator set one;
/// every metric is `plait_`-prefixed, has HELP and TYPE lines and is documented in
/// `docs/metrics.md`; the counters follow a job through.
#[test]
fn metrics_follow_a_job_and_are_documented() {
    let token = "metrics-secret-for-tests";
    let server = serve(&["--metrics-token", token]);
    assert_eq!(server.get("/metrics", "").status(), 401);
    assert_eq!(server.get("/metrics", CLIENT_TOKEN).status(), 401);
    let scrape = || {
        let response = server.get("/metrics", token);
        assert_eq!(response.status(), 200);
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
        response.text().unwrap()
    };
    let before = scrape();
    assert_eq!(metric(&before, "plait_jobs_submitted_total"), 0.0);

    let job = server.submit("program", 40);
    let segments = |status: &Value| status["phases"][0][2].as_f64().unwrap();
    server.wait_for("the job's segments", Duration::from_secs(20), || {
        let status = server.status(job);
        let ready = metric(&scrape(), r#"plait_ready_tasks{kind="segment"}"#);
        status["executing"] == false && ready == segments(&status) && ready > 1.0
    });
    let segments = segments(&server.status(job));
    let waiting = scrape();
    assert_eq!(metric(&waiting, r#"plait_jobs{state="running"}"#), 1.0);
    assert_eq!(metric(&waiting, "plait_live_workers"), 0.0);

    let _worker = server.worker("w", &[]);
    server.wait_succeeded(job, Duration::from_secs(30));
    let tasks = task_count(&server, job) as f64;
    let after = scrape();
    assert_eq!(metric(&after, "plait_jobs_submitted_total"), 1.0);
    assert_eq!(
        metric(&after, r#"plait_jobs_ended_total{state="succeeded"}"#),
        1.0
    );
    assert_eq!(metric(&after, r#"plait_ready_tasks{kind="segment"}"#), 0.0);
    let accepted: f64 = [
        "segment",
        "leaf",
        "internal-for-leaf",
        "internal-recursive",
        "wrap",
    ]
    .iter()
    .map(|k| {
        metric(
            &after,
            &format!(r#"plait_results_total{{kind="{k}",verdict="accepted"}}"#),
        )
    })
    .sum();
    assert_eq!(accepted, tasks);
    assert_eq!(
        metric(
            &after,
            r#"plait_task_duration_seconds_count{kind="segment"}"#
        ),
        segments
    );
    assert_eq!(
        metric(&after, r#"plait_leases_granted_total{kind="segment"}"#),
        segments
    );
    assert_eq!(
        metric(&after, "plait_execution_duration_seconds_count"),
        1.0
    );
    assert_eq!(metric(&after, "plait_live_workers"), 1.0);
    assert!(metric(&after, "plait_live_workers_memory_bytes") > 0.0);

    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/metrics.md"
    ))
    .unwrap();
    let names: Vec<&str> = after
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(names.len() >= 14, "{after}");
    for name in names {
        assert!(name.starts_with("plait_"), "{name}");
        assert!(
            after.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
        assert!(
            docs.contains(&format!("`{name}`")),
            "docs/metrics.md does not describe {name}"
        );
    }
}

/// `--log-format json`: the coordinator and a worker log one JSON object per line, and the
/// lines about a task carry its job, task, attempt and worker as fields.
#[test]
fn json_logs_name_the_job_task_attempt_and_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (serve_log, worker_log) = (dir.path().join("serve.log"), dir.path().join("worker.log"));
    std::env::set_var("PLAIT_LOG", "info"); // inherited by the processes this test starts
    let json = ["--log-format", "json"];
    let server = spawn_server_logging(&json, &["--dev"], &[], None, Some(serve_log.clone()));
    let mut worker = plait()
        .args(json)
        .args([
            "worker",
            "--dev",
            "--coordinator",
            &server.url,
            "--name",
            "logger",
        ])
        .env("PLAIT_WORKER_TOKEN", WORKER_TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&worker_log).unwrap())
        .spawn()
        .unwrap();
    let job = server.submit("program", 16);
    server.wait_succeeded(job, Duration::from_secs(30));
    let _ = (worker.kill(), worker.wait());

    for (log, message) in [
        (&serve_log, "accepted from"),
        (&worker_log, "result accepted"),
    ] {
        let text = std::fs::read_to_string(log).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let about_task: Vec<&Value> = lines
            .iter()
            .filter(|l| l["message"].as_str().unwrap_or("").contains(message))
            .collect();
        assert!(!about_task.is_empty(), "no {message:?} line in {text}");
        for line in about_task {
            assert_eq!(line["job"], format!("job-{job}"), "{line}");
            assert!(
                line["task"].as_str().unwrap().starts_with("task-"),
                "{line}"
            );
            assert_eq!(line["attempt"], 1, "{line}");
            assert!(
                line["worker"].as_str().unwrap().starts_with("logger"),
                "{line}"
            );
            assert!(line["level"].is_string() && line["timestamp"].is_string());
        }
    }
}

/// A coordinator and a worker start from one config file (no flags but `--dev`), and serve a
/// job; a setting comes from the flag, else its `PLAIT_*` variable, else the file, else the
/// default (`--print-config` shows what is in effect).
#[test]
fn a_pool_starts_from_a_config_file_and_flags_beat_environment_beat_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("plait.toml");
    let store = format!("sqlite://{}", dir.path().join("store.sqlite").display());
    std::fs::write(
        &config,
        format!(
            "version = 1\n\n[serve]\nlisten = \"127.0.0.1:0\"\nworker-token = \"{WORKER_TOKEN}\"\n\
             client-token = \"{CLIENT_TOKEN}\"\nstore = \"{store}\"\nlease-seconds = 5\n\n\
             [worker]\ntoken = \"{WORKER_TOKEN}\"\nname = \"configured\"\n"
        ),
    )
    .unwrap();
    let printed = |env: &[(&str, &str)], flags: &[&str]| -> toml::Table {
        let out = plait()
            .args(["serve", "--print-config", "--config"])
            .arg(&config)
            .args(flags)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.contains(CLIENT_TOKEN), "tokens are hidden: {text}");
        text.parse::<toml::Table>().unwrap()["serve"]
            .as_table()
            .unwrap()
            .clone()
    };
    let lease = |t: &toml::Table| t["lease-seconds"].as_integer().unwrap();
    assert_eq!(lease(&printed(&[], &[])), 5, "the file");
    assert_eq!(
        lease(&printed(&[("PLAIT_LEASE_SECONDS", "7")], &[])),
        7,
        "env beats file"
    );
    let both = printed(&[("PLAIT_LEASE_SECONDS", "7")], &["--lease-seconds", "9"]);
    assert_eq!(lease(&both), 9, "flag beats env");
    assert_eq!(
        both["max-lease-seconds"].as_integer(),
        Some(7200),
        "the default"
    );

    let server = Server::adopt(
        plait()
            .args(["serve", "--dev", "--config"])
            .arg(&config)
            .env_remove("PLAIT_WORKER_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _worker = Worker(
        plait()
            .args(["worker", "--dev", "--config"])
            .arg(&config)
            .env("PLAIT_COORDINATOR", &server.url)
            .env_remove("PLAIT_WORKER_TOKEN")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let job = server.submit("program", 16);
    server.wait_succeeded(job, Duration::from_secs(30));
    let events = server.events(job);
    assert!(
        events.iter().any(|e| e.contains("leased to configured-")),
        "{events:#?}"
    );
}

/// Two clients with credentials of their own: one submits 20 jobs, the other one job later;
/// the later job is not starved (its first task is leased within one lease round of its
/// segments being ready, and it finishes long before the first client's jobs). Each client
/// sees and acts on its own jobs only (another's is 404), within its limits; a revoked
/// credential is refused.
#[test]
fn two_clients_share_the_pool_fairly_and_see_only_their_own_jobs() {
    let server = serve(&[]);
    let issue = |id: &str, extra: &[&str]| -> String {
        let mut args = vec!["issue", id];
        args.extend_from_slice(extra);
        let issued = server.clients(&args).unwrap();
        assert_eq!(issued["client-id"], id);
        issued["token"].as_str().unwrap().to_string()
    };
    let busy = issue("busy", &[]);
    let late = issue("late", &["--max-jobs", "1", "--max-instructions", "100000"]);
    let job_of = |response: reqwest::blocking::Response| -> u64 {
        let status = response.status();
        let body: Value = response.json().unwrap();
        assert!(status.is_success(), "{status}: {body}");
        body["job-id"].as_u64().unwrap()
    };
    let busy_jobs: Vec<u64> = (0..20)
        .map(|i| job_of(server.submit_as(&busy, &format!("busy-{i}"), 40, 100_000)))
        .collect();
    // One worker, one task at a time: a lease round is one task.
    let _worker = server.worker("w", &["--dev-segment-ms", "300"]);
    server.wait_for(
        "the first busy job to start",
        Duration::from_secs(20),
        || server.status_as(&busy, busy_jobs[0])["phases"][0][1].as_u64() > Some(0),
    );

    let accepted = || {
        let text = server.metrics();
        text.lines()
            .filter(|l| l.starts_with("plait_results_total{") && l.contains("accepted"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    let late_job = job_of(server.submit_as(&late, "late", 16, 100_000));
    server.wait_for("the late job's segments", Duration::from_secs(20), || {
        server.status_as(&late, late_job)["executing"] == false
    });
    let ready_at = accepted();
    server.wait_for(
        "the late job's first lease",
        Duration::from_secs(20),
        || {
            server
                .events_as(&late, late_job)
                .iter()
                .any(|e| e.contains("leased to"))
        },
    );
    assert!(
        accepted() - ready_at <= 1.0,
        "the worker finished {} other tasks before the late job got one",
        accepted() - ready_at
    );
    server.wait_for("the late job", Duration::from_secs(60), || {
        server.status_as(&late, late_job)["state"] == "succeeded"
    });
    let last_busy = server.status_as(&busy, busy_jobs[19]);
    assert_eq!(
        last_busy["state"], "running",
        "busy's jobs are far from done: {last_busy}"
    );

    // Each sees its own jobs only, newest first, a page at a time; another's job is 404, for
    // reading and for acting.
    let listed = |token: &str, query: &str| -> Vec<u64> {
        let jobs: Vec<Value> = server
            .get(&format!("/v1/jobs{query}"), token)
            .json()
            .unwrap();
        jobs.iter().map(|j| j["job-id"].as_u64().unwrap()).collect()
    };
    assert_eq!(listed(&late, ""), vec![late_job]);
    let newest_first: Vec<u64> = busy_jobs.iter().rev().copied().collect();
    assert_eq!(listed(&busy, ""), newest_first);
    let first_page = listed(&busy, "?limit=8");
    assert_eq!(first_page, newest_first[..8]);
    let next = format!("?limit=8&before={}", first_page[7]);
    assert_eq!(listed(&busy, &next), newest_first[8..16]);
    for path in ["", "/events", "/timings", "/proof"] {
        let response = server.get(&format!("/v1/jobs/{}{path}", busy_jobs[0]), &late);
        assert_eq!(response.status(), 404, "{path}");
    }
    let cancel = server
        .http
        .post(format!("{}/v1/jobs/{late_job}/cancel", server.url))
        .bearer_auth(&busy)
        .send()
        .unwrap();
    assert_eq!(cancel.status(), 404);
    assert_eq!(
        server.get(&format!("/v1/jobs/{late_job}"), &late).status(),
        200
    );

    // A priority past its bounds is refused (it orders jobs: i32::MIN could not be negated).
    let upload: Value = server
        .post_bytes("/v1/programs", &busy, b"p".to_vec())
        .json()
        .unwrap();
    let extreme = server
        .http
        .post(format!("{}/v1/jobs", server.url))
        .bearer_auth(&busy)
        .json(&serde_json::json!({
            "program-sha256": upload["program-sha256"],
            "input": {"items": [16u64.to_le_bytes().to_vec()]},
            "params": {
                "segment-height": 3,
                "tree": {"num-children-leaf": 4, "num-children-internal": 3},
                "max-instructions": 1000,
            },
            "priority": i32::MIN,
        }))
        .send()
        .unwrap();
    assert_eq!(extreme.status(), 400);
    let body: Value = extreme.json().unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("priority"),
        "{body}"
    );

    // Limits: an over-large job is refused (403), and a second job in flight (429).
    let refused = server.submit_as(&late, "big", 16, 100_001);
    assert_eq!(refused.status(), 403);
    let late_second = job_of(server.submit_as(&late, "second", 16, 100_000));
    let third = server.submit_as(&late, "third", 16, 100_000);
    assert_eq!(third.status(), 429);
    let body: Value = third.json().unwrap();
    assert_eq!(body["code"], "too-many-jobs", "{body}");
    let _ = late_second;

    // The operator sees both (and the shared token's client), and revoking ends a credential.
    let clients = server.clients(&["list"]).unwrap();
    let names: Vec<&str> = clients
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client-id"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["busy", "default", "late"],
        "the shared token's client too"
    );
    server.clients(&["revoke", "late"]);
    assert_eq!(server.get("/v1/jobs", &late).status(), 401);
}

/// Runs Debian's Chromium headless on a dashboard page (tokens in the fragment, which never
/// reaches the server) and returns the DOM after its scripts ran; with `screenshot`, also
/// saves a picture of it under `target/ui-screenshots/` (CI keeps them as artifacts).
fn browse(server: &Server, fragment: &str, screenshot: Option<&str>) -> String {
    let url = format!(
        "{}/ui#{fragment}&token={CLIENT_TOKEN}&operator={OPERATOR_TOKEN}",
        server.url
    );
    let chromium = |extra: &[String]| {
        let out = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .args(["--window-size=1200,900", "--virtual-time-budget=3000"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs the dashboard test: scripts/install-deps.sh installs it");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    if let Some(name) = screenshot {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        chromium(&[format!("--screenshot={}", dir.join(name).display())]);
    }
    chromium(&["--dump-dom".to_string()])
}

/// The states of the tree's nodes the page drew, counted.
fn node_states(dom: &str) -> std::collections::BTreeMap<String, usize> {
    let mut states = std::collections::BTreeMap::new();
    for node in dom.split("data-task=\"").skip(1) {
        let state = node
            .split("data-state=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap();
        // (The page's own script text holds the template, not a state.)
        if state.chars().all(|c| c.is_ascii_lowercase()) {
            *states.entry(state.to_string()).or_default() += 1;
        }
    }
    states
}

/// The live dashboard in a real headless browser: the job list, a job's aggregation tree
/// whose node states change as the job proceeds (all ready before any worker, all accepted
/// after), its event log, and the workers page with what each worker did.
#[test]
fn the_dashboard_shows_a_jobs_tree_change_as_it_is_proven() {
    let server = serve(&[]);
    // Its CSP allows no inline script or style (so shown text cannot run), and the page has
    // none: everything below runs under that policy in the browser.
    for path in ["/ui", "/ui/dashboard.js", "/ui/dashboard.css"] {
        let response = server.get(path, "");
        assert_eq!(response.status(), 200, "{path}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            !csp.contains("unsafe-inline") && csp.contains("script-src 'self'"),
            "{csp}"
        );
    }
    let page = server.get("/ui", "").text().unwrap();
    assert!(
        !page.contains("<style") && !page.contains("style="),
        "{page}"
    );
    assert!(page.matches("<script").count() == page.matches("<script src=").count());
    let job = server.submit("program", 40);
    server.wait_for("the job's segments", Duration::from_secs(20), || {
        server.status(job)["executing"] == false
    });
    let tasks = task_count(&server, job);
    let before = browse(&server, &format!("job/{job}"), Some("job-before.png"));
    let states = node_states(&before);
    let segments = server.status(job)["phases"][0][2].as_u64().unwrap() as usize;
    assert_eq!(states.get("ready"), Some(&segments), "{states:?}");
    assert_eq!(states.get("accepted"), None, "{states:?}");
    assert!(
        before.contains("submitted; executing"),
        "the event log is shown"
    );

    let slow = ["--dev-segment-ms", "700", "--dev-aggregate-ms", "700"];
    let _worker = server.worker("laptop", &slow);
    server.wait_for("some tasks accepted", Duration::from_secs(20), || {
        server.status(job)["phases"][0][1].as_u64() >= Some(2)
    });
    let during = node_states(&browse(
        &server,
        &format!("job/{job}"),
        Some("job-during.png"),
    ));
    assert!(
        during.get("accepted").is_some_and(|&n| n >= 2 && n < tasks),
        "{during:?}"
    );

    server.wait_succeeded(job, Duration::from_secs(30));
    let after = browse(&server, &format!("job/{job}"), Some("job-after.png"));
    assert_eq!(
        node_states(&after),
        [("accepted".to_string(), tasks)].into(),
        "every node accepted"
    );
    assert!(after.contains("final proof assembled and verified"));
    let events = server.events(job);
    let last: Vec<Value> = server
        .get(&format!("/v1/jobs/{job}/events?last=3"), CLIENT_TOKEN)
        .json()
        .unwrap();
    let last: Vec<&str> = last
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        last,
        events[events.len() - 3..],
        "the page reads the log's tail"
    );

    let jobs = browse(&server, "jobs", Some("jobs.png"));
    assert!(jobs.contains(&format!("job-{job}")) && jobs.contains("succeeded"));
    let workers = browse(&server, "workers", Some("workers.png"));
    let row = workers
        .split("data-worker=\"laptop-")
        .nth(1)
        .expect("the worker's row");
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains(&format!("<td>{tasks}</td>")),
        "tasks done: {row}"
    );

    // A job of more tasks than the tree call sends node by node: one bar per layer, with the
    // tasks leased now (the worker's) drawn beside it.
    let large = server.submit("large program", 8 * 4000);
    server.wait_for("the large job's segments", Duration::from_secs(60), || {
        server.status(large)["executing"] == false
    });
    server.wait_for("a lease of the large job", Duration::from_secs(20), || {
        server.status(large)["phases"][0][1].as_u64() >= Some(1)
    });
    let dom = browse(&server, &format!("job/{large}"), Some("job-large.png"));
    assert!(dom.contains("each layer counted by state"), "{dom}");
    assert!(dom.matches("class=\"bar\"").count() >= 4, "a bar per layer");
    let drawn = node_states(&dom);
    assert!(
        drawn.values().sum::<usize>() <= 2,
        "only the leased or failing tasks are drawn: {drawn:?}"
    );
}

/// `docs/openapi.json` is what the coordinator serves at `/v1/openapi.json`, and every route
/// it describes exists and checks the token it says it does. Regenerate the file after a
/// route or wire type changed with `PLAIT_UPDATE_OPENAPI=1 cargo test --release -p plait-cli
/// --test pool_dev the_api_description`.
#[test]
fn the_api_description_is_served_committed_and_true() {
    let server = serve(&["--metrics-token", "metrics-secret-for-tests"]);
    let response = server.get("/v1/openapi.json", "");
    assert_eq!(response.status(), 200);
    let served = response.text().unwrap();
    let committed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    if std::env::var_os("PLAIT_UPDATE_OPENAPI").is_some() {
        std::fs::write(committed_path, format!("{served}\n")).unwrap();
    }
    let committed = std::fs::read_to_string(committed_path).unwrap_or_default();
    if committed.trim_end() != served {
        let line = committed
            .lines()
            .zip(served.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(served.lines().count()));
        panic!(
            "docs/openapi.json differs from the API the coordinator serves (first at line {}: \
             committed {:?}, served {:?}); if the change is intended, regenerate it with \
             PLAIT_UPDATE_OPENAPI=1 cargo test --release -p plait-cli --test pool_dev \
             the_api_description",
            line + 1,
            committed.lines().nth(line),
            served.lines().nth(line)
        );
    }

    let api: Value = serde_json::from_str(&served).unwrap();
    assert!(api["openapi"].as_str().unwrap().starts_with("3."));
    let schemes = api["components"]["securitySchemes"].as_object().unwrap();
    let paths = api["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        // Any value will do for a path parameter: the route must exist whatever the job is.
        let concrete: String = path
            .split('/')
            .map(|part| match part {
                "{action}" => "pause",
                p if p.starts_with('{') => "1",
                p => p,
            })
            .collect::<Vec<_>>()
            .join("/");
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let request = server.http.request(
                method.to_uppercase().parse().unwrap(),
                format!("{}{concrete}", server.url),
            );
            let response = request.send().unwrap();
            let status = response.status().as_u16();
            let body = response.text().unwrap_or_default();
            assert!(
                !body.contains("\"code\":\"not-found\"") && status != 405,
                "{method} {path} is described but not served: {status} {body}"
            );
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            if secured {
                let scheme = operation["security"][0].as_object().unwrap().keys().next();
                assert!(schemes.contains_key(scheme.unwrap()), "{method} {path}");
                assert_eq!(status, 401, "{method} {path} without a token: {body}");
            } else {
                assert_eq!(status, 200, "{method} {path} needs no token: {body}");
            }
            assert!(
                operation["responses"]["default"].is_object(),
                "{method} {path} describes its error body"
            );
        }
    }
    // The worker protocol, the client and operator routes, health, metrics, the dashboard and
    // this description.
    assert_eq!(
        operations,
        35,
        "{}",
        paths.keys().cloned().collect::<Vec<_>>().join("\n")
    );
}
