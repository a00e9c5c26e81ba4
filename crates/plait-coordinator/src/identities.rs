//! Who a worker is. The coordinator, not the worker, names it: a worker registers with the
//! pool's worker token and receives an id and a credential of its own, or presents a
//! credential the operator issued for it (a closed pool has no pool token). Rejection counts
//! and bans attach to that identity, so a worker cannot act under another's name, and a
//! banned issued worker cannot return under a new one.
//! Credentials are kept as [`crate::credentials`] keeps them (their SHA-256 only).

use std::{collections::HashMap, time::Duration};

use plait_api::{BanRecord, WorkerRecord};

use crate::credentials::{credential_sha256, new_credential, Credentialed, Registry};

/// How a worker came by its identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Registered itself with the pool's worker token.
    Registered,
    /// The operator issued its credential.
    Issued,
}

impl Origin {
    /// Its name in the store and the API: `registered` or `issued`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Registered => "registered",
            Origin::Issued => "issued",
        }
    }

    /// The origin of that name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "registered" => Some(Origin::Registered),
            "issued" => Some(Origin::Issued),
            _ => None,
        }
    }
}

/// A ban on a worker identity.
#[derive(Clone, Debug, PartialEq)]
pub struct Ban {
    /// Why it was banned.
    pub reason: String,
    /// When (Unix milliseconds).
    pub at_unix_ms: i64,
    /// Whether the operator banned it (else the coordinator, for rejected proofs).
    pub by_operator: bool,
}

/// One worker identity, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// Its id.
    pub id: String,
    /// How it joined.
    pub origin: Origin,
    /// The name it registered with (an issued worker's id).
    pub name: String,
    /// SHA-256 of its credential (the credential itself is never kept).
    pub credential_sha256: [u8; 32],
    /// When it was created (Unix milliseconds).
    pub created_unix_ms: i64,
    /// Its proofs the coordinator rejected.
    pub rejections: u32,
    /// Its ban, if it is banned.
    pub ban: Option<Ban>,
}

impl Credentialed for Identity {
    fn id(&self) -> &str {
        &self.id
    }

    fn credential_sha256(&self) -> [u8; 32] {
        self.credential_sha256
    }
}

/// Every identity, with when each was last seen (not stored: a restart counts as seeing every
/// identity).
#[derive(Default)]
pub struct Identities {
    registry: Registry<Identity>,
    seen: HashMap<String, std::time::Instant>,
}

impl Identities {
    /// The identities the store holds.
    pub fn load(stored: Vec<Identity>) -> Self {
        let mut identities = Self::default();
        for identity in stored {
            identities.insert(identity);
        }
        identities
    }

    fn insert(&mut self, identity: Identity) {
        self.seen
            .insert(identity.id.clone(), std::time::Instant::now());
        self.registry.insert(identity);
    }

    /// The id a credential belongs to.
    pub fn identify(&self, credential: &str) -> Option<String> {
        self.registry.identify(credential)
    }

    /// The identity of this id.
    pub fn get(&self, id: &str) -> Option<&Identity> {
        self.registry.get(id)
    }

    /// How many identities there are.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// A registered worker's new identity: its name (cut to leave room) and a random suffix.
    /// Returns the identity (to store) and its credential (to hand out once).
    pub fn register(&mut self, name: &str, now_unix_ms: i64) -> (Identity, String) {
        let stem = &name[..name.len().min(plait_api::limits::WORKER_ID_BYTES - 9)];
        let id = loop {
            let id = format!("{stem}-{}", hex::encode(rand::random::<[u8; 4]>()));
            if !self.registry.contains(&id) {
                break id;
            }
        };
        self.create(id, name, Origin::Registered, now_unix_ms)
    }

    /// An operator-issued identity; `None` if the id is taken.
    pub fn issue(&mut self, id: &str, now_unix_ms: i64) -> Option<(Identity, String)> {
        if self.registry.contains(id) {
            return None;
        }
        Some(self.create(id.to_string(), id, Origin::Issued, now_unix_ms))
    }

    fn create(
        &mut self,
        id: String,
        name: &str,
        origin: Origin,
        now_unix_ms: i64,
    ) -> (Identity, String) {
        let credential = new_credential();
        let identity = Identity {
            id,
            origin,
            name: name.to_string(),
            credential_sha256: credential_sha256(&credential),
            created_unix_ms: now_unix_ms,
            rejections: 0,
            ban: None,
        };
        self.insert(identity.clone());
        (identity, credential)
    }

    /// Forgets an identity: its credential stops working. Returns whether it existed.
    pub fn revoke(&mut self, id: &str) -> bool {
        self.seen.remove(id);
        self.registry.revoke(id).is_some()
    }

    /// Applies `change` to an identity and returns the changed copy (to store).
    pub fn update(&mut self, id: &str, change: impl FnOnce(&mut Identity)) -> Option<Identity> {
        let identity = self.registry.get_mut(id)?;
        change(identity);
        Some(identity.clone())
    }

    /// Notes that the identity asked for work now (it counts as active).
    pub fn saw(&mut self, id: &str) {
        if let Some(seen) = self.seen.get_mut(id) {
            *seen = std::time::Instant::now();
        }
    }

    /// Forgets registered identities unseen for `idle` (banned ones too: a banned registered
    /// worker can register anew with the pool token anyway; closing the pool stops that).
    /// Issued identities stay until the operator revokes them. Returns the ids forgotten.
    pub fn prune(&mut self, idle: Duration, holds_leases: impl Fn(&str) -> bool) -> Vec<String> {
        let gone: Vec<String> = self
            .registry
            .values()
            .filter(|identity| {
                identity.origin == Origin::Registered
                    && self
                        .seen
                        .get(&identity.id)
                        .is_none_or(|s| s.elapsed() >= idle)
                    && !holds_leases(&identity.id)
            })
            .map(|identity| identity.id.clone())
            .collect();
        for id in &gone {
            self.revoke(id);
        }
        gone
    }

    /// Makes room for one more identity in a full table: forgets the registered identity seen
    /// least recently, if it has been unseen for `unseen_for` and holds no lease, and returns
    /// its id. So registrations that are never used (a flood of them, or workers gone for
    /// good) cannot keep out workers that come later: they displace only identities that are
    /// not working. Issued identities are never displaced. O(identities), paid only when full.
    pub fn displace_stalest(
        &mut self,
        unseen_for: Duration,
        holds_leases: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let stalest = self
            .registry
            .values()
            .filter(|identity| identity.origin == Origin::Registered)
            .filter_map(|identity| Some((self.seen.get(&identity.id)?, &identity.id)))
            .filter(|(seen, id)| seen.elapsed() >= unseen_for && !holds_leases(id))
            .min()
            .map(|(_, id)| id.clone())?;
        self.revoke(&stalest);
        Some(stalest)
    }

    /// The operator's view, sorted by id; `live` gives (live, advertised memory, leases held),
    /// `more` fills in its device, current tasks and tasks done.
    pub fn records(
        &self,
        live: impl Fn(&str) -> (bool, u64, u32),
        more: impl Fn(&mut WorkerRecord),
    ) -> Vec<WorkerRecord> {
        let mut records: Vec<WorkerRecord> = self
            .registry
            .values()
            .map(|identity| {
                let (live, memory_bytes, leases) = live(&identity.id);
                WorkerRecord {
                    worker_id: identity.id.clone(),
                    origin: identity.origin.as_str().into(),
                    name: identity.name.clone(),
                    created_unix_ms: identity.created_unix_ms,
                    rejections: identity.rejections,
                    ban: identity.ban.as_ref().map(|b| BanRecord {
                        reason: b.reason.clone(),
                        at_unix_ms: b.at_unix_ms,
                        by: if b.by_operator {
                            "operator"
                        } else {
                            "coordinator"
                        }
                        .into(),
                    }),
                    live,
                    memory_bytes,
                    leases,
                    device: None,
                    proves_on: None,
                    current_tasks: Vec::new(),
                    tasks_done: 0,
                }
            })
            .collect();
        records.iter_mut().for_each(more);
        records.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_identify_their_worker_and_nothing_else() {
        let mut ids = Identities::default();
        let (a, cred_a) = ids.register("laptop", 1);
        let (b, cred_b) = ids.register("laptop", 2);
        assert_ne!(a.id, b.id, "two workers of one name get distinct ids");
        assert!(a.id.starts_with("laptop-"));
        assert_eq!(ids.identify(&cred_a), Some(a.id.clone()));
        assert_eq!(ids.identify(&cred_b), Some(b.id.clone()));
        assert_eq!(ids.identify("laptop"), None);
        assert_eq!(ids.identify(&cred_a[..63]), None);
        assert!(
            ids.issue(&a.id, 3).is_none(),
            "an id in use is not issued again"
        );
        let (_, issued) = ids.issue("gpu-box", 3).unwrap();
        assert!(ids.revoke("gpu-box"));
        assert_eq!(ids.identify(&issued), None);
    }

    #[test]
    fn a_long_name_still_makes_a_bounded_id() {
        let mut ids = Identities::default();
        let name = "n".repeat(plait_api::limits::WORKER_ID_BYTES);
        let (identity, _) = ids.register(&name, 0);
        assert!(plait_api::check_worker_name("id", &identity.id).is_ok());
    }

    #[test]
    fn pruning_forgets_idle_registered_workers_only() {
        let mut ids = Identities::default();
        let (idle, _) = ids.register("idle", 0);
        let (busy, _) = ids.register("busy", 0);
        ids.issue("issued", 0).unwrap();
        let gone = ids.prune(Duration::ZERO, |id| id == busy.id);
        assert_eq!(gone, vec![idle.id.clone()]);
        assert!(ids.get(&busy.id).is_some() && ids.get("issued").is_some());
    }

    #[test]
    fn a_full_table_displaces_the_stalest_idle_registered_worker() {
        let mut ids = Identities::default();
        ids.issue("issued", 0).unwrap();
        // Seen in this order: leasing, older, fresh, then returned (registered second, but
        // seen again last).
        let tick = || std::thread::sleep(Duration::from_millis(5));
        let (leasing, _) = ids.register("leasing", 0);
        tick();
        let (returned, credential) = ids.register("returned", 0);
        tick();
        let (older, _) = ids.register("older", 0);
        tick();
        let (fresh, _) = ids.register("fresh", 0);
        tick();
        ids.saw(&returned.id);
        let none = |_: &str| false;
        assert_eq!(
            ids.displace_stalest(Duration::from_secs(60), none),
            None,
            "every identity was seen within the minute"
        );
        let displaced = ids.displace_stalest(Duration::ZERO, |id| id == leasing.id);
        assert_eq!(
            displaced.as_ref(),
            Some(&older.id),
            "the least recently seen that holds no lease"
        );
        assert_eq!(ids.identify(&credential), Some(returned.id.clone()));
        for next in [&leasing, &fresh, &returned] {
            assert_eq!(
                ids.displace_stalest(Duration::ZERO, none).as_ref(),
                Some(&next.id)
            );
        }
        assert_eq!(ids.displace_stalest(Duration::ZERO, none), None);
        assert!(ids.get("issued").is_some(), "issued identities stay");
    }
}
