//! Metrics: the Prometheus text, with gauges read from the shared state when scraped.

use std::collections::HashMap;

use crate::{job_status::JobStatus, metrics::Gauges};

use super::Coordinator;

impl Coordinator {
    /// The metrics in Prometheus' text format, the gauges read now.
    pub fn metrics_text(&self) -> String {
        let mut gauges = Gauges::default();
        {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            let mut ready = std::collections::BTreeMap::new();
            let mut states = std::collections::BTreeMap::new();
            for job in jobs.values_mut() {
                for (kind, n) in job.ready_by_kind() {
                    *ready.entry(kind).or_insert(0) += n;
                }
                // An ended job is only waiting to leave memory.
                if !job.status.is_live() {
                    continue;
                }
                let state = if job.executing && job.status == JobStatus::Running {
                    "executing"
                } else {
                    job.status.name()
                };
                *states.entry(state).or_insert(0) += 1;
            }
            gauges.ready_tasks = ready.into_iter().collect();
            gauges.jobs = states.into_iter().collect();
        }
        {
            let recent = self.live_window();
            let seen = self.workers_seen.lock().expect("workers lock");
            for worker in seen.values().filter(|w| w.at.elapsed() <= recent) {
                gauges.live_workers += 1;
                gauges.live_workers_memory_bytes = gauges
                    .live_workers_memory_bytes
                    .saturating_add(worker.memory_bytes.min(i64::MAX as u64) as i64);
            }
        }
        self.metrics.render(gauges)
    }

    /// How many leases each worker holds, over every live job.
    pub(super) fn leases_held(&self) -> HashMap<String, usize> {
        let jobs = self.jobs.lock().expect("jobs lock");
        let mut held = HashMap::new();
        for (worker, n) in jobs.values().flat_map(|j| j.lease_holders()) {
            *held.entry(worker.to_string()).or_insert(0) += n;
        }
        held
    }
}
