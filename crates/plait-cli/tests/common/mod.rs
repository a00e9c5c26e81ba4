//! What the pool's process-level test suites share: a coordinator (`plait serve`) and dev
//! workers as real processes on 127.0.0.1, and clients of its HTTP API.
#![allow(dead_code)] // each test crate uses its own part

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const WORKER_TOKEN: &str = "worker-secret-for-tests";
pub const OPERATOR_TOKEN: &str = "operator-secret-for-tests";
pub const CLIENT_TOKEN: &str = "client-secret-for-tests";

pub fn plait() -> Command {
    Command::new(env!("CARGO_BIN_EXE_plait"))
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub http: reqwest::blocking::Client,
    /// How it was started, to start it again on the same address and store.
    global: Vec<String>,
    args: Vec<String>,
    store: String,
    /// Where its stderr goes (discarded if none).
    log: Option<std::path::PathBuf>,
    _store_dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub struct Worker(pub Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Worker {
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

pub fn serve(extra: &[&str]) -> Server {
    spawn_server(&[], &["--dev"], extra, None)
}

/// Starts `plait [global] serve [args…]` on a free loopback port, on a fresh SQLite store or
/// on `store`, and reads the address it prints.
pub fn spawn_server(
    global: &[&str],
    args: &[&str],
    extra: &[&str],
    store: Option<String>,
) -> Server {
    spawn_server_logging(global, args, extra, store, None)
}

/// [`spawn_server`], writing the coordinator's stderr to `log`.
pub fn spawn_server_logging(
    global: &[&str],
    args: &[&str],
    extra: &[&str],
    store: Option<String>,
    log: Option<std::path::PathBuf>,
) -> Server {
    let store_dir = tempfile::tempdir().unwrap();
    let store = store.unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            store_dir.path().join("store.sqlite").display()
        )
    });
    let owned = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut args = owned(args);
    args.extend(owned(extra));
    let (child, url) = start_serve(&owned(global), &args, &store, "127.0.0.1:0", log.as_deref());
    Server {
        url,
        child,
        http: reqwest::blocking::Client::new(),
        global: owned(global),
        args,
        store,
        log,
        _store_dir: store_dir,
    }
}

pub fn start_serve(
    global: &[String],
    args: &[String],
    store: &str,
    listen: &str,
    log: Option<&std::path::Path>,
) -> (Child, String) {
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
        None => Stdio::null(),
    };
    let mut child = plait()
        .args(global)
        .args(["serve", "--listen", listen, "--store", store])
        // By environment, so that a test can close the pool with `--worker-token ""`.
        .env("PLAIT_WORKER_TOKEN", WORKER_TOKEN)
        .args(["--client-token", CLIENT_TOKEN])
        .args(["--operator-token", OPERATOR_TOKEN])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let url = listening_url(&mut child);
    (child, url)
}

/// The address `plait serve` prints first on stdout.
fn listening_url(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("plait serve printed {line:?}"))
        .to_string()
}

impl Server {
    /// A coordinator the test started itself (on a store it keeps), printing `listening on
    /// URL` first; killed on drop. It cannot be restarted.
    pub fn adopt(mut child: Child) -> Server {
        let url = listening_url(&mut child);
        Server {
            child,
            url,
            http: reqwest::blocking::Client::new(),
            global: Vec::new(),
            args: Vec::new(),
            store: String::new(),
            log: None,
            _store_dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Kills the coordinator with SIGKILL and starts it again on the same address and store.
    pub fn kill_and_restart(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
        let listen = self.url.strip_prefix("http://").unwrap().to_string();
        let log = self.log.as_deref();
        let (child, url) = start_serve(&self.global, &self.args, &self.store, &listen, log);
        assert_eq!(url, self.url);
        self.child = child;
    }

    /// `GET /metrics` (open: the test servers give it no token).
    pub fn metrics(&self) -> String {
        let response = self.get("/metrics", "");
        assert_eq!(response.status(), 200);
        response.text().unwrap()
    }

    /// Runs a client command (`plait status …`) against this coordinator; returns its JSON.
    pub fn client(&self, args: &[&str]) -> Value {
        self.run_json(args, ("PLAIT_CLIENT_TOKEN", CLIENT_TOKEN))
            .expect("client commands print JSON with --json")
    }

    /// Runs `plait ARGS --coordinator URL --json` with `token` in the environment; it must
    /// succeed. Its JSON answer, if it printed one.
    fn run_json(&self, args: &[&str], (variable, token): (&str, &str)) -> Option<Value> {
        let out = plait()
            .args(args)
            .args(["--coordinator", &self.url, "--json"])
            .env(variable, token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "plait {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn worker(&self, id: &str, extra: &[&str]) -> Worker {
        self.worker_via(&self.url, id, extra)
    }

    /// A worker that reaches the coordinator at `url` (a proxy, say).
    pub fn worker_via(&self, url: &str, id: &str, extra: &[&str]) -> Worker {
        Worker(
            plait()
                .args(["worker", "--dev", "--coordinator", url, "--name", id])
                .env("PLAIT_WORKER_TOKEN", WORKER_TOKEN)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// `POST /v1/worker/register` for `name`, presenting `token`: the answer as it is.
    pub fn register_as(&self, token: &str, name: &str) -> reqwest::blocking::Response {
        self.http
            .post(format!("{}/v1/worker/register", self.url))
            .bearer_auth(token)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .unwrap()
    }

    /// Registers a worker named `name` with the pool token, as `plait worker` does: the id
    /// the coordinator gave it and its credential.
    pub fn register(&self, name: &str) -> (String, String) {
        let response = self.register_as(WORKER_TOKEN, name);
        assert!(response.status().is_success(), "{}", response.status());
        let body: Value = response.json().unwrap();
        (
            body["worker-id"].as_str().unwrap().to_string(),
            body["credential"].as_str().unwrap().to_string(),
        )
    }

    /// Runs `plait workers ARGS` as the operator; its JSON answer, if it printed one.
    pub fn operator(&self, args: &[&str]) -> Option<Value> {
        let args: Vec<&str> = std::iter::once("workers")
            .chain(args.iter().copied())
            .collect();
        self.run_json(&args, ("PLAIT_OPERATOR_TOKEN", OPERATOR_TOKEN))
    }

    /// `plait clients ARGS` as the operator; its JSON answer, if any.
    pub fn clients(&self, args: &[&str]) -> Option<Value> {
        let args: Vec<&str> = std::iter::once("clients")
            .chain(args.iter().copied())
            .collect();
        self.run_json(&args, ("PLAIT_OPERATOR_TOKEN", OPERATOR_TOKEN))
    }

    pub fn get(&self, path: &str, token: &str) -> reqwest::blocking::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .unwrap()
    }

    pub fn post_bytes(
        &self,
        path: &str,
        token: &str,
        body: Vec<u8>,
    ) -> reqwest::blocking::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .body(body)
            .send()
            .unwrap()
    }

    /// Uploads a dev program and submits a job of `instructions` dev instructions.
    pub fn submit(&self, name: &str, instructions: u64) -> u64 {
        let response = self.submit_as(CLIENT_TOKEN, name, instructions, 1_000_000);
        let job: Value = response.json().unwrap();
        job["job-id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no job id in {job}"))
    }

    /// Submits a dev job as the client holding `token`, allowing `max_instructions`; the
    /// coordinator's answer as it is.
    pub fn submit_as(
        &self,
        token: &str,
        name: &str,
        instructions: u64,
        max_instructions: u64,
    ) -> reqwest::blocking::Response {
        let upload: Value = self
            .post_bytes("/v1/programs", token, name.as_bytes().to_vec())
            .json()
            .unwrap();
        let sha256 = upload["program-sha256"].as_str().unwrap();
        self.submit_items_as(
            token,
            sha256,
            vec![instructions.to_le_bytes().to_vec()],
            max_instructions,
        )
    }

    /// Submits a dev job of the program `sha256` (height 3) with these input items, as the
    /// client of `token`.
    pub fn submit_items_as(
        &self,
        token: &str,
        sha256: &str,
        items: Vec<Vec<u8>>,
        max_instructions: u64,
    ) -> reqwest::blocking::Response {
        self.http
            .post(format!("{}/v1/jobs", self.url))
            .bearer_auth(token)
            .json(&serde_json::json!({
                "program-sha256": sha256,
                "input": {"items": items},
                "params": {
                    "segment-height": 3,
                    "tree": {"num-children-leaf": 4, "num-children-internal": 3},
                    "max-instructions": max_instructions,
                },
            }))
            .send()
            .unwrap()
    }

    pub fn status(&self, job: u64) -> Value {
        self.status_as(CLIENT_TOKEN, job)
    }

    pub fn status_as(&self, token: &str, job: u64) -> Value {
        self.get(&format!("/v1/jobs/{job}"), token).json().unwrap()
    }

    pub fn events(&self, job: u64) -> Vec<String> {
        self.events_as(CLIENT_TOKEN, job)
    }

    pub fn events_as(&self, token: &str, job: u64) -> Vec<String> {
        let events: Vec<Value> = self
            .get(&format!("/v1/jobs/{job}/events"), token)
            .json()
            .unwrap();
        events
            .into_iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn wait_for(&self, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < timeout, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_succeeded(&self, job: u64, timeout: Duration) {
        self.wait_for(&format!("job {job}"), timeout, || {
            let status = self.status(job);
            assert_ne!(status["state"], "failed", "{status}");
            status["state"] == "succeeded"
        });
    }
}

/// Runs a client command (`plait ARGS`, with the client token) that must fail as bad input:
/// exit code 3, with each of `needles` in its error.
pub fn assert_refused_as_bad_input(args: &[&str], needles: &[&str]) {
    let out = plait()
        .args(args)
        .env("PLAIT_CLIENT_TOKEN", CLIENT_TOKEN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
}

/// The job's log shows `worker`'s lease expiring and none of its results accepted, and every
/// task accepted exactly once (by someone else).
pub fn assert_lease_lost(server: &Server, job: u64, worker: &str) {
    let events = server.events(job);
    assert!(
        events.iter().any(|e| e.contains("lease expired")),
        "{events:#?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.contains(&format!("accepted from {worker}"))),
        "{events:#?}"
    );
    assert_each_task_accepted_once(&events, task_count(server, job));
}

/// Counts "task-N (...) accepted" events per task; every task must appear exactly once.
pub fn assert_each_task_accepted_once(events: &[String], tasks: usize) {
    let mut accepted: HashMap<String, usize> = HashMap::new();
    for e in events.iter().filter(|e| e.contains(") accepted from ")) {
        *accepted
            .entry(e.split(' ').next().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(accepted.len(), tasks, "{events:#?}");
    assert!(accepted.values().all(|&n| n == 1), "{accepted:?}");
}

pub fn task_count(server: &Server, job: u64) -> usize {
    let status = server.status(job);
    status["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[2].as_u64().unwrap() as usize)
        .sum()
}

/// The value of one series (`name{labels}` exactly as exposed) in a metrics text.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}
