//! The CNN's integer inference on the host against `zkml/train_fashion.py`'s own integer
//! arithmetic, on all 10,000 Fashion-MNIST test images: the hash of every logit must be the one
//! the training script recorded, and the accuracy the one it reported.

use std::io::Read;

use plait_zkml_model::{predict, sha256, CnnModel, CNN_IMAGE_PIXELS};

const DATA: &str = "/usr/share/datasets/fashion-mnist";

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

#[test]
fn the_host_reproduces_the_training_scripts_integer_logits_on_every_test_image() {
    let model_bytes = data("fashion-cnn.bin");
    let report: serde_json::Value =
        serde_json::from_slice(&data("fashion-cnn-report.json")).unwrap();
    assert_eq!(
        hex(&sha256(&model_bytes)),
        report["model_sha256"].as_str().unwrap(),
        "the model file is the one the report describes"
    );
    let model = CnnModel::parse(&model_bytes).unwrap();
    assert_eq!(
        model.parameters() as u64,
        report["parameters"].as_u64().unwrap()
    );

    let images = read_idx("t10k-images-idx3-ubyte.gz");
    let labels = read_idx("t10k-labels-idx1-ubyte.gz");
    let (images, labels) = (&images[16..], &labels[8..]);
    assert_eq!(images.len(), 10_000 * CNN_IMAGE_PIXELS);
    let mut all_logits = Vec::with_capacity(10_000 * 40);
    let mut correct = 0;
    for (image, &label) in images.chunks_exact(CNN_IMAGE_PIXELS).zip(labels) {
        let logits = model.logits(image.try_into().unwrap());
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
}

#[test]
fn damaged_models_are_refused_by_name() {
    let model = data("fashion-cnn.bin");
    let err = |bytes: &[u8]| CnnModel::parse(bytes).err().unwrap().to_string();
    assert!(err(&model[..model.len() - 1]).contains("truncated"));
    assert!(err(&[model.as_slice(), &[0]].concat()).contains("after its last layer"));
    assert!(err(b"PLAITMLP\x01\0\0\0").contains("not a Plait model"));
    let mut bad_shape = model.clone();
    bad_shape[24..28].copy_from_slice(&7u32.to_le_bytes()); // the first layer's inputs
    assert!(
        err(&bad_shape).contains("model shape"),
        "{}",
        err(&bad_shape)
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_batch_of_cnn_images_makes_one_claim_over_every_answer() {
    let model_bytes = data("fashion-cnn.bin");
    let model = CnnModel::parse(&model_bytes).unwrap();
    let images = read_idx("t10k-images-idx3-ubyte.gz");
    let batch = &images[16..16 + 3 * CNN_IMAGE_PIXELS];
    let (answers, claim) = plait_zkml_model::infer_batch(&model_bytes, batch).unwrap();
    assert_eq!(answers.len(), 3);
    for (answer, image) in answers.iter().zip(batch.chunks_exact(CNN_IMAGE_PIXELS)) {
        assert_eq!(answer.logits, model.logits(image.try_into().unwrap()));
    }
    assert_eq!(
        claim,
        plait_zkml_model::claim(&sha256(&model_bytes), &sha256(batch), &answers)
    );
    // Another image, or a partial one, changes or refuses the claim.
    let mut other = batch.to_vec();
    other[100] ^= 0xff;
    assert_ne!(
        plait_zkml_model::infer_batch(&model_bytes, &other)
            .unwrap()
            .1,
        claim
    );
    let err = plait_zkml_model::infer_batch(&model_bytes, &batch[1..])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("28×28"), "{err}");
}
