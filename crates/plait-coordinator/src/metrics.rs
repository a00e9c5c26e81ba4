//! The coordinator's Prometheus metrics, served at `GET /metrics` in the text exposition
//! format. Counters and histograms are updated as things happen; gauges are read from the
//! coordinator's state at each scrape. `docs/metrics.md` describes each one.
//!
//! Labels take a few fixed values only (task kinds, job states, verdicts): nothing a worker
//! or client names becomes a label, so no one can grow the number of series.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The kinds of task, as labels.
pub const TASK_KINDS: [&str; 5] = [
    "segment",
    "leaf",
    "internal-for-leaf",
    "internal-recursive",
    "wrap",
];

/// The coordinator's Prometheus metrics (served at `/metrics`).
pub struct Metrics {
    registry: Registry,
    /// Leases granted, by task kind.
    pub leases_granted: IntCounterVec,
    /// Leases that expired, by task kind.
    pub leases_expired: IntCounterVec,
    /// Calls about leases that had ended, by call.
    pub stale_requests: IntCounterVec,
    /// Results received, by task kind and verdict.
    pub results: IntCounterVec,
    /// Seconds from lease to accepted result, by task kind.
    pub task_seconds: HistogramVec,
    /// Jobs submitted.
    pub jobs_submitted: IntCounter,
    /// Jobs ended, by final state.
    pub jobs_ended: IntCounterVec,
    /// Seconds jobs' executions took.
    pub execution_seconds: Histogram,
    /// Seconds choosing a segment height took, by outcome.
    pub planning_seconds: HistogramVec,
    /// Store writes that failed.
    pub store_errors: IntCounter,
    ready_tasks: IntGaugeVec,
    jobs: IntGaugeVec,
    live_workers: IntGauge,
    live_workers_memory: IntGauge,
}

/// What the gauges show, read from the coordinator at a scrape.
#[derive(Default)]
pub struct Gauges {
    /// (task kind, ready tasks of that kind).
    pub ready_tasks: Vec<(&'static str, i64)>,
    /// (job state, jobs in it) for the jobs that are not over.
    pub jobs: Vec<(&'static str, i64)>,
    /// Workers that asked for work within a lease period.
    pub live_workers: i64,
    /// The memory those workers advertised, summed.
    pub live_workers_memory_bytes: i64,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// Metrics registered in a registry of their own.
    pub fn new() -> Self {
        let registry = Registry::new();
        // Seconds, from 10 ms (dev backend) to over two hours (the longest lease).
        let seconds = exponential_buckets(0.01, 3.0, 14).expect("valid buckets");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(opts(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(opts(name, help)).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(opts(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique name");
            g
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(opts(name, help)).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique name");
            g
        };
        let histogram_vec = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(seconds.clone()),
                labels,
            )
            .expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique name");
            h
        };
        let metrics = Self {
            leases_granted: counter_vec(
                "plait_leases_granted_total",
                "Tasks leased to workers, by task kind.",
                &["kind"],
            ),
            leases_expired: counter_vec(
                "plait_leases_expired_total",
                "Leases that ran out (no heartbeat, or past their time limit) and were handed \
                 out again, by task kind.",
                &["kind"],
            ),
            stale_requests: counter_vec(
                "plait_stale_requests_total",
                "Results and heartbeats for a lease that is no longer current (expired, \
                 replaced or already done), by request.",
                &["request"],
            ),
            results: counter_vec(
                "plait_results_total",
                "Results checked, by task kind and verdict (accepted, rejected, or cannot-check: the \
                 coordinator could not check and nothing was counted).",
                &["kind", "verdict"],
            ),
            task_seconds: histogram_vec(
                "plait_task_duration_seconds",
                "Seconds from lease to accepted result, by task kind.",
                &["kind"],
            ),
            jobs_submitted: counter("plait_jobs_submitted_total", "Jobs submitted."),
            jobs_ended: counter_vec(
                "plait_jobs_ended_total",
                "Jobs that ended, by final state (succeeded, failed, cancelled).",
                &["state"],
            ),
            execution_seconds: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "plait_execution_duration_seconds",
                        "Seconds a job's program took to execute (and cut into segments).",
                    )
                    .buckets(seconds.clone()),
                )
                .expect("valid metric");
                registry.register(Box::new(h.clone())).expect("unique name");
                h
            },
            planning_seconds: histogram_vec(
                "plait_planning_duration_seconds",
                "Seconds the planner took, by step: choose-height (`auto` jobs) or predict.",
                &["step"],
            ),
            store_errors: counter(
                "plait_store_errors_total",
                "Writes to the store that failed (they are retried with the next write).",
            ),
            ready_tasks: gauge_vec(
                "plait_ready_tasks",
                "Tasks ready to be leased now, by task kind.",
                &["kind"],
            ),
            jobs: gauge_vec(
                "plait_jobs",
                "Jobs that are not over, by state (executing, running, paused).",
                &["state"],
            ),
            live_workers: gauge(
                "plait_live_workers",
                "Workers that asked for work within the last lease period.",
            ),
            live_workers_memory: gauge(
                "plait_live_workers_memory_bytes",
                "Memory the live workers advertised, in all.",
            ),
            registry,
        };
        // Every label value shows from the start, at 0.
        for request in ["result", "heartbeat"] {
            metrics.stale_requests.with_label_values(&[request]);
        }
        for state in ["succeeded", "failed", "cancelled"] {
            metrics.jobs_ended.with_label_values(&[state]);
        }
        for step in ["choose-height", "predict"] {
            metrics.planning_seconds.with_label_values(&[step]);
        }
        for kind in TASK_KINDS {
            metrics.leases_granted.with_label_values(&[kind]);
            metrics.leases_expired.with_label_values(&[kind]);
            metrics.ready_tasks.with_label_values(&[kind]);
            for verdict in ["accepted", "rejected", "cannot-check"] {
                metrics.results.with_label_values(&[kind, verdict]);
            }
        }
        metrics
    }

    /// The text exposition of every metric, with the gauges set to `gauges`.
    pub fn render(&self, gauges: Gauges) -> String {
        for kind in TASK_KINDS {
            let ready = gauges
                .ready_tasks
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, n)| n)
                .sum();
            self.ready_tasks.with_label_values(&[kind]).set(ready);
        }
        for state in ["executing", "running", "paused"] {
            self.jobs.with_label_values(&[state]).set(0);
        }
        for (state, n) in gauges.jobs {
            self.jobs.with_label_values(&[state]).add(n);
        }
        self.live_workers.set(gauges.live_workers);
        self.live_workers_memory
            .set(gauges.live_workers_memory_bytes);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of valid metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_plait_prefixed_with_help_and_type() {
        let metrics = Metrics::new();
        metrics
            .results
            .with_label_values(&["leaf", "accepted"])
            .inc();
        metrics
            .task_seconds
            .with_label_values(&["leaf"])
            .observe(2.5);
        let text = metrics.render(Gauges {
            ready_tasks: vec![("segment", 3), ("segment", 2)],
            jobs: vec![("running", 1)],
            live_workers: 2,
            live_workers_memory_bytes: 16 << 30,
        });
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(names.len(), 14, "{text}");
        for name in names {
            assert!(name.starts_with("plait_"), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
        assert!(
            text.contains("plait_ready_tasks{kind=\"segment\"} 5"),
            "{text}"
        );
        assert!(text.contains("plait_results_total{kind=\"leaf\",verdict=\"accepted\"} 1"));
        assert!(text.contains("plait_task_duration_seconds_count{kind=\"leaf\"} 1"));
        assert!(text.contains("plait_live_workers_memory_bytes 17179869184"));
    }
}
