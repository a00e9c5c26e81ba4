//! Who a client is. The operator issues each client a named credential with its limits
//! (`plait clients issue`); jobs belong to the client that submitted them, and a client sees
//! and acts on its own jobs only. The pool's shared client token (`--client-token`), if set,
//! is the client `default`. As for workers, only each credential's SHA-256 is kept.

use std::collections::HashMap;

use plait_api::ClientLimits;

use crate::identities::{credential_sha256, new_credential};

/// The client the shared client token stands for.
pub const DEFAULT_CLIENT: &str = "default";

/// Weights are bounded so that shares stay comparable.
pub const MAX_WEIGHT: u32 = 1000;

/// A job's priority (within its client's share) is -MAX_PRIORITY to MAX_PRIORITY.
pub const MAX_PRIORITY: i32 = 1000;

#[derive(Clone, Debug, PartialEq)]
pub struct Client {
    pub id: String,
    pub credential_sha256: [u8; 32],
    pub created_unix_ms: i64,
    pub limits: ClientLimits,
}

#[derive(Default)]
pub struct Clients {
    by_id: HashMap<String, Client>,
    by_credential: HashMap<[u8; 32], String>,
}

impl Clients {
    pub fn load(stored: Vec<Client>) -> Self {
        let mut clients = Self::default();
        for client in stored {
            clients
                .by_credential
                .insert(client.credential_sha256, client.id.clone());
            clients.by_id.insert(client.id.clone(), client);
        }
        clients
    }

    /// The client a credential belongs to, looked up by its hash.
    pub fn identify(&self, credential: &str) -> Option<String> {
        self.by_credential
            .get(&credential_sha256(credential))
            .cloned()
    }

    pub fn get(&self, id: &str) -> Option<&Client> {
        self.by_id.get(id)
    }

    /// A new client and its credential (to hand out once); `None` if the id is taken.
    pub fn issue(
        &mut self,
        id: &str,
        limits: ClientLimits,
        now_unix_ms: i64,
    ) -> Option<(Client, String)> {
        if self.by_id.contains_key(id) || id == DEFAULT_CLIENT {
            return None;
        }
        let credential = new_credential();
        let client = Client {
            id: id.to_string(),
            credential_sha256: credential_sha256(&credential),
            created_unix_ms: now_unix_ms,
            limits,
        };
        self.by_credential
            .insert(client.credential_sha256, client.id.clone());
        self.by_id.insert(client.id.clone(), client.clone());
        Some((client, credential))
    }

    /// Forgets a client: its credential stops working (its jobs stay, unreachable).
    pub fn revoke(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some(client) => {
                self.by_credential.remove(&client.credential_sha256);
                true
            }
            None => false,
        }
    }

    /// The limits of `id`; the default client (and a revoked one) has none but a weight of 1.
    pub fn limits(&self, id: &str) -> ClientLimits {
        self.by_id.get(id).map(|c| c.limits).unwrap_or_default()
    }

    pub fn all(&self) -> impl Iterator<Item = &Client> {
        self.by_id.values()
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
}
