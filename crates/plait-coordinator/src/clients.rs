//! Who a client is. The operator issues each client a named credential with its limits
//! (`plait clients issue`); jobs belong to the client that submitted them, and a client sees
//! and acts on its own jobs only. The pool's shared client token (`--client-token`), if set,
//! is the client `default`. Credentials are kept as for workers (`crate::credentials`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use plait_api::ClientLimits;

use crate::credentials::{credential_sha256, new_credential, Credentialed, Registry};

/// The client the shared client token stands for.
pub const DEFAULT_CLIENT: &str = "default";

/// Weights are bounded so that shares stay comparable.
pub const MAX_WEIGHT: u32 = 1000;

/// A job's priority (within its client's share) is -MAX_PRIORITY to MAX_PRIORITY.
pub const MAX_PRIORITY: i32 = 1000;

/// A client: who submits jobs, with what limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Client {
    /// Its id (its name in jobs and logs).
    pub id: String,
    /// SHA-256 of its credential (the credential itself is never kept).
    pub credential_sha256: [u8; 32],
    /// When its credential was issued (Unix milliseconds).
    pub created_unix_ms: i64,
    /// What it may use of the pool.
    pub limits: ClientLimits,
}

impl Credentialed for Client {
    fn id(&self) -> &str {
        &self.id
    }

    fn credential_sha256(&self) -> [u8; 32] {
        self.credential_sha256
    }
}

/// Every client, by id and by credential.
#[derive(Default)]
pub struct Clients {
    registry: Registry<Client>,
    default_limits: ClientLimits,
}

impl Clients {
    /// The clients the store holds.
    pub fn load(stored: Vec<Client>) -> Self {
        Self {
            registry: Registry::load(stored),
            default_limits: ClientLimits::default(),
        }
    }

    /// The limits of the client [`DEFAULT_CLIENT`].
    pub fn with_default_limits(self, default_limits: ClientLimits) -> Self {
        Self {
            default_limits,
            ..self
        }
    }

    /// The client a credential belongs to.
    pub fn identify(&self, credential: &str) -> Option<String> {
        self.registry.identify(credential)
    }

    /// The client of this id.
    pub fn get(&self, id: &str) -> Option<&Client> {
        self.registry.get(id)
    }

    /// A new client and its credential (to hand out once); `None` if the id is taken.
    pub fn issue(
        &mut self,
        id: &str,
        limits: ClientLimits,
        now_unix_ms: i64,
    ) -> Option<(Client, String)> {
        if self.registry.contains(id) || id == DEFAULT_CLIENT {
            return None;
        }
        let credential = new_credential();
        let client = Client {
            id: id.to_string(),
            credential_sha256: credential_sha256(&credential),
            created_unix_ms: now_unix_ms,
            limits,
        };
        self.registry.insert(client.clone());
        Some((client, credential))
    }

    /// Forgets a client: its credential stops working (its jobs stay, unreachable).
    pub fn revoke(&mut self, id: &str) -> bool {
        self.registry.revoke(id).is_some()
    }

    /// The limits of `id` (a revoked client has none but a weight of 1).
    pub fn limits(&self, id: &str) -> ClientLimits {
        if id == DEFAULT_CLIENT {
            return self.default_limits;
        }
        self.registry.get(id).map(|c| c.limits).unwrap_or_default()
    }

    /// Every client.
    pub fn all(&self) -> impl Iterator<Item = &Client> {
        self.registry.values()
    }
}

/// Submissions under way, by client. A submission takes a place here before its first await
/// and holds it until its job is stored (then the job itself counts), so that submissions sent
/// at once cannot all pass a client's limit on jobs in flight.
#[derive(Clone, Default)]
pub struct Submitting(Arc<Mutex<HashMap<String, u32>>>);

/// A place taken by a submission under way; dropping it frees it.
pub struct Reservation {
    submitting: Submitting,
    client: String,
}

impl Submitting {
    /// `client`'s submissions under way.
    pub fn count(&self, client: &str) -> u32 {
        let open = self.0.lock().expect("submitting lock");
        open.get(client).copied().unwrap_or(0)
    }

    /// Counts a submission of `client` under way until the returned reservation drops.
    pub fn reserve(&self, client: &str) -> Reservation {
        *self
            .0
            .lock()
            .expect("submitting lock")
            .entry(client.to_string())
            .or_default() += 1;
        Reservation {
            submitting: self.clone(),
            client: client.to_string(),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut open = self.submitting.0.lock().expect("submitting lock");
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_name_their_client_and_revoking_ends_them() {
        let mut clients = Clients::default();
        let (a, cred_a) = clients.issue("alice", ClientLimits::default(), 1).unwrap();
        let (_, cred_b) = clients.issue("bob", ClientLimits::default(), 1).unwrap();
        assert_eq!(clients.identify(&cred_a), Some(a.id.clone()));
        assert_eq!(clients.identify(&cred_b), Some("bob".into()));
        assert_eq!(clients.identify("alice"), None);
        assert!(clients.issue("alice", ClientLimits::default(), 2).is_none());
        assert!(clients
            .issue(DEFAULT_CLIENT, ClientLimits::default(), 2)
            .is_none());
        assert!(clients.revoke("alice"));
        assert_eq!(clients.identify(&cred_a), None);
    }

    #[test]
    fn a_reservation_counts_until_dropped() {
        let submitting = Submitting::default();
        let first = submitting.reserve("alice");
        let second = submitting.reserve("alice");
        assert_eq!((submitting.count("alice"), submitting.count("bob")), (2, 0));
        drop(first);
        assert_eq!(submitting.count("alice"), 1);
        drop(second);
        assert_eq!(submitting.count("alice"), 0);
    }
}
