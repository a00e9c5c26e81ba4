//! The Fashion-MNIST models' integer inference on the host against the training scripts' own
//! integer arithmetic (`zkml/train_fashion.py`, `zkml/train_fashion_vit.py`), on all 10,000
//! test images: the hash of every logit must be the one the script recorded, and the accuracy
//! the one it reported.

use std::io::Read;

use plait_zkml_model::{infer_batch, predict, sha256, Classifier, CNN_IMAGE_PIXELS};

const DATA: &str = "/usr/share/datasets/fashion-mnist";
const PIXELS: usize = CNN_IMAGE_PIXELS;

fn read_idx(name: &str) -> Vec<u8> {
    let path = format!("{DATA}/{name}");
    let gz = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{path}: {e} (install Debian's dataset-fashion-mnist: scripts/install-deps.sh)")
    });
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every logit of every test image, and the accuracy, as `name`'s report recorded them.
fn reproduces_the_training_script(name: &str, kind: &str) -> serde_json::Value {
    let model_bytes = data(&format!("{name}.bin"));
    let report: serde_json::Value =
        serde_json::from_slice(&data(&format!("{name}-report.json"))).unwrap();
    assert_eq!(
        hex(&sha256(&model_bytes)),
        report["model_sha256"].as_str().unwrap(),
        "the model file is the one the report describes"
    );
    let model = Classifier::parse(&model_bytes).unwrap();
    assert_eq!(model.kind(), kind);

    let images = read_idx("t10k-images-idx3-ubyte.gz");
    let labels = read_idx("t10k-labels-idx1-ubyte.gz");
    let (images, labels) = (&images[16..], &labels[8..]);
    assert_eq!(images.len(), 10_000 * PIXELS);
    let mut all_logits = Vec::with_capacity(10_000 * 40);
    let mut correct = 0;
    for (image, &label) in images.chunks_exact(PIXELS).zip(labels) {
        let logits = model.logits(image).unwrap();
        correct += usize::from(predict(&logits) == label);
        for l in logits {
            all_logits.extend(l.to_le_bytes());
        }
    }
    assert_eq!(
        hex(&sha256(&all_logits)),
        report["logits_sha256"].as_str().unwrap(),
        "every logit of every test image, bit for bit"
    );
    let accuracy = correct as f64 / 10_000.0;
    assert_eq!(
        accuracy,
        report["quantized_test_accuracy"].as_f64().unwrap()
    );
    report
}

#[test]
fn the_cnn_reproduces_the_training_scripts_integer_logits_on_every_test_image() {
    let report = reproduces_the_training_script("fashion-cnn", "CNN");
    let model = data("fashion-cnn.bin");
    assert_eq!(
        Classifier::parse(&model).unwrap().parameters() as u64,
        report["parameters"].as_u64().unwrap()
    );
}

#[test]
fn the_vit_reproduces_the_training_scripts_integer_logits_on_every_test_image() {
    let report = reproduces_the_training_script("fashion-vit", "ViT");
    // Layer normalisations' gains and biases (5 of width 64) are folded into the layers after
    // them, so the integer model has that many fewer parameters than the float one.
    let model = data("fashion-vit.bin");
    assert_eq!(
        Classifier::parse(&model).unwrap().parameters() as u64,
        report["parameters"].as_u64().unwrap() - 5 * 2 * 64
    );
}

#[test]
fn damaged_models_are_refused_by_name() {
    for name in ["fashion-cnn.bin", "fashion-vit.bin"] {
        let model = data(name);
        let err = |bytes: &[u8]| Classifier::parse(bytes).err().unwrap().to_string();
        assert!(err(&model[..model.len() - 1]).contains("truncated"));
        assert!(err(&[model.as_slice(), &[0]].concat()).contains("after its last layer"));
        let mut bad_shape = model.clone();
        bad_shape[24..28].copy_from_slice(&7u32.to_le_bytes()); // a width or input count
        assert!(
            err(&bad_shape).contains("model shape"),
            "{name}: {}",
            err(&bad_shape)
        );
        let mut newer = model.clone();
        newer[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(err(&newer).contains("version 2"), "{}", err(&newer));
    }
    let err = Classifier::parse(b"ELF\x7f...").err().unwrap().to_string();
    assert!(err.contains("not a Plait model"), "{err}");
}

#[test]
fn a_batch_of_fashion_images_makes_one_claim_over_every_answer() {
    let images = read_idx("t10k-images-idx3-ubyte.gz");
    let batch = &images[16..16 + 3 * PIXELS];
    for name in ["fashion-cnn.bin", "fashion-vit.bin"] {
        let model_bytes = data(name);
        let model = Classifier::parse(&model_bytes).unwrap();
        let (answers, claim) = infer_batch(&model_bytes, batch).unwrap();
        assert_eq!(answers.len(), 3);
        for (answer, image) in answers.iter().zip(batch.chunks_exact(PIXELS)) {
            assert_eq!(answer.logits, model.logits(image).unwrap());
        }
        assert_eq!(
            claim,
            plait_zkml_model::claim(&sha256(&model_bytes), &sha256(batch), &answers)
        );
        // Another image, or a partial one, changes or refuses the claim.
        let mut other = batch.to_vec();
        other[100] ^= 0xff;
        assert_ne!(infer_batch(&model_bytes, &other).unwrap().1, claim);
        let err = infer_batch(&model_bytes, &batch[1..])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("28×28"), "{err}");
    }
}
