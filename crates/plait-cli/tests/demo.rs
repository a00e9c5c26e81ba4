//! `plait demo zkml` refuses bad input with exit code 3 and a message that names the problem,
//! before building or proving anything. (Its proofs and executions are in `e2e_openvm.rs`.)

use std::{path::Path, process::Command};

const BAD_INPUT: i32 = 3;

/// Runs `plait demo zkml ARGS` in a scratch directory with a scratch cache; returns the exit
/// code and stderr, and checks that no proof was written.
fn demo(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plait"))
        .args(["demo", "zkml", "-o", "x.proof", "--png", "x.png"])
        .args(args)
        .current_dir(dir)
        .env("PLAIT_CACHE_DIR", dir.join("cache"))
        .output()
        .unwrap();
    assert!(!dir.join("x.proof").exists(), "a proof was written");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn refused(dir: &Path, args: &[&str], message: &str) {
    let (code, stderr) = demo(dir, args);
    assert_eq!(code, Some(BAD_INPUT), "{args:?}: {stderr}");
    assert!(stderr.contains(message), "{args:?}: {stderr}");
    assert!(
        !dir.join("cache/guest-target").exists(),
        "{args:?}: a guest was built"
    );
}

#[test]
fn bad_models_images_and_batches_are_refused_before_anything_is_proven() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = |name: &str, bytes: &[u8]| {
        std::fs::write(d.join(name), bytes).unwrap();
        d.join(name).to_str().unwrap().to_string()
    };

    refused(d, &["--model", "gpt2"], "unknown model \"gpt2\"");
    for model in ["cnn", "vit"] {
        refused(
            d,
            &["--model", model, "--batch", "10001"],
            "test set has images 0..10000; asked for 10001 from 1",
        );
        refused(
            d,
            &["--model", model, "--image", "9999", "--batch", "2"],
            "asked for 2 from 9999",
        );
    }
    refused(d, &["--batch", "0"], "asked for 0 from 1");

    // Images of the wrong size or range, as text, raw bytes and PNG.
    let text = file("four.txt", b"0 1 2 3\n");
    refused(d, &["--image-file", &text], "28×28 = 784 pixels, got 4");
    let mut pixels = vec!["0"; 784];
    pixels[10] = "256";
    let text = file("range.txt", pixels.join(",").as_bytes());
    refused(
        d,
        &["--image-file", &text],
        "\"256\" is not a gray level 0..=255",
    );
    let raw = file("raw.bin", &[7; 783]);
    refused(
        d,
        &["--model", "vit", "--image-file", &raw],
        "784 pixels, got 783",
    );
    let mut png = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png, 27, 28);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        encoder
            .write_header()
            .unwrap()
            .write_image_data(&[0; 27 * 28])
            .unwrap();
    }
    let png = file("narrow.png", &png);
    refused(
        d,
        &["--image-file", &png],
        "the PNG is 27×28; the model takes 28×28",
    );
    let mut digit = vec![0u8; 64];
    digit[10] = 17;
    let raw = file("digit.bin", &digit);
    refused(
        d,
        &["--model", "mlp", "--image-file", &raw],
        "pixel 10 is 17",
    );
    let text = file("digit.txt", b"0 1 2 3");
    refused(
        d,
        &["--model", "mlp", "--image-file", &text],
        "8×8 = 64 pixels, got 4",
    );

    // A model file that does not hash to the committed model.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (model, name) in [
        ("cnn", "fashion-cnn.bin"),
        ("vit", "fashion-vit.bin"),
        ("mlp", "digits-mlp.bin"),
    ] {
        let mut bytes = std::fs::read(repo.join("zkml/data").join(name)).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        let tampered = file("tampered.bin", &bytes);
        refused(
            d,
            &["--model", model, "--model-file", &tampered],
            &format!("but the committed {model} model is"),
        );
    }
    let missing = d.join("missing.bin");
    refused(
        d,
        &["--model-file", missing.to_str().unwrap()],
        "cannot read model",
    );
}
