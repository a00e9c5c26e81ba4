//! zkML: classifies 8×8 digit images with a quantized MLP (`zkml/model`).
//!
//! Input: item 0 the model file, item 1 one or more images (64 gray levels 0..=16 each,
//! concatenated). Reveals the 32-byte claim of `plait_zkml_model::claim`: it binds the model's
//! SHA-256, the images' SHA-256, and every predicted class and logit. A bad model or image
//! panics the guest, so no proof of it can exist.
openvm::entry!(main);

fn main() {
    let model = openvm::io::read_vec();
    let images = openvm::io::read_vec();
    let (_answers, claim) = plait_zkml_model::infer_batch(&model, &images)
        .unwrap_or_else(|e| panic!("zkml guest: {e}"));
    for (i, word) in claim.chunks_exact(4).enumerate() {
        openvm::io::reveal_u32(u32::from_le_bytes(word.try_into().unwrap()), i);
    }
}
