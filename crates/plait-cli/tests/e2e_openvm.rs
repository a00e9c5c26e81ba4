//! End-to-end tests with real OpenVM proofs (feature `e2e`; minutes on 2 cores).
//!
//! One proof of a 3-segment Fibonacci run is made by the pool as a cluster runs it: a
//! coordinator (`plait serve` on a SQLite store), two `plait worker` processes, and
//! `plait submit --wait`. The proof must verify with `plait verify`, and is then attacked: every
//! tampering must be rejected with exit code 4, and at the task level the coordinator's checks
//! must reject proofs of the wrong segment and aggregations of reordered or missing segments
//! (using the real segment proofs, read back from the coordinator's store).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
};

use plait_core::{AggLayer, JobId, SegmentPlan};
use plait_prover::{
    openvm::OpenVmBackend, ProgramImage, ProofBlob, ProverBackend, ProvingParams, SegmentStart,
    Verdict, VmConfig,
};

const SEGMENT_HEIGHT: u32 = 19;
/// 2.25M instructions: three segments at height 19.
const FIB_N: u64 = 150_000;
const PROOF_REJECTED: i32 = 4;
const BAD_INPUT: i32 = 3;

fn plait(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_plait"))
        .args(args)
        .output()
        .expect("plait runs");
    eprintln!(
        "$ plait {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cache_dir() -> PathBuf {
    std::env::var_os("PLAIT_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/plait"))
}

fn guest_elf(name: &str) -> PathBuf {
    let out = plait(&[
        "build-guest",
        repo().join("guests").join(name).to_str().unwrap(),
    ]);
    assert!(out.status.success(), "guest {name} builds");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a.wrapping_add(b));
    }
    a
}

struct Fixture {
    dir: tempfile::TempDir,
    fib_elf: PathBuf,
    proof: PathBuf,
    /// The job's segment plan and accepted task proofs, as the coordinator stored them.
    plan: SegmentPlan,
    task_proofs: std::collections::BTreeMap<u32, ProofBlob>,
    /// Each task's phase (`segments` or its layer), from its stored timing.
    task_phases: std::collections::BTreeMap<u32, String>,
}

/// Kills the pool's processes when the fixture is built (or its building panics).
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Proves the Fibonacci run once for all tests of this file, through a served coordinator and
/// two worker processes.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let fib_elf = guest_elf("fib");
        let proof = dir.path().join("fib.proof");
        let store = format!("sqlite://{}", dir.path().join("store.sqlite").display());
        let mut processes = Processes(Vec::new());
        let mut server = Command::new(env!("CARGO_BIN_EXE_plait"))
            .args(["serve", "--listen", "127.0.0.1:0", "--store", &store])
            .args([
                "--worker-token",
                "e2e-worker-token-0123",
                "--client-token",
                "e2e-client-token-0123",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        processes.0.push(server);
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap()
            .to_string();
        for i in 0..2 {
            let worker = Command::new(env!("CARGO_BIN_EXE_plait"))
                .args(["worker", "--coordinator", &url])
                .args(["--name", &format!("e2e-{i}")])
                .env("PLAIT_WORKER_TOKEN", "e2e-worker-token-0123")
                .spawn()
                .unwrap();
            processes.0.push(worker);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_plait"))
            .args(["submit", fib_elf.to_str().unwrap()])
            .args(["--input", &FIB_N.to_string()])
            .args(["--segment-height", &SEGMENT_HEIGHT.to_string()])
            .args(["--coordinator", &url, "--wait", proof.to_str().unwrap()])
            .env("PLAIT_CLIENT_TOKEN", "e2e-client-token-0123")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "plait submit --wait succeeds");
        assert!(stdout.contains("job-1 submitted"), "{stdout}");
        drop(processes);

        // The job ended, so a coordinator would read it from the store when asked: so do we.
        let (job, stored_proofs) = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async {
                let store = plait_coordinator::Store::open(&store).await?;
                let job = store
                    .load_job(plait_core::JobId(1))
                    .await?
                    .expect("job-1 stored");
                let proofs = store.task_proofs(job.record.id).await?;
                Ok::<_, plait_coordinator::store::StoreError>((job, proofs))
            })
            .unwrap();
        // Segments are stored one by one as execution cuts them.
        let plan = SegmentPlan {
            segments: job
                .segments
                .iter()
                .map(|json| serde_json::from_str(json).unwrap())
                .collect(),
            public_values: job.record.public_values.clone().unwrap(),
        };
        // Every segment was proven from its checkpoint: nothing before it was executed again.
        for segment in &plan.segments {
            let timing = &job.tasks[&plait_core::TaskId(segment.index)]
                .accepted
                .as_ref()
                .unwrap()
                .1;
            let timing: serde_json::Value = serde_json::from_str(timing).unwrap();
            assert!(
                segment.checkpoint.is_some(),
                "segment {} has a checkpoint",
                segment.index
            );
            assert_eq!(
                timing["meta"]["reexecuted_instructions"], 0,
                "segment {} re-executed nothing: {timing}",
                segment.index
            );
        }
        // Proofs live in the blob store beside the store (the coordinator keeps their names):
        // print what real ones weigh, for the memory figures in docs/benchmarks.md.
        for (task, proof) in &stored_proofs {
            eprintln!("stored proof of {task}: {} bytes", proof.len());
        }
        assert_eq!(stored_proofs.len(), job.tasks.len());
        let task_phases = job
            .tasks
            .iter()
            .map(|(task, stored)| {
                let timing: serde_json::Value =
                    serde_json::from_str(&stored.accepted.as_ref().unwrap().1).unwrap();
                (task.0, timing["phase"].as_str().unwrap().to_string())
            })
            .collect();
        let task_proofs = stored_proofs
            .into_iter()
            .map(|(task, proof)| (task.0, ProofBlob(proof)))
            .collect();
        Fixture {
            dir,
            fib_elf,
            proof,
            plan,
            task_proofs,
            task_phases,
        }
    })
}

fn verify(proof: &Path, program: &Path) -> Output {
    plait(&[
        "verify",
        proof.to_str().unwrap(),
        "--program",
        program.to_str().unwrap(),
    ])
}

fn expected_public_values() -> String {
    let mut bytes = FIB_N.to_le_bytes().to_vec();
    bytes.extend(fib(FIB_N).to_le_bytes());
    bytes.resize(32, 0);
    hex::encode(bytes)
}

#[test]
fn proof_verifies_with_the_right_public_values() {
    let f = fixture();
    let out = verify(&f.proof, &f.fib_elf);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("public values   {}", expected_public_values())),
        "{stdout}"
    );
}

#[test]
fn proof_of_another_program_is_rejected() {
    let f = fixture();
    let other = guest_elf("sha-chain");
    let out = verify(&f.proof, &other);
    assert_eq!(out.status.code(), Some(PROOF_REJECTED));
}

#[test]
fn altered_public_values_are_rejected() {
    let f = fixture();
    let text = std::fs::read_to_string(&f.proof).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut values = hex::decode(json["public-values"].as_str().unwrap()).unwrap();
    values[8] ^= 1; // fib(n), the value a verifier cares about
    json["public-values"] = hex::encode(values).into();
    let tampered = f.dir.path().join("altered-pvs.proof");
    std::fs::write(&tampered, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    let out = verify(&tampered, &f.fib_elf);
    assert_eq!(out.status.code(), Some(PROOF_REJECTED));
    assert!(String::from_utf8_lossy(&out.stderr).contains("public-values"));
}

#[test]
fn a_flipped_byte_anywhere_is_rejected() {
    let f = fixture();
    let bytes = std::fs::read(&f.proof).unwrap();
    // Positions spread over the whole file, plus both ends and the segment height's digits.
    let mut positions: Vec<usize> = (0..48).map(|i| i * bytes.len() / 48).collect();
    positions.push(bytes.len() - 1);
    let text = String::from_utf8_lossy(&bytes);
    let height_at = text.find("\"segment-height\": ").unwrap() + "\"segment-height\": ".len();
    positions.extend([height_at, height_at + 1]);
    let tampered = f.dir.path().join("flipped.proof");
    for position in positions {
        let mut copy = bytes.clone();
        copy[position] ^= 1;
        std::fs::write(&tampered, &copy).unwrap();
        let out = verify(&tampered, &f.fib_elf);
        assert_eq!(
            out.status.code(),
            Some(PROOF_REJECTED),
            "flipping byte {position} must be rejected"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "one-line reason: {stderr}");
    }
}

/// The coordinator-side checks, with the real segment proofs of the fixture's job.
#[test]
fn wrong_reordered_or_missing_segment_proofs_are_rejected_at_the_task_level() {
    let f = fixture();
    let plan = &f.plan;
    assert_eq!(plan.segments.len(), 3);
    let proof = |i: u32| f.task_proofs[&i].clone();
    let (p0, p1, p2) = (proof(0), proof(1), proof(2));
    let program = ProgramImage::new(std::fs::read(&f.fib_elf).unwrap());
    let params = ProvingParams {
        segment_height: SEGMENT_HEIGHT,
        ..Default::default()
    };
    let backend = OpenVmBackend::new(cache_dir());
    let s = &plan.segments;

    // Control: each proof is accepted for its own segment.
    for (i, p) in [&p0, &p1, &p2].into_iter().enumerate() {
        let ending = (i == 2).then_some(plan.public_values.as_slice());
        assert_eq!(
            backend
                .check_segment_proof(&program, &params, &s[i], ending, p)
                .expect("the gate can check"),
            Verdict::Accepted
        );
    }
    // A valid proof of the wrong segment.
    let wrong = backend
        .check_segment_proof(&program, &params, &s[0], None, &p1)
        .expect("the gate can check");
    assert!(matches!(wrong, Verdict::Rejected { .. }), "{wrong:?}");

    // A leaf of the wrong children either fails to prove or is rejected as covering 0..3.
    let assert_leaf_refused = |what: &str, children: &[ProofBlob]| match backend.aggregate(
        &params,
        AggLayer::Leaf,
        children,
    ) {
        Err(e) => eprintln!("{what} leaf refused by the prover: {e}"),
        Ok(leaf) => {
            let verdict = backend
                .check_aggregate_proof(
                    &program,
                    &params,
                    AggLayer::Leaf,
                    None,
                    &s[0],
                    &s[2],
                    true,
                    &leaf,
                )
                .expect("the gate can check");
            assert!(
                matches!(verdict, Verdict::Rejected { .. }),
                "{what}: {verdict:?}"
            );
        }
    };
    assert_leaf_refused("reordered", &[p1.clone(), p0.clone(), p2.clone()]);
    assert_leaf_refused("segment-0-less", &[p1, p2]);

    // The prover may refuse to build such leaves, which leaves the gate untested above: the
    // job's real leaf proof, offered for slices it does not cover, is rejected by the gate.
    let leaf = f
        .task_phases
        .iter()
        .find(|(_, phase)| *phase == "leaf")
        .map(|(task, _)| f.task_proofs[task].clone())
        .unwrap();
    let leaf_for = |first: usize, last: usize, ends: bool| {
        backend
            .check_aggregate_proof(
                &program,
                &params,
                AggLayer::Leaf,
                None,
                &s[first],
                &s[last],
                ends,
                &leaf,
            )
            .expect("the gate can check")
    };
    assert_eq!(leaf_for(0, 2, true), Verdict::Accepted);
    for (first, last, ends) in [(0, 1, false), (1, 2, true), (0, 2, false)] {
        let verdict = leaf_for(first, last, ends);
        assert!(
            matches!(verdict, Verdict::Rejected { .. }),
            "leaf of 0..=2 offered for {first}..={last}: {verdict:?}"
        );
    }
}

/// The gate checks where in the recursion a proof sits: every aggregation proof of the job is
/// accepted for its own layer and rejected for any other, so a worker cannot return a child's
/// proof (or any proof of another layer) as its own.
#[test]
fn proofs_of_another_layer_are_rejected_at_the_gate() {
    let f = fixture();
    let s = &f.plan.segments;
    let program = ProgramImage::new(std::fs::read(&f.fib_elf).unwrap());
    let params = ProvingParams {
        segment_height: SEGMENT_HEIGHT,
        ..Default::default()
    };
    let backend = OpenVmBackend::new(cache_dir());
    let layer_of = |phase: &str| match phase {
        "leaf" => AggLayer::Leaf,
        "internal-for-leaf" => AggLayer::InternalForLeaf,
        "wrap" => AggLayer::Wrap,
        other => AggLayer::InternalRecursive(
            other
                .strip_prefix("internal-recursive.")
                .unwrap()
                .parse()
                .unwrap(),
        ),
    };
    // The tree of a 3-segment job: leaf, internal-for-leaf, internal-recursive.0, wrap.
    let nodes: Vec<(AggLayer, ProofBlob)> = f
        .task_phases
        .iter()
        .filter(|(_, phase)| *phase != "segments")
        .map(|(task, phase)| (layer_of(phase), f.task_proofs[task].clone()))
        .collect();
    let layers: Vec<AggLayer> = nodes.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        layers,
        [
            AggLayer::Leaf,
            AggLayer::InternalForLeaf,
            AggLayer::InternalRecursive(0),
            AggLayer::Wrap
        ]
    );
    let child_of = |layer: AggLayer| match layer {
        AggLayer::Leaf => None,
        AggLayer::InternalForLeaf => Some(AggLayer::Leaf),
        AggLayer::InternalRecursive(0) => Some(AggLayer::InternalForLeaf),
        AggLayer::InternalRecursive(k) => Some(AggLayer::InternalRecursive(k - 1)),
        AggLayer::Wrap => Some(AggLayer::InternalRecursive(0)),
    };
    for (proof_layer, proof) in &nodes {
        for &asked in &layers {
            let verdict = backend
                .check_aggregate_proof(
                    &program,
                    &params,
                    asked,
                    child_of(asked),
                    &s[0],
                    &s[2],
                    true,
                    proof,
                )
                .expect("the gate can check");
            if asked == *proof_layer {
                assert_eq!(
                    verdict,
                    Verdict::Accepted,
                    "{asked} proof for its own layer"
                );
            } else {
                assert!(
                    matches!(verdict, Verdict::Rejected { .. }),
                    "a {proof_layer} proof offered as {asked}: {verdict:?}"
                );
            }
        }
    }
    // The attack of the issue: the wrap's child returned unchanged as the wrap.
    let (_, child) = &nodes[2];
    let verdict = backend
        .check_aggregate_proof(
            &program,
            &params,
            AggLayer::Wrap,
            Some(AggLayer::InternalRecursive(0)),
            &s[0],
            &s[2],
            true,
            child,
        )
        .expect("the gate can check");
    let Verdict::Rejected { reason } = verdict else {
        panic!("the wrap's child accepted as the wrap")
    };
    assert!(reason.contains("recursion depth"), "{reason}");
    // A proof made over another key of the same shape for the layer below (a weakened app key
    // under a leaf) carries another constraint-evaluation commitment; OpenVM's layer above
    // would catch it only after the node was accepted, so the gate catches it at every layer.
    for (layer, proof) in &nodes {
        let forged = plait_prover::openvm::with_other_children_key(proof).unwrap();
        let verdict = backend
            .check_aggregate_proof(
                &program,
                &params,
                *layer,
                child_of(*layer),
                &s[0],
                &s[2],
                true,
                &forged,
            )
            .expect("the gate can check");
        let Verdict::Rejected { reason } = verdict else {
            panic!("a {layer} proof over another children's key accepted")
        };
        assert!(
            reason.contains("verified its children under another key"),
            "{layer}: {reason}"
        );
    }
}

#[test]
fn checkpoints_of_another_segment_or_job_or_altered_are_refused() {
    let f = fixture();
    let program = ProgramImage::new(std::fs::read(&f.fib_elf).unwrap());
    let params = ProvingParams {
        segment_height: SEGMENT_HEIGHT,
        ..Default::default()
    };
    let backend = OpenVmBackend::new(cache_dir());
    let blob_dir = f.dir.path().join("store.sqlite.blobs/job-1");
    let stored = |i: usize| {
        let digest = f.plan.segments[i].checkpoint.as_deref().unwrap();
        std::fs::read(blob_dir.join(digest)).unwrap()
    };
    // The same execution checkpointed for another job: same states, another owner.
    let input = plait_core::ProgramInput {
        items: vec![FIB_N.to_le_bytes().to_vec()],
    };
    let mut other_job = Vec::new();
    let replanned = backend
        .execute_streaming(&program, &input, &params, Some(JobId(2)), &mut |cut| {
            other_job.push(cut.checkpoint.unwrap());
            Ok(())
        })
        .unwrap();
    assert_eq!(replanned.segments.len(), f.plan.segments.len());
    for (a, b) in replanned.segments.iter().zip(&f.plan.segments) {
        assert_eq!(
            a.backend_hint, b.backend_hint,
            "boundaries are deterministic"
        );
    }
    let mut altered = stored(1);
    let middle = altered.len() / 2;
    altered[middle] ^= 1;
    let cases: [(&str, &[u8], u64); 3] = [
        ("another segment's", &stored(2), 1),
        ("another job's", &other_job[1], 1),
        ("altered", &altered, 1),
    ];
    for (what, bytes, job) in cases {
        let start = SegmentStart::Checkpoint {
            job: JobId(job),
            bytes,
        };
        let err = backend
            .prove_segment(&program, &params, &f.plan.segments[1], false, start)
            .expect_err(what)
            .to_string();
        eprintln!("{what} checkpoint: {err}");
        assert!(err.contains("checkpoint refused"), "{what}: {err}");
    }
}

/// The planner's incremental boundaries equal a full rebuild of the memory tree at every
/// boundary, over 26 segments of a longer run (the fixture's 3 segments are checked by their
/// proofs).
#[test]
fn incremental_boundaries_equal_a_full_rebuild() {
    let program = ProgramImage::new(std::fs::read(guest_elf("fib")).unwrap());
    let params = ProvingParams {
        segment_height: SEGMENT_HEIGHT,
        ..Default::default()
    };
    let input = plait_core::ProgramInput {
        items: vec![1_500_000u64.to_le_bytes().to_vec()],
    };
    let backend = OpenVmBackend::new(cache_dir());
    let plan = backend.execute(&program, &input, &params).unwrap();
    assert_eq!(plan.segments.len(), 26);
    let mismatch = plait_prover::openvm::first_boundary_mismatch(
        &cache_dir(),
        &program,
        &input,
        &params,
        &plan,
    )
    .unwrap();
    assert_eq!(mismatch, None, "boundaries of segment {mismatch:?} differ");
}

/// `auto` plans every candidate height from one execution: the predicted segment plans at
/// heights 20 and 21 (from an execution at 19) are close to real executions there. The input is
/// the planner example in docs/planner.md (fib 2,000,000: 30M instructions).
#[test]
fn predicted_segment_plans_match_real_executions() {
    let program = ProgramImage::new(std::fs::read(guest_elf("fib")).unwrap());
    let input = plait_core::ProgramInput {
        items: vec![2_000_000u64.to_le_bytes().to_vec()],
    };
    let backend = OpenVmBackend::new(cache_dir());
    let at = |height: u32| ProvingParams {
        segment_height: height,
        ..Default::default()
    };
    let executed = backend.execute(&program, &input, &at(19)).unwrap();
    for height in [20, 21] {
        let predicted = backend
            .predict_segments(&executed, 19, height)
            .expect("OpenVM predicts larger heights");
        let real = backend.execute(&program, &input, &at(height)).unwrap();
        let real: Vec<u64> = real.segments.iter().map(|s| s.num_insns).collect();
        eprintln!(
            "height {height}: predicted {} segments {:?}, real {} segments {:?}",
            predicted.len(),
            &predicted[..predicted.len().min(3)],
            real.len(),
            &real[..real.len().min(3)]
        );
        assert_eq!(predicted.iter().sum::<u64>(), real.iter().sum::<u64>());
        // Measured: the same number of segments, each within 0.7% of a full segment's length
        // (full segments within 0.04%; the short last one takes the rest).
        assert_eq!(predicted.len(), real.len(), "height {height}");
        let full = real.iter().max().copied().unwrap_or(0);
        for (p, r) in predicted.iter().zip(&real) {
            assert!(
                p.abs_diff(*r) * 100 <= full,
                "height {height}: {p} against {r}"
            );
        }
    }
}

#[test]
fn bad_programs_and_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let fib_elf = guest_elf("fib");
    let execute = |program: &Path, extra: &[&str]| {
        let mut args = vec![
            "execute",
            program.to_str().unwrap(),
            "--segment-height",
            "19",
        ];
        args.extend_from_slice(extra);
        plait(&args)
    };
    let expect = |out: Output, code: i32, needle: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
    };

    expect(
        execute(&dir.path().join("missing.elf"), &["--input", "10"]),
        BAD_INPUT,
        "cannot read program",
    );
    let garbage = dir.path().join("garbage.elf");
    std::fs::write(&garbage, b"definitely not an executable").unwrap();
    expect(
        execute(&garbage, &["--input", "10"]),
        BAD_INPUT,
        "not an ELF",
    );
    let truncated = dir.path().join("truncated.elf");
    let elf = std::fs::read(&fib_elf).unwrap();
    std::fs::write(&truncated, &elf[..elf.len() / 3]).unwrap();
    expect(execute(&truncated, &["--input", "10"]), BAD_INPUT, "ELF");
    // The plait binary itself: an ELF, for x86-64.
    expect(
        execute(Path::new(env!("CARGO_BIN_EXE_plait")), &["--input", "10"]),
        BAD_INPUT,
        "another architecture",
    );
    expect(
        execute(&fib_elf, &["--input", "u64:twelve"]),
        BAD_INPUT,
        "does not parse",
    );
    // The guest reads 8 bytes and panics on 4.
    expect(
        execute(&fib_elf, &["--input", "u32:5"]),
        BAD_INPUT,
        "guest exited with code",
    );
    expect(
        execute(
            &fib_elf,
            &["--input", "1000000", "--max-instructions", "100000"],
        ),
        BAD_INPUT,
        "instruction limit of 100000",
    );
    // A segment height below the VM's fixed tables is refused before any proving.
    expect(
        plait(&[
            "execute",
            fib_elf.to_str().unwrap(),
            "--input",
            "10",
            "--segment-height",
            "17",
        ]),
        BAD_INPUT,
        "at least 19",
    );
}

/// Executing (not proving) the calibration's guests: fib and sha-chain reach 3 segments at
/// height 19, and each reveals what a host computation of the same function gives.
#[test]
fn guests_reveal_what_the_host_computes_and_reach_three_segments() {
    let execute = |elf: &Path, inputs: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "execute",
            elf.to_str().unwrap(),
            "--segment-height",
            "19",
            "--json",
        ];
        for input in inputs {
            args.extend(["--input", input]);
        }
        let out = plait(&args);
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let fib_plan = execute(&guest_elf("fib"), &["150000"]);
    assert_eq!(fib_plan["segments"].as_array().unwrap().len(), 3);
    let mut expected = 150000u64.to_le_bytes().to_vec();
    expected.extend(fib(150000).to_le_bytes());
    expected.resize(32, 0);
    assert_eq!(fib_plan["public-values"], hex::encode(expected));

    let sha_plan = execute(&guest_elf("sha-chain"), &["u32:500", "str:plait"]);
    assert_eq!(sha_plan["segments"].as_array().unwrap().len(), 3);
    let mut digest: [u8; 32] = sha256(b"plait");
    for _ in 0..500 {
        digest = sha256(&digest);
    }
    assert_eq!(sha_plan["public-values"], hex::encode(digest));

    // Each segment's trace size, what the cost model predicts memory and time from. The first
    // (full) segments of the two programs differ in main cells but share LogUp's rounded input
    // size: in the measurements behind the model, such segments peak alike.
    let size = |plan: &serde_json::Value, field: &str| -> u64 {
        plan["segments"][0]["trace-size"][field].as_u64().unwrap()
    };
    for plan in [&fib_plan, &sha_plan] {
        for segment in plan["segments"].as_array().unwrap() {
            let logup = segment["trace-size"]["logup-cells"].as_u64().unwrap();
            assert!(logup.is_power_of_two(), "{segment}");
            assert!(segment["trace-size"]["main-cells"].as_u64().unwrap() > 0);
        }
    }
    assert_eq!(size(&fib_plan, "logup-cells"), 1 << 25);
    assert_eq!(size(&sha_plan, "logup-cells"), 1 << 25);
    assert!(size(&sha_plan, "main-cells") > size(&fib_plan, "main-cells") * 3 / 2);

    // The memory walk calibration measures: its memory chips, by the executor's bound, are most
    // of its main cells (fib's are a few percent), and they cut its segments at a tenth of
    // fib's instructions.
    let walk_plan = execute(&guest_elf("mem-walk"), &["u32:4000", "u32:20"]);
    let instructions = |plan: &serde_json::Value| plan["segments"][0]["instructions"].as_u64();
    assert!(instructions(&walk_plan).unwrap() < instructions(&fib_plan).unwrap() / 10);
    let (at, seen) = mem_walk(4000, 20);
    let mut expected = at.to_le_bytes().to_vec();
    expected.extend(seen.to_le_bytes());
    expected.resize(32, 0);
    assert_eq!(walk_plan["public-values"], hex::encode(expected));
    assert!(size(&walk_plan, "memory-cells") > size(&walk_plan, "main-cells") / 2);
    assert!(size(&fib_plan, "memory-cells") < size(&fib_plan, "main-cells") / 20);
}

/// What `guests/mem-walk` computes, on the host: (last index, checksum).
fn mem_walk(steps: u32, log_words: u32) -> (u32, u32) {
    let mask = (1usize << log_words) - 1;
    let mut table = vec![0u32; mask + 1];
    let mut bytes = vec![0u8; 1 << 12];
    let mut halves = vec![0i16; 1 << 11];
    let (mut at, mut seen) = (0usize, 0u32);
    for step in 0..steps {
        let v = table[at]
            .wrapping_add(at as u32)
            .wrapping_mul(2_654_435_761);
        table[at] = v ^ step;
        let b = bytes[(v as usize >> 3) & 0xfff] as i8 as i32;
        let h = halves[(v as usize >> 5) & 0x7ff] as i32;
        bytes[at & 0xfff] = v as u8;
        halves[at & 0x7ff] = (v >> 16) as i16;
        let divisor = (step | 1) as i32;
        let signed = ((v as i32 >> (step & 31)) / divisor).wrapping_add(v as i32 % divisor);
        let high = ((v as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as u32;
        let signed_high = ((signed as i64 * h as i64) >> 33) as i32;
        seen ^= if b < h { high } else { signed_high as u32 } ^ (v / (step | 3));
        at = (v ^ (v >> 15)) as usize & mask;
    }
    (at as u32, seen)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// The zkML guest and its parameters (the SHA-2 config, the suite's height).
fn zkml_guest() -> (ProgramImage, ProvingParams) {
    let guest = ProgramImage::new(std::fs::read(guest_elf("zkml")).unwrap());
    let params = ProvingParams {
        segment_height: SEGMENT_HEIGHT,
        vm_config: VmConfig::Rv32imSha2,
        ..Default::default()
    };
    (guest, params)
}

/// The CNN and `images` made-up images: any gray levels will do where only execution and
/// memory are looked at.
fn cnn_input(images: usize) -> plait_core::ProgramInput {
    let model = std::fs::read(repo().join("zkml/data/fashion-cnn.bin")).unwrap();
    let pixels: Vec<u8> = (0..images * plait_zkml_model::CNN_IMAGE_PIXELS)
        .map(|i| (i * 7 % 256) as u8)
        .collect();
    plait_core::ProgramInput {
        items: vec![model, pixels],
    }
}

/// The CNN's segments are ended before their LogUp cells double: cut by height alone, its
/// height-19 segments had 2^26 of them, twice a full fib segment's, and needed twice the
/// memory. Segments cut again from their start (past the limit the first time) keep exact
/// boundaries.
#[test]
fn zkml_segments_stay_within_the_logup_limit() {
    let (guest, params) = zkml_guest();
    let input = cnn_input(3);
    let backend = OpenVmBackend::new(cache_dir());
    let plan = backend.execute(&guest, &input, &params).unwrap();
    let limit = 1u64 << (SEGMENT_HEIGHT + 6);
    for s in &plan.segments {
        let size = s.trace_size.expect("executed segments have trace sizes");
        assert!(
            size.logup_cells <= limit,
            "segment {}: {} LogUp cells",
            s.index,
            size.logup_cells
        );
    }
    let mismatch =
        plait_prover::openvm::first_boundary_mismatch(&cache_dir(), &guest, &input, &params, &plan)
            .unwrap();
    assert_eq!(mismatch, None, "boundaries of segment {mismatch:?} differ");
}

/// The Fashion-MNIST models (CNN and vision transformer), by execution (no proving): the guest's
/// claim over the first 500 test images equals the host's, bit for bit (the host equals the
/// training scripts on all 10,000: `zkml/model/tests/fashion.rs`); and `plait demo zkml
/// --no-prove` runs the same check through the CLI.
#[test]
fn fashion_guests_and_host_agree_on_500_test_images() {
    use std::io::Read;
    let gz = std::fs::read("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
        .expect("Debian's dataset-fashion-mnist (scripts/install-deps.sh installs it)");
    let mut idx = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut idx)
        .unwrap();
    let images = idx[16..16 + 500 * plait_zkml_model::CNN_IMAGE_PIXELS].to_vec();
    let elf = guest_elf("zkml");
    let guest = ProgramImage::new(std::fs::read(&elf).unwrap());
    let params = ProvingParams {
        segment_height: SEGMENT_HEIGHT,
        vm_config: VmConfig::Rv32imSha2,
        ..Default::default()
    };
    for name in ["cnn", "vit"] {
        let model = std::fs::read(repo().join(format!("zkml/data/fashion-{name}.bin"))).unwrap();
        let (answers, claim) = plait_zkml_model::infer_batch(&model, &images).unwrap();
        assert_eq!(answers.len(), 500);
        let input = plait_core::ProgramInput {
            items: vec![model, images.clone()],
        };
        let started = std::time::Instant::now();
        let run = OpenVmBackend::new(cache_dir())
            .run(&guest, &input, &params)
            .unwrap();
        eprintln!(
            "zkml {name}: 500 inferences in {} guest instructions, executed in {:.1} s",
            run.instructions,
            started.elapsed().as_secs_f64()
        );
        assert_eq!(
            run.public_values,
            claim.to_vec(),
            "{name}: guest and host disagree"
        );
    }

    // Through the CLI: one image, executed and segmented; the claim must match. `cache`: the
    // cache directory, where not the default; `profile`: a --profile.
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("vit.png");
    let height = SEGMENT_HEIGHT.to_string();
    let demo = |cache: Option<&Path>, profile: Option<&Path>| {
        let mut args = vec![
            "demo",
            "zkml",
            "--model",
            "vit",
            "--image",
            "0",
            "--no-prove",
        ];
        args.extend([
            "--guest",
            elf.to_str().unwrap(),
            "--vm-config",
            "rv32im-sha2",
        ]);
        args.extend(["--segment-height", &height, "--png", png.to_str().unwrap()]);
        // With this machine's device profile it also plots; not into the source tree.
        let plot = dir.path().join("plan.svg");
        args.extend(["--plot", plot.to_str().unwrap()]);
        if let Some(profile) = profile {
            args.extend(["--profile", profile.to_str().unwrap()]);
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_plait"));
        if let Some(cache) = cache {
            command.env("PLAIT_CACHE_DIR", cache);
        }
        let output = command.args(&args).output().expect("plait runs");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        eprintln!("$ plait {}\n{stderr}", args.join(" "));
        (output.status.success(), stderr)
    };
    let (ok, stderr) = demo(None, None);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("revealed the host's claim"), "{stderr}");
    assert!(
        stderr.contains("predicted Ankle boot  (true: Ankle boot: right)"),
        "{stderr}"
    );
    assert!(png.exists());

    // A default profile this Plait cannot read (here: one with a field from a newer Plait) only
    // costs the demo its prediction; a profile named with --profile must be readable.
    let cache = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(cache_dir().join("keys"), cache.path().join("keys")).unwrap();
    let newer = cache.path().join("device-profile-rv32im-sha2.json");
    std::fs::write(
        &newer,
        r#"{"format": "plait-device-profile", "format-version": 99, "from-a-newer-plait": 1}"#,
    )
    .unwrap();
    let (ok, stderr) = demo(Some(cache.path()), None);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("revealed the host's claim"), "{stderr}");
    assert!(
        stderr.contains("not predicting this job") && stderr.contains("is not a device profile"),
        "{stderr}"
    );
    let (ok, stderr) = demo(Some(cache.path()), Some(&newer));
    assert!(
        !ok && stderr.contains("is not a device profile"),
        "{stderr}"
    );
}

/// A batch's guest memory does not grow per image: OpenVM's guest allocator never frees, so an
/// inference that allocated per image grew the CNN's heap by about 18 KB an image (and every
/// segment boundary compares the heap's pages: quadratic in the batch; with the old code this
/// test saw 131,452 bytes after 2 images and 832,425 after 40). The last segment's checkpoint
/// (every page that differs from the program image) of a 40-image batch may exceed a 2-image
/// batch's only by the extra images' pixels.
#[test]
fn a_zkml_batch_s_guest_memory_does_not_grow_per_image() {
    use plait_prover::openvm::checkpoint_raw_size;
    let (guest, params) = zkml_guest();
    let backend = OpenVmBackend::new(cache_dir());
    let last_checkpoint_bytes = |images: usize| {
        let input = cnn_input(images);
        let mut last = 0;
        backend
            .execute_streaming(&guest, &input, &params, Some(JobId(1)), &mut |cut| {
                last = checkpoint_raw_size(&cut.checkpoint.unwrap()).unwrap();
                Ok(())
            })
            .unwrap();
        last
    };
    let (few, many) = (last_checkpoint_bytes(2), last_checkpoint_bytes(40));
    // The 38 more images' pixels, in the heap and perhaps still in a page of the input, plus
    // a page's rounding for each.
    let allowed = 2 * 38 * plait_zkml_model::CNN_IMAGE_PIXELS as u64 + 2 * 4096;
    eprintln!("last checkpoint: {few} bytes after 2 images, {many} after 40");
    assert!(
        many <= few + allowed,
        "guest memory grew with the batch: {few} bytes after 2 images, {many} after 40"
    );
}

/// The zkML flagship, by execution (no proving): the guest's answer on every held-out test
/// image equals the host's, bit for bit (the claim covers every class and logit), and both
/// equal the integer arithmetic of the training script (its predictions are in the report);
/// one inference spans at least 4 segments at the default segment height; bad images and a
/// model that is not the committed one get clear errors.
#[test]
fn zkml_guest_and_host_agree_on_every_test_image() {
    let data = repo().join("zkml/data");
    let model = std::fs::read(data.join("digits-mlp.bin")).unwrap();
    let set =
        plait_zkml_model::parse_test_set(&std::fs::read(data.join("digits-test.bin")).unwrap())
            .unwrap();
    assert_eq!(set.len(), 360);
    let images: Vec<u8> = set.iter().flat_map(|(image, _)| image.to_vec()).collect();
    let (answers, claim) = plait_zkml_model::infer_batch(&model, &images).unwrap();

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("report.json")).unwrap()).unwrap();
    let python: Vec<u8> = report["quantized_predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u8)
        .collect();
    let host: Vec<u8> = answers.iter().map(|a| a.class).collect();
    assert_eq!(host, python, "host and training script disagree");
    let correct = set
        .iter()
        .zip(&host)
        .filter(|((_, label), p)| label == *p)
        .count();
    let reported = report["quantized_test_accuracy"].as_f64().unwrap();
    assert!(
        (correct as f64 - reported * 360.0).abs() < 1e-6,
        "{correct} vs {reported}"
    );

    let guest = ProgramImage::new(std::fs::read(guest_elf("zkml")).unwrap());
    let input = plait_core::ProgramInput {
        items: vec![model.clone(), images],
    };
    let params = ProvingParams {
        segment_height: SEGMENT_HEIGHT,
        vm_config: VmConfig::Rv32imSha2,
        ..Default::default()
    };
    let run = OpenVmBackend::new(cache_dir())
        .run(&guest, &input, &params)
        .unwrap();
    eprintln!(
        "zkml: 360 inferences in {} guest instructions",
        run.instructions
    );
    assert_eq!(run.public_values, claim.to_vec(), "guest and host disagree");

    // One inference. The guest hashes the model with OpenVM's SHA-2 extension, so an ELF
    // given without its VM config is refused, naming the one it needs; under that config the
    // hash costs about 0.1M instructions (6.08M in software).
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("model.bin");
    let image_path = dir.path().join("image.bin");
    std::fs::write(&model_path, &model).unwrap();
    std::fs::write(&image_path, set[0].0).unwrap();
    let elf = guest_elf("zkml");
    let model_item = format!("file:{}", model_path.display());
    let image_item = format!("file:{}", image_path.display());
    let execute = |extra: &[&str]| {
        let mut args = vec!["execute", elf.to_str().unwrap()];
        args.extend(["--input", &model_item, "--input", &image_item, "--json"]);
        args.extend(extra);
        plait(&args)
    };
    let out = execute(&[]);
    assert_eq!(out.status.code(), Some(BAD_INPUT));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the rv32im VM config cannot run")
            && stderr.contains("--vm-config rv32im-sha2"),
        "{stderr}"
    );
    let out = execute(&["--vm-config", "rv32im-sha2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let instructions = plan["total-instructions"].as_u64().unwrap();
    assert!(
        instructions < 1_500_000,
        "one inference with the model hashed by the SHA-2 extension: {instructions} instructions"
    );
}

/// A real proof under the rv32im-sha2 VM config: `plait demo zkml` proves one digit inference
/// by the MLP (its model hashed by OpenVM's SHA-2 extension: one segment at height 19) with a
/// local worker and checks that the proof reveals the host's claim. The proof file names its
/// VM config; `plait verify` accepts it, and refuses it when the file names another config.
#[test]
fn a_zkml_proof_under_the_sha2_config_verifies_and_reveals_the_claim() {
    let dir = tempfile::tempdir().unwrap();
    let proof = dir.path().join("zkml.proof");
    let png = dir.path().join("zkml.png");
    let out = plait(&[
        "demo",
        "zkml",
        "--model",
        "mlp",
        "--image",
        "1",
        "--segment-height",
        &SEGMENT_HEIGHT.to_string(),
        "-o",
        proof.to_str().unwrap(),
        "--png",
        png.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("it reveals the claim"), "{stderr}");

    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&proof).unwrap()).unwrap();
    assert_eq!(file["vm-config"], "rv32im-sha2");
    assert_eq!(file["format-version"], 2);
    let elf = guest_elf("zkml");
    assert!(verify(&proof, &elf).status.success());
    // The same proof, claimed to be of the plain config: checked against RV32IM's keys, and
    // rejected.
    let mut renamed = file.clone();
    renamed["vm-config"] = "rv32im".into();
    let other = dir.path().join("renamed.proof");
    std::fs::write(&other, serde_json::to_vec(&renamed).unwrap()).unwrap();
    assert_eq!(verify(&other, &elf).status.code(), Some(PROOF_REJECTED));
}

/// `plait plan` with device profiles: a table and a recommendation that follows the goal, an
/// SVG plot, and clear errors for a profile of another version and for a pool that cannot hold
/// any candidate (the profiles here are written by the test, not measured).
#[test]
fn plan_recommends_by_goal_and_refuses_bad_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let profile = |name: &str, memory: u64, version: &str| {
        let json = serde_json::json!({
            "format": "plait-device-profile", "format-version": 1,
            "plait-version": version, "backend": "openvm", "backend-version": "2.0",
            "device": name, "cores": 2, "memory-bytes": memory,
            "tree": {"num-children-leaf": 4, "num-children-internal": 3},
            "segments": [
                {"segment-height": 19, "instructions": 800000, "seconds": 50.0, "peak-rss-bytes": 2u64 << 30},
                {"segment-height": 20, "instructions": 1700000, "seconds": 95.0, "peak-rss-bytes": 4u64 << 30},
            ],
            "nodes": [
                {"kind": "leaf", "children": 1, "seconds": 60.0, "peak-rss-bytes": 5u64 << 30},
                {"kind": "leaf", "children": 2, "seconds": 80.0, "peak-rss-bytes": 6u64 << 30},
                {"kind": "internal-for-leaf", "children": 1, "seconds": 70.0, "peak-rss-bytes": 6u64 << 30},
                {"kind": "internal-recursive", "children": 1, "seconds": 60.0, "peak-rss-bytes": 6u64 << 30},
                {"kind": "wrap", "children": 1, "seconds": 36.0, "peak-rss-bytes": 6u64 << 30},
            ],
        });
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, json.to_string()).unwrap();
        path.to_str().unwrap().to_string()
    };
    let fib = guest_elf("fib");
    let plan = |extra: &[&str]| {
        let mut args = vec![
            "plan",
            fib.to_str().unwrap(),
            "--input",
            "150000",
            "--heights",
            "19,20",
        ];
        args.extend(extra);
        plait(&args)
    };
    let server = profile("server", 24 << 30, env!("CARGO_PKG_VERSION"));
    let svg = dir.path().join("plan.svg");
    let out = plan(&[
        "--profile",
        &server,
        "--workers",
        "8",
        "--goal",
        "latency",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let fast: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = plan(&[
        "--profile",
        &server,
        "--workers",
        "8",
        "--goal",
        "cost",
        "--json",
    ]);
    let cheap: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 3 segments at 19, 2 at 20: more segments finish sooner on 8 workers but cost more work.
    assert_eq!(fast["recommended-segment-height"], 19, "{fast}");
    assert_eq!(cheap["recommended-segment-height"], 20, "{cheap}");
    let rows = fast["candidates"].as_array().unwrap();
    assert_eq!(rows[0]["segments"], 3);
    assert_eq!(rows[1]["segments"], 2);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<polyline"));

    // One GPU beside the eight servers (a synthetic profile: the server's costs a hundred times
    // faster, placed by 80 GiB of device memory): predicted far faster than the servers alone.
    let mut gpu: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&server).unwrap()).unwrap();
    gpu["device"] = "gpu".into();
    gpu["device-kind"] = "gpu".into();
    gpu["memory-bytes"] = (80u64 << 30).into();
    for task in ["segments", "nodes"] {
        for m in gpu[task].as_array_mut().unwrap() {
            m["seconds"] = (m["seconds"].as_f64().unwrap() / 100.0).into();
            m["peak-device-bytes"] = m["peak-rss-bytes"].clone();
        }
    }
    let gpu_path = dir.path().join("gpu.json");
    std::fs::write(&gpu_path, gpu.to_string()).unwrap();
    let out = plan(&[
        "--pool",
        &format!("{}:1", gpu_path.display()),
        "--pool",
        &format!("{server}:8"),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mixed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let latency = |plan: &serde_json::Value| {
        plan["candidates"][0]["predicted_latency_seconds"]
            .as_f64()
            .unwrap()
    };
    assert!(latency(&mixed) < latency(&fast) / 10.0, "{mixed} {fast}");
    let fit = &mixed["candidates"][0]["devices_that_fit"];
    assert_eq!(fit, &serde_json::json!(["gpu", "server"]), "{mixed}");

    let old = profile("old", 24 << 30, "0.0.1");
    let out = plan(&["--profile", &old]);
    assert_eq!(out.status.code(), Some(BAD_INPUT));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `plait calibrate` again"));
    let laptop = profile("laptop", 3 << 30, env!("CARGO_PKG_VERSION"));
    let out = plan(&["--pool", &format!("{laptop}:4")]);
    assert_eq!(out.status.code(), Some(BAD_INPUT));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no candidate segment height fits any device"),
        "{stderr}"
    );
}
