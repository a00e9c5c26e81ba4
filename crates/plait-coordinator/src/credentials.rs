//! Named credentials, one mechanism for workers ([`crate::identities`]) and clients
//! ([`crate::clients`]): each record is found by its id or by its credential's SHA-256. Only
//! that hash is kept: a leaked store does not let anyone act as a worker or a client, and a
//! lookup's timing depends on the hash, not on how much of a guessed credential is right.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// A new credential: 256 random bits, hex.
pub fn new_credential() -> String {
    // ThreadRng is a CSPRNG seeded from the operating system.
    hex::encode(rand::random::<[u8; 32]>())
}

pub fn credential_sha256(credential: &str) -> [u8; 32] {
    Sha256::digest(credential.as_bytes()).into()
}

/// What a registry holds: a record with an id and its credential's hash.
pub trait Credentialed {
    fn id(&self) -> &str;
    fn credential_sha256(&self) -> [u8; 32];
}

/// Records by id and by credential hash.
pub struct Registry<T> {
    by_id: HashMap<String, T>,
    by_credential: HashMap<[u8; 32], String>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Self {
            by_id: HashMap::new(),
            by_credential: HashMap::new(),
        }
    }
}

impl<T: Credentialed> Registry<T> {
    pub fn load(records: impl IntoIterator<Item = T>) -> Self {
        let mut registry = Self::default();
        for record in records {
            registry.insert(record);
        }
        registry
    }

    /// Adds `record` (replacing one of the same id).
    pub fn insert(&mut self, record: T) {
        self.revoke(record.id());
        self.by_credential
            .insert(record.credential_sha256(), record.id().to_string());
        self.by_id.insert(record.id().to_string(), record);
    }

    /// The id a credential belongs to.
    pub fn identify(&self, credential: &str) -> Option<String> {
        self.by_credential
            .get(&credential_sha256(credential))
            .cloned()
    }

    pub fn get(&self, id: &str) -> Option<&T> {
        self.by_id.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        self.by_id.get_mut(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.by_id.values()
    }

    /// Forgets a record: its credential stops working. Returns it, if it existed.
    pub fn revoke(&mut self, id: &str) -> Option<T> {
        let record = self.by_id.remove(id)?;
        self.by_credential.remove(&record.credential_sha256());
        Some(record)
    }
}
