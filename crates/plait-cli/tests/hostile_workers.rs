//! The adversarial suite: a hostile client holding the pool's worker token attacks a job an
//! honest worker proves (dev backend, real processes on 127.0.0.1). Whatever it tries, the job
//! completes, every task is accepted once, and the honest worker is neither blamed nor banned.

mod common;

use std::time::Duration;

use common::*;
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
