//! Fibonacci modulo 2^64.
//!
//! Input: one item, `n` as a little-endian u64. Reveals: `n` (words 0-1) and `fib(n) mod 2^64`
//! (words 2-3), as little-endian u32 words.
openvm::entry!(main);

fn main() {
    let input = openvm::io::read_vec();
    let n = u64::from_le_bytes(input.as_slice().try_into().expect("input must be 8 bytes (u64)"));
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        let c = a.wrapping_add(b);
        a = b;
        b = c;
    }
    openvm::io::reveal_u32(n as u32, 0);
    openvm::io::reveal_u32((n >> 32) as u32, 1);
    openvm::io::reveal_u32(a as u32, 2);
    openvm::io::reveal_u32((a >> 32) as u32, 3);
}
