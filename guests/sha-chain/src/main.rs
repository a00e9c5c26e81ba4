//! A SHA-256 hash chain: h_0 = SHA-256(buffer), h_{i+1} = SHA-256(h_i), computed in software.
//!
//! Input: two items, the iteration count `k` as a little-endian u32, then the buffer bytes.
//! Reveals: h_k as 32 bytes.
use sha2::{Digest, Sha256};

openvm::entry!(main);

fn main() {
    let k_bytes = openvm::io::read_vec();
    let k = u32::from_le_bytes(k_bytes.as_slice().try_into().expect("first item must be a u32"));
    let buffer = openvm::io::read_vec();
    let mut digest: [u8; 32] = Sha256::digest(&buffer).into();
    for _ in 0..k {
        digest = Sha256::digest(digest).into();
    }
    openvm::io::reveal_bytes32(digest);
}
