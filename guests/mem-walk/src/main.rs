//! A random walk over a large table: each step reads a word, writes it back changed and jumps
//! to where the value points. Nearly every step touches another memory block, so the memory
//! chips (boundary, Merkle tree) fill as they do not for fib or SHA-256; and each step also
//! loads and stores bytes and halfwords, shifts, compares, multiplies and divides, signed and
//! not, so that a segment has nearly every chip of the base ISA in it, as a zkML segment
//! does (its proof, which carries every present chip's columns, is as large).
//!
//! Input: two items, the step count `k` and the log2 of the table's size in words `w` (at most
//! 22), each a little-endian u32. Reveals: the last index and a checksum of the walk, as
//! little-endian u32 words 0 and 1.
openvm::entry!(main);

fn read_u32() -> u32 {
    let item = openvm::io::read_vec();
    u32::from_le_bytes(item.as_slice().try_into().expect("each item must be a u32"))
}

fn main() {
    let k = read_u32();
    let log_words = read_u32();
    assert!(log_words <= 22, "the table is at most 2^22 words");
    let mask = (1usize << log_words) - 1;
    // Zeroed, so the walk starts at once (fresh guest memory is zero; nothing is written).
    let mut table = vec![0u32; mask + 1];
    let mut bytes = vec![0u8; 1 << 12];
    let mut halves = vec![0i16; 1 << 11];
    let (mut at, mut seen) = (0usize, 0u32);
    for step in 0..k {
        let v = table[at].wrapping_add(at as u32).wrapping_mul(2_654_435_761);
        table[at] = v ^ step;
        let b = bytes[(v as usize >> 3) & 0xfff] as i8 as i32;
        let h = halves[(v as usize >> 5) & 0x7ff] as i32;
        bytes[at & 0xfff] = v as u8;
        halves[at & 0x7ff] = (v >> 16) as i16;
        let divisor = (step | 1) as i32;
        let signed = (v as i32 >> (step & 31)) / divisor + (v as i32 % divisor);
        let high = ((v as u64 * 0x9e37_79b9_7f4a_7c15u64) >> 40) as u32;
        let signed_high = ((signed as i64 * h as i64) >> 33) as i32;
        seen ^= if b < h { high } else { signed_high as u32 } ^ (v / (step | 3));
        at = (v ^ (v >> 15)) as usize & mask;
    }
    openvm::io::reveal_u32(at as u32, 0);
    openvm::io::reveal_u32(seen, 1);
}
