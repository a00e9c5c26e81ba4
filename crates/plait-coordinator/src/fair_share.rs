//! Sharing the pool between clients.

use std::collections::HashMap;

/// Weighted fair queueing of leases between clients: each client's virtual time advances by
/// [`Self::LEASE_COST`]/weight per lease it gets; `now` is the virtual time of the last lease
/// granted. Not stored: after a restart every client starts even.
#[derive(Default)]
pub(crate) struct FairShare {
    pub(crate) now: u64,
    pub(crate) served: HashMap<String, u64>,
}

impl FairShare {
    pub(crate) const LEASE_COST: u64 = 1_000_000;
}
