//! The programs the coordinator keeps. The store holds every program and which clients
//! uploaded it; a job in memory holds its own; [`ProgramCache`] holds the most recently used
//! others, up to a number of bytes, so that uploads cannot grow the coordinator without bound;
//! [`ProgramOwnership`] counts each client's program bytes against its quota.

use std::collections::{BTreeMap, HashMap};

use lru::LruCache;
use plait_prover::ProgramImage;

/// Bytes of programs kept beyond those of the jobs in memory.
pub const CACHE_BYTES: usize = 128 << 20;

pub struct ProgramCache {
    entries: LruCache<String, ProgramImage>,
    bytes: usize,
    capacity_bytes: usize,
}

impl ProgramCache {
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            entries: LruCache::unbounded(),
            bytes: 0,
            capacity_bytes,
        }
    }

    pub fn get(&mut self, sha256: &str) -> Option<ProgramImage> {
        self.entries.get(sha256).cloned()
    }

    pub fn remove(&mut self, sha256: &str) {
        if let Some(old) = self.entries.pop(sha256) {
            self.bytes -= old.bytes.len();
        }
    }

    /// Keeps `program`, dropping the least recently used ones over the capacity (a program
    /// larger than it is not kept).
    pub fn insert(&mut self, program: &ProgramImage) {
        if let Some(old) = self.entries.put(program.digest.clone(), program.clone()) {
            self.bytes -= old.bytes.len();
        }
        self.bytes += program.bytes.len();
        while self.bytes > self.capacity_bytes {
            let Some((_, evicted)) = self.entries.pop_lru() else {
                break;
            };
            self.bytes -= evicted.bytes.len();
        }
    }
}

impl Default for ProgramCache {
    fn default() -> Self {
        Self::new(CACHE_BYTES)
    }
}

/// Which programs each client keeps, with their sizes: the figures its quota is checked
/// against, kept in memory so that an upload is checked and counted in one step, before any
/// await (two uploads at once cannot both pass the quota).
#[derive(Default)]
pub struct ProgramOwnership {
    by_client: HashMap<String, BTreeMap<String, u64>>,
}

/// An upload that would take a client over its program bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct OverQuota {
    pub kept: u64,
    pub limit: u64,
}

impl ProgramOwnership {
    pub fn load(owned: impl IntoIterator<Item = (String, String, u64)>) -> Self {
        let mut this = Self::default();
        for (client, sha256, bytes) in owned {
            this.by_client
                .entry(client)
                .or_default()
                .insert(sha256, bytes);
        }
        this
    }

    /// Bytes of the programs `client` keeps.
    pub fn bytes_of(&self, client: &str) -> u64 {
        self.by_client
            .get(client)
            .map_or(0, |programs| programs.values().sum())
    }

    /// `client`'s programs, by hash, with their sizes.
    pub fn programs_of(&self, client: &str) -> Vec<(String, u64)> {
        self.by_client
            .get(client)
            .map_or_else(Vec::new, |programs| {
                programs.iter().map(|(h, b)| (h.clone(), *b)).collect()
            })
    }

    /// Counts `program` as `client`'s, unless that takes it over `limit`; a program it keeps
    /// already costs nothing. Returns whether it is new to the client.
    pub fn take(
        &mut self,
        client: &str,
        program: &ProgramImage,
        limit: Option<u64>,
    ) -> Result<bool, OverQuota> {
        if self
            .by_client
            .get(client)
            .is_some_and(|p| p.contains_key(&program.digest))
        {
            return Ok(false);
        }
        let kept = self.bytes_of(client);
        let size = program.bytes.len() as u64;
        if let Some(limit) = limit {
            if kept.saturating_add(size) > limit {
                return Err(OverQuota { kept, limit });
            }
        }
        self.by_client
            .entry(client.to_string())
            .or_default()
            .insert(program.digest.clone(), size);
        Ok(true)
    }

    /// Stops counting `sha256` as `client`'s; `false` if it was not.
    pub fn release(&mut self, client: &str, sha256: &str) -> bool {
        let Some(programs) = self.by_client.get_mut(client) else {
            return false;
        };
        let released = programs.remove(sha256).is_some();
        if programs.is_empty() {
            self.by_client.remove(client);
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_program_bytes_are_counted_once_per_program_and_bounded() {
        let program = |byte: u8, len: usize| ProgramImage::new(vec![byte; len]);
        let (a, b, c) = (program(1, 40), program(2, 50), program(3, 20));
        let mut owned = ProgramOwnership::default();
        assert_eq!(owned.take("alice", &a, Some(100)), Ok(true));
        assert_eq!(owned.take("alice", &a, Some(100)), Ok(false)); // kept already: free
        assert_eq!(owned.take("alice", &b, Some(100)), Ok(true));
        assert_eq!(
            owned.take("alice", &c, Some(100)),
            Err(OverQuota {
                kept: 90,
                limit: 100
            })
        );
        // Another client's bytes are its own.
        assert_eq!(owned.take("bob", &c, Some(20)), Ok(true));
        assert_eq!((owned.bytes_of("alice"), owned.bytes_of("bob")), (90, 20));
        assert!(owned.release("alice", &b.digest) && !owned.release("alice", &b.digest));
        assert_eq!(owned.take("alice", &c, Some(100)), Ok(true));
        assert_eq!(owned.bytes_of("alice"), 60);
        assert_eq!(owned.take("carol", &a, None), Ok(true));
    }

    #[test]
    fn the_cache_keeps_the_most_recently_used_within_its_bytes() {
        let program = |byte: u8| ProgramImage::new(vec![byte; 40]);
        let mut cache = ProgramCache::new(100);
        let (a, b, c) = (program(1), program(2), program(3));
        cache.insert(&a);
        cache.insert(&b);
        assert!(cache.get(&a.digest).is_some()); // a is now the most recent
        cache.insert(&c); // 120 bytes: b goes
        assert!(cache.get(&b.digest).is_none());
        assert!(cache.get(&a.digest).is_some() && cache.get(&c.digest).is_some());
        cache.insert(&ProgramImage::new(vec![9; 101])); // larger than the cache: nothing stays
        assert_eq!(cache.bytes, 0);
    }
}
