//! The programs the coordinator keeps in memory. The store holds every program and which
//! clients uploaded it; a job in memory holds its own; this cache holds the most recently used
//! others, up to a number of bytes, so that uploads cannot grow the coordinator without bound.

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

#[cfg(test)]
mod tests {
    use super::*;

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
