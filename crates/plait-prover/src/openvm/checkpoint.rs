//! Segment start states: computing boundaries incrementally while executing, and the checkpoint
//! a worker rebuilds a segment's start state from instead of re-executing the guest.
//!
//! A boundary is (pc, memory Merkle root). Rebuilding the whole memory tree at every boundary
//! costs about a second for RV32's 512 MiB address space; [`BoundaryTracker`] instead keeps one
//! tree (OpenVM's own [`MerkleTree`] and hasher, so roots equal what proofs expose) and updates
//! it with the chunks that changed since the last boundary. Changed chunks are found by
//! comparing, page by page, only the pages the guest may have written
//! ([`resident_pages`](super::resident_pages)) with a shadow copy of what they held.
//!
//! A checkpoint holds what a segment's start state has beyond the program itself: the pc, every
//! memory page that differs from the program's initial image, and the unread input and hint
//! streams. It names its job, segment and boundary; the worker checks all three and recomputes
//! the memory root from the rebuilt memory before proving. State that cannot be carried this way
//! (random hints, deferrals) is refused at the boundary with a reason.

use std::{
    collections::HashMap,
    io::{Read, Write},
};

use openvm_circuit::{
    arch::{
        hasher::{poseidon2::vm_poseidon2_hasher, Hasher, HasherChip},
        AddressSpaceHostLayout, VmState,
    },
    system::memory::{
        dimensions::MemoryDimensions, merkle::MerkleTree, online::LinearMemory, AddressMap,
        Equipartition, CHUNK,
    },
};
use openvm_sdk::F;
use openvm_stark_backend::p3_field::{PrimeCharacteristicRing, PrimeField32};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::resident_pages::{candidate_pages, OS_PAGE};
use crate::BackendError;

/// The VM state at a segment boundary, as segment and aggregation proofs expose it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Boundary {
    pub pc: u32,
    pub memory_root: [u32; 8],
}

/// Version of the checkpoint encoding; a worker refuses any other.
const CHECKPOINT_VERSION: u8 = 1;
/// Every checkpoint blob starts with these bytes, then a zstd frame of the bitcode body.
const CHECKPOINT_MAGIC: &[u8; 8] = b"PLAITCP\x01";
/// Largest checkpoint body a worker decompresses (guest memory is at most 512 MiB plus small
/// address spaces; more is not a checkpoint of this VM).
const MAX_CHECKPOINT_BODY: u64 = 640 << 20;

/// OpenVM's Poseidon2 hasher, with recording (for trace generation) turned off: the planner
/// needs only roots.
struct RootHasher(openvm_circuit::arch::hasher::poseidon2::Poseidon2Hasher<F>);

impl Hasher<CHUNK, F> for RootHasher {
    fn compress(&self, left: &[F; CHUNK], right: &[F; CHUNK]) -> [F; CHUNK] {
        self.0.compress(left, right)
    }
}

impl HasherChip<CHUNK, F> for RootHasher {
    fn compress_and_record(&self, left: &[F; CHUNK], right: &[F; CHUNK]) -> [F; CHUNK] {
        self.0.compress(left, right)
    }
}

/// One OS page of one address space, as bytes of its linear memory.
type PageKey = (usize, usize);

/// Follows one execution from boundary to boundary, keeping its memory tree up to date.
pub(crate) struct BoundaryTracker {
    md: MemoryDimensions,
    hasher: RootHasher,
    tree: MerkleTree<F, CHUNK>,
    /// What each page held at the last boundary, for every page the guest may have written or
    /// the program image filled.
    shadow: HashMap<PageKey, Box<[u8]>>,
    /// The pages of the program's initial image (absent: all zeros).
    initial: HashMap<PageKey, Box<[u8]>>,
    /// Pages whose content now differs from the initial image: a checkpoint's memory.
    diverged: std::collections::BTreeSet<PageKey>,
    /// The random generator's initial state; a guest that draws from it cannot be split.
    initial_rng: rand::rngs::StdRng,
}

impl BoundaryTracker {
    /// Starts tracking `state`, which must be the execution's initial state, untouched.
    pub fn new(state: &VmState<F>, md: MemoryDimensions) -> Self {
        let hasher = RootHasher(vm_poseidon2_hasher());
        // An empty tree, then the program image's pages as the first change: no pass over
        // the whole (mostly unused) address space.
        let tree = MerkleTree::new(md.overall_height(), &hasher);
        let mut tracker = Self {
            md,
            hasher,
            tree,
            shadow: HashMap::new(),
            initial: HashMap::new(),
            diverged: Default::default(),
            initial_rng: state.rng.clone(),
        };
        tracker.advance(state);
        tracker.initial = tracker.shadow.clone();
        tracker.diverged.clear();
        tracker
    }

    /// The boundary of the current state (call after [`Self::advance`] for a new state).
    pub fn boundary(&self, state: &VmState<F>) -> Boundary {
        Boundary {
            pc: state.pc(),
            memory_root: self.tree.root().map(|x| x.as_canonical_u32()),
        }
    }

    /// Brings the tree up to `state` (the same execution, further on) and returns its boundary.
    pub fn advance(&mut self, state: &VmState<F>) -> Boundary {
        let memory = &state.memory.memory;
        let mut touched: Equipartition<F, CHUNK> = Equipartition::new();
        for (space, mem) in memory.mem.iter().enumerate() {
            let bytes = mem.as_slice();
            if bytes.is_empty() {
                continue;
            }
            let layout = memory.config[space].layout;
            let cell = layout.size();
            let chunk_bytes = cell * CHUNK;
            let chunks_in_space = 1usize << self.md.address_height;
            for page in candidate_pages(bytes) {
                let now = page_bytes(bytes, page);
                let key = (space, page);
                let before: &[u8] = self.shadow.get(&key).map_or(&ZERO_PAGE, |b| b);
                if now == before {
                    continue;
                }
                for (i, (new, old)) in now
                    .chunks(chunk_bytes)
                    .zip(before.chunks(chunk_bytes))
                    .enumerate()
                {
                    let chunk = (page * OS_PAGE) / chunk_bytes + i;
                    if new == old || chunk >= chunks_in_space {
                        continue;
                    }
                    let values: [F; CHUNK] = std::array::from_fn(|c| {
                        // SAFETY: `new` holds CHUNK cells of `cell` bytes of this address
                        // space's own layout, read one cell at a time.
                        unsafe { layout.to_field(&new[c * cell..(c + 1) * cell]) }
                    });
                    touched.insert((space as u32, (chunk * CHUNK) as u32), values);
                }
                let differs = self.initial.get(&key).map_or(&ZERO_PAGE[..], |b| b) != now;
                if differs {
                    self.diverged.insert(key);
                } else {
                    self.diverged.remove(&key);
                }
                self.shadow.insert(key, now.into());
            }
        }
        if !touched.is_empty() {
            self.tree.finalize(&self.hasher, &touched, &self.md);
        }
        self.boundary(state)
    }

    /// Writes `state`, the state last passed to [`Self::advance`] (or the initial state), over
    /// `fresh`, a new initial state of the same execution: the pages that differ from the
    /// program's image, the pc, the streams and the random generator. It costs what the guest
    /// has touched, where cloning the state copies its whole address space (a second or more).
    pub fn copy_onto(&self, state: &VmState<F>, fresh: &mut VmState<F>) {
        let from = &state.memory.memory;
        let to = &mut fresh.memory.memory;
        for &(space, page) in &self.diverged {
            let bytes = page_bytes(from.mem[space].as_slice(), page);
            let start = page * OS_PAGE;
            to.mem[space].as_mut_slice()[start..start + bytes.len()].copy_from_slice(bytes);
        }
        fresh.set_pc(state.pc());
        fresh.streams = state.streams.clone();
        fresh.rng = state.rng.clone();
    }

    /// The checkpoint of `state`, which must be the state last passed to [`Self::advance`] (or
    /// the initial state). Refuses state that a checkpoint cannot carry.
    pub fn checkpoint(
        &self,
        state: &VmState<F>,
        header: CheckpointHeader,
    ) -> Result<Vec<u8>, BackendError> {
        if state.rng != self.initial_rng {
            return Err(BackendError::GuestFailed(format!(
                "the guest drew random hints before segment {} (OpenVM's HintRandom): Plait \
                 cannot checkpoint the VM's random generator, so it cannot split this program",
                header.segment
            )));
        }
        if !state.streams.deferrals.is_empty() {
            return Err(BackendError::GuestFailed(
                "the VM holds deferral state, which Plait cannot checkpoint".into(),
            ));
        }
        let memory = &state.memory.memory;
        let pages = self
            .diverged
            .iter()
            .map(|&(space, page)| PageImage {
                address_space: space as u32,
                page: page as u32,
                bytes: page_bytes(memory.mem[space].as_slice(), page).to_vec(),
            })
            .collect();
        let body = CheckpointBody {
            version: CHECKPOINT_VERSION,
            header,
            pc: state.pc(),
            pages,
            input_stream: state
                .streams
                .input_stream
                .iter()
                .map(|item| item.iter().map(|x| x.as_canonical_u32()).collect())
                .collect(),
            hint_stream: state
                .streams
                .hint_stream
                .iter()
                .map(|x| x.as_canonical_u32())
                .collect(),
        };
        Ok(encode(&body))
    }
}

static ZERO_PAGE: [u8; OS_PAGE] = [0; OS_PAGE];

/// The memory Merkle root of a whole memory, hashed from scratch (about a second for RV32's
/// address space): what a proof starting from this memory exposes.
pub(crate) fn memory_root(memory: &AddressMap, md: &MemoryDimensions) -> [u32; 8] {
    MerkleTree::<F, CHUNK>::from_memory(memory, md, &vm_poseidon2_hasher())
        .root()
        .map(|x| x.as_canonical_u32())
}

/// Page `page` of `bytes` (the last page may be short).
fn page_bytes(bytes: &[u8], page: usize) -> &[u8] {
    let start = page * OS_PAGE;
    &bytes[start.min(bytes.len())..(start + OS_PAGE).min(bytes.len())]
}

/// What a checkpoint says it is the start of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CheckpointHeader {
    /// The job it belongs to (the coordinator's job number).
    pub job: u64,
    pub program_sha256: String,
    pub segment: u32,
    pub instret_start: u64,
    /// The boundary this state is at.
    pub boundary: Boundary,
}

#[derive(Serialize, Deserialize)]
struct PageImage {
    address_space: u32,
    page: u32,
    bytes: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointBody {
    version: u8,
    header: CheckpointHeader,
    pc: u32,
    pages: Vec<PageImage>,
    input_stream: Vec<Vec<u32>>,
    hint_stream: Vec<u32>,
}

fn encode(body: &CheckpointBody) -> Vec<u8> {
    let raw = bitcode::serialize(body).expect("checkpoint serializes");
    // With a content checksum, a corrupted blob fails to decompress rather than decoding to
    // something else.
    let compress = || -> std::io::Result<Vec<u8>> {
        let mut encoder = zstd::Encoder::new(CHECKPOINT_MAGIC.to_vec(), 3)?;
        encoder.include_checksum(true)?;
        encoder.set_pledged_src_size(Some(raw.len() as u64))?;
        encoder.write_all(&raw)?;
        encoder.finish()
    };
    compress().expect("compressing to memory cannot fail")
}

/// SHA-256 of a checkpoint blob, hex: its name in the blob store and in tasks.
pub(crate) fn digest(blob: &[u8]) -> String {
    hex::encode(Sha256::digest(blob))
}

/// The size of a checkpoint before compression, for reports.
pub fn raw_size(blob: &[u8]) -> Option<u64> {
    let frame = blob.strip_prefix(CHECKPOINT_MAGIC)?;
    zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
}

/// A decoded checkpoint, checked against what the task says it starts.
pub(crate) struct StartState {
    pub header: CheckpointHeader,
    pc: u32,
    pages: Vec<PageImage>,
    input_stream: Vec<Vec<u32>>,
    hint_stream: Vec<u32>,
}

impl StartState {
    /// Decodes a checkpoint and checks that it is the start of `expected`; the reason names
    /// the first difference.
    pub fn decode(blob: &[u8], expected: &CheckpointHeader) -> Result<Self, String> {
        let frame = blob
            .strip_prefix(CHECKPOINT_MAGIC)
            .ok_or("not a Plait checkpoint (bad magic bytes)")?;
        let mut raw = Vec::new();
        zstd::Decoder::new(frame)
            .map_err(|e| format!("checkpoint does not decompress: {e}"))?
            .take(MAX_CHECKPOINT_BODY + 1)
            .read_to_end(&mut raw)
            .map_err(|e| format!("checkpoint does not decompress: {e}"))?;
        if raw.len() as u64 > MAX_CHECKPOINT_BODY {
            return Err(format!(
                "checkpoint is larger than {MAX_CHECKPOINT_BODY} bytes uncompressed"
            ));
        }
        let body: CheckpointBody = bitcode::deserialize(&raw)
            .map_err(|e| format!("checkpoint body does not decode: {e}"))?;
        if body.version != CHECKPOINT_VERSION {
            return Err(format!(
                "checkpoint version {} is not {CHECKPOINT_VERSION}",
                body.version
            ));
        }
        let h = &body.header;
        if h.job != expected.job {
            return Err(format!(
                "checkpoint is of job-{}, the task is of job-{}",
                h.job, expected.job
            ));
        }
        if h.program_sha256 != expected.program_sha256 {
            return Err("checkpoint is of another program".into());
        }
        if h.segment != expected.segment || h.instret_start != expected.instret_start {
            return Err(format!(
                "checkpoint is the start of segment {} (instruction {}), the task proves \
                 segment {} (instruction {})",
                h.segment, h.instret_start, expected.segment, expected.instret_start
            ));
        }
        if h.boundary != expected.boundary || body.pc != expected.boundary.pc {
            return Err(
                "checkpoint names another boundary (pc or memory root) than the task".into(),
            );
        }
        Ok(Self {
            header: body.header,
            pc: body.pc,
            pages: body.pages,
            input_stream: body.input_stream,
            hint_stream: body.hint_stream,
        })
    }

    /// Writes this start state over `state`, a fresh initial state of the same program, and
    /// checks that the rebuilt memory hashes to the boundary's root.
    pub fn restore(self, state: &mut VmState<F>, md: &MemoryDimensions) -> Result<(), String> {
        let memory: &mut AddressMap = &mut state.memory.memory;
        for page in &self.pages {
            let mem = memory
                .mem
                .get_mut(page.address_space as usize)
                .ok_or_else(|| format!("checkpoint names address space {}", page.address_space))?
                .as_mut_slice();
            let start = page.page as usize * OS_PAGE;
            let end = start
                .checked_add(page.bytes.len())
                .filter(|&end| end <= mem.len() && page.bytes.len() <= OS_PAGE)
                .ok_or_else(|| {
                    format!(
                        "checkpoint page {} of address space {} lies outside it",
                        page.page, page.address_space
                    )
                })?;
            mem[start..end].copy_from_slice(&page.bytes);
        }
        state.set_pc(self.pc);
        let field = |x: u32| {
            if x < F::ORDER_U32 {
                Ok(F::from_u32(x))
            } else {
                Err(format!("checkpoint stream holds {x}, not a field element"))
            }
        };
        state.streams.input_stream = self
            .input_stream
            .iter()
            .map(|item| item.iter().map(|&x| field(x)).collect())
            .collect::<Result<_, _>>()?;
        state.streams.hint_stream = self
            .hint_stream
            .iter()
            .map(|&x| field(x))
            .collect::<Result<_, _>>()?;
        if memory_root(&state.memory.memory, md) != self.header.boundary.memory_root {
            return Err(
                "checkpoint memory does not hash to the boundary's memory root".to_string(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_that_is_not_a_checkpoint_is_named() {
        let header = CheckpointHeader {
            job: 1,
            program_sha256: "ab".into(),
            segment: 0,
            instret_start: 0,
            boundary: Boundary {
                pc: 0,
                memory_root: [0; 8],
            },
        };
        let err = StartState::decode(b"hello", &header).err().unwrap();
        assert!(err.contains("magic"), "{err}");
        let mut blob = CHECKPOINT_MAGIC.to_vec();
        blob.extend(b"garbage");
        let err = StartState::decode(&blob, &header).err().unwrap();
        assert!(err.contains("decompress"), "{err}");
    }
}
