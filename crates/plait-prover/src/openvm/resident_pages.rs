//! Which pages of a guest memory mapping the guest may have written since it was mapped.
//!
//! Guest memory is an anonymous mapping (512 MiB for RV32 memory alone), so comparing all of it
//! at every segment boundary would cost more than executing the segment. The kernel already
//! knows which pages were ever touched: a page never touched is not mapped and is all zeros.
//! On Linux, `/proc/self/pagemap` says per page whether it is present or swapped out; either
//! means it may hold data. Anywhere that file cannot be read, every page is a candidate
//! (correct, only slower), and a warning says so once.
//!
//! Reading a page maps the shared zero page, which also counts as present: the caller compares
//! candidates with what it last saw, so such pages cost a comparison, never a wrong answer. The
//! caller must not read whole mappings itself (that would make every page present).

use std::sync::OnceLock;

/// Bytes per OS page; guest memory is compared and checkpointed in pages of this size.
pub(crate) const OS_PAGE: usize = 4096;

/// Returns the indexes (in `OS_PAGE` units from `memory`'s start) of the pages of `memory` that
/// may have been written. `memory` must start on a page boundary.
pub(crate) fn candidate_pages(memory: &[u8]) -> Vec<usize> {
    let pages = memory.len().div_ceil(OS_PAGE);
    match pagemap_candidates(memory.as_ptr() as usize, pages) {
        Some(found) => found,
        None => {
            static WARNED: OnceLock<()> = OnceLock::new();
            WARNED.get_or_init(|| {
                tracing::warn!(
                    "cannot read /proc/self/pagemap: segment boundaries compare all guest \
                     memory (correct, but slow for long runs)"
                )
            });
            (0..pages).collect()
        }
    }
}

#[cfg(target_os = "linux")]
fn pagemap_candidates(start: usize, pages: usize) -> Option<Vec<usize>> {
    use std::{fs::File, os::unix::fs::FileExt};

    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    if start % OS_PAGE != 0 || page_size() != OS_PAGE {
        return None;
    }
    let file = File::open("/proc/self/pagemap").ok()?;
    let mut found = Vec::new();
    // Read the entries in bounded batches: 8 bytes per page, 64K pages (256 MiB) per read.
    let mut buf = vec![0u8; 8 * 65536];
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(65536);
        let bytes = &mut buf[..8 * n];
        let offset = ((start / OS_PAGE + done) * 8) as u64;
        file.read_exact_at(bytes, offset).ok()?;
        for (i, entry) in bytes.chunks_exact(8).enumerate() {
            let entry = u64::from_le_bytes(entry.try_into().expect("8-byte chunk"));
            if entry & (PRESENT | SWAPPED) != 0 {
                found.push(done + i);
            }
        }
        done += n;
    }
    Some(found)
}

#[cfg(target_os = "linux")]
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(0)
}

#[cfg(not(target_os = "linux"))]
fn pagemap_candidates(_start: usize, _pages: usize) -> Option<Vec<usize>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_written_pages_of_a_fresh_mapping() {
        let mut map = memmap2::MmapMut::map_anon(64 * OS_PAGE).unwrap();
        map[3 * OS_PAGE + 17] = 1;
        map[40 * OS_PAGE] = 2;
        let found = candidate_pages(&map);
        assert!(found.contains(&3) && found.contains(&40), "{found:?}");
        if cfg!(target_os = "linux") && found.len() != 64 {
            // pagemap was readable: untouched pages are not candidates.
            assert!(!found.contains(&10), "{found:?}");
        }
    }
}
