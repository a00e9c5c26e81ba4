//! What workers measured a task kind's peak memory to be, and the need the pool learns from it.

use std::time::{Duration, Instant};

/// What workers measured for one phase (segments, or an aggregation layer) at one key set:
/// one figure per worker, each already bounded by the memory its worker advertised.
///
/// The need is the lower of two lower medians: of the figures, and of the figures weighted
/// by the results of each worker the pool accepted. Raising it takes a majority of reporters
/// and of their work: identities that did little work cannot outvote one that did much (two
/// hostile registrations reporting 2^64 - 1 beside an honest worker that proved more do not
/// move the need), one worker that did much cannot outvote the others, and one worker's
/// figure alone never sets it. A figure too high would leave the phase
/// to no worker, forever; one too low costs a failed attempt on a machine too small. Figures
/// older than [`Self::LIFETIME`] stop counting, so a need nobody confirms goes back to the
/// operator's profiles or the backend's estimate; the operator can also forget it at once
/// (`plait workers reset-needs`). Until enough workers reported, the figure stored before a
/// restart holds (for a lifetime too).
#[derive(Debug)]
pub(crate) struct NodeMemoryReports {
    stored: Option<(u64, Instant)>,
    reports: std::collections::VecDeque<PeakReport>,
}

#[derive(Debug)]
pub(crate) struct PeakReport {
    worker: String,
    peak: u64,
    /// The worker's accepted results when it reported (this one included).
    weight: u64,
    at: Instant,
}

impl NodeMemoryReports {
    /// Workers whose figures are kept (the most recent reporters).
    pub(crate) const KEPT: usize = 32;
    /// How long a figure counts.
    pub(crate) const LIFETIME: Duration = Duration::from_secs(24 * 3600);

    pub(crate) fn new() -> Self {
        Self {
            stored: None,
            reports: Default::default(),
        }
    }

    /// The need stored before a restart.
    pub(crate) fn stored(need: u64, now: Instant) -> Self {
        Self {
            stored: Some((need, now)),
            reports: Default::default(),
        }
    }

    pub(crate) fn add(&mut self, worker: &str, peak: u64, weight: u64, now: Instant) {
        self.reports.retain(|r| r.worker != worker);
        self.reports.push_back(PeakReport {
            worker: worker.to_string(),
            peak,
            weight: weight.max(1),
            at: now,
        });
        if self.reports.len() > Self::KEPT {
            self.reports.pop_front();
        }
    }

    /// Figures still counting at `now`.
    pub(crate) fn fresh(&self, now: Instant) -> impl Iterator<Item = &PeakReport> {
        self.reports
            .iter()
            .filter(move |r| now.saturating_duration_since(r.at) <= Self::LIFETIME)
    }

    /// Workers whose figures count at `now`.
    pub(crate) fn reporters(&self, now: Instant) -> usize {
        self.fresh(now).count()
    }

    /// The need learned so far (from at least `min_reports` workers), if any.
    pub(crate) fn need(&self, min_reports: usize, now: Instant) -> Option<u64> {
        let mut fresh: Vec<&PeakReport> = self.fresh(now).collect();
        if fresh.len() < min_reports.max(1) {
            return self
                .stored
                .filter(|(_, at)| now.saturating_duration_since(*at) <= Self::LIFETIME)
                .map(|(need, _)| need);
        }
        fresh.sort_unstable_by_key(|r| r.peak);
        let by_count = fresh[(fresh.len() - 1) / 2].peak;
        let total: u128 = fresh.iter().map(|r| u128::from(r.weight)).sum();
        let mut below = 0u128;
        let by_work = fresh
            .iter()
            .find(|r| {
                below += u128::from(r.weight);
                2 * below >= total
            })
            .map_or(by_count, |r| r.peak);
        // A need too high is the worse error: raising it takes a majority of the reporters
        // and of their accepted work both.
        Some(by_count.min(by_work))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::NodeMemoryReports;

    #[test]
    fn one_worker_cannot_set_or_raise_a_layers_memory_need() {
        let now = Instant::now();
        let mut reports = NodeMemoryReports::new();
        reports.add("hostile", u64::MAX, 1, now);
        assert_eq!(
            reports.need(2, now),
            None,
            "one worker's figure alone is not used"
        );
        reports.add("honest", 6 << 30, 1, now);
        assert_eq!(reports.need(2, now), Some(6 << 30));
        reports.add("hostile", u64::MAX, 1, now);
        reports.add("other", 5 << 30, 1, now);
        assert_eq!(
            reports.need(2, now),
            Some(6 << 30),
            "the lower median of 5, 6, max"
        );
        // A worker's new figure replaces its old one.
        reports.add("honest", 7 << 30, 1, now);
        assert_eq!(reports.need(2, now), Some(7 << 30));
        // After a restart, the stored need holds until two workers reported again.
        let mut restarted = NodeMemoryReports::stored(6 << 30, now);
        restarted.add("hostile", u64::MAX, 1, now);
        assert_eq!(restarted.need(2, now), Some(6 << 30));
        // Only the latest reporters count.
        for i in 0..NodeMemoryReports::KEPT {
            reports.add(&format!("w{i}"), 1 << 30, 1, now);
        }
        assert_eq!(reports.need(2, now), Some(1 << 30));
    }

    /// Row 2 of the hostile-pool review: two identities that each had one proof accepted
    /// cannot outvote a worker that proved more.
    #[test]
    fn figures_count_by_the_work_their_workers_did() {
        let now = Instant::now();
        let mut reports = NodeMemoryReports::new();
        reports.add("honest", 6 << 30, 3, now);
        reports.add("sybil-1", u64::MAX, 1, now);
        reports.add("sybil-2", u64::MAX, 1, now);
        assert_eq!(reports.need(2, now), Some(6 << 30));
        // One worker that did the most work does not outvote the others either.
        let mut busy = NodeMemoryReports::new();
        busy.add("busy", u64::MAX, 10, now);
        busy.add("honest", 6 << 30, 1, now);
        assert_eq!(busy.need(2, now), Some(6 << 30));
        // They win only with more reporters and more work than the honest worker's.
        reports.add("sybil-1", u64::MAX, 3, now);
        assert_eq!(reports.need(2, now), Some(u64::MAX));
    }

    #[test]
    fn figures_nobody_confirms_stop_counting() {
        let then = Instant::now();
        let later = then + NodeMemoryReports::LIFETIME + Duration::from_secs(1);
        let mut reports = NodeMemoryReports::stored(u64::MAX, then);
        assert_eq!(reports.need(2, then), Some(u64::MAX));
        assert_eq!(reports.need(2, later), None);
        reports.add("a", 5 << 30, 1, then);
        reports.add("b", 6 << 30, 1, then);
        assert_eq!(reports.need(2, then), Some(5 << 30));
        assert_eq!(reports.need(2, later), None);
        reports.add("c", 7 << 30, 1, later);
        reports.add("d", 8 << 30, 1, later);
        assert_eq!(reports.need(2, later), Some(7 << 30));
    }
}
