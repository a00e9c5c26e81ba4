//! Proving on an NVIDIA GPU with OpenVM's CUDA engine (the `cuda` feature).
//!
//! The keys are the CPU's (see [`super::keys`]): the GPU provers load the same key files, and
//! before first use check that their own commitments to the child keys equal the ones the
//! CPU-made verifier expects, so a GPU proof passes the same gate as a CPU proof.
//!
//! OpenVM's CUDA memory manager claims the device in a constructor that runs before `main`: a
//! process with this module cannot start on a machine without a usable GPU. The `plait` binary
//! checks for one before that constructor and runs its embedded CPU build instead
//! (`plait-cli`'s `cpu_fallback`).

use std::{
    collections::HashMap,
    ffi::{c_char, c_int, CStr},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use openvm_continuations::prover::InnerGpuProver;
use openvm_cuda_backend::BabyBearPoseidon2GpuEngine;
use openvm_sdk::{
    config::{MAX_NUM_CHILDREN_INTERNAL, MAX_NUM_CHILDREN_LEAF},
    SC,
};
use openvm_sdk_config::SdkVmGpuBuilder;
use openvm_stark_backend::{keygen::types::MultiStarkProvingKey, proof::Proof};
use plait_core::{AggLayer, Device, DeviceKind};

use super::{
    keys::{KeySet, LayerVks},
    proofs::{self, prove_layer_with, LayerProvers, SegmentTask},
};
use crate::{BackendError, ProofBlob, ProofMeta, VmConfig};

type GpuEngine = BabyBearPoseidon2GpuEngine;
type GpuLeafProver = InnerGpuProver<MAX_NUM_CHILDREN_LEAF>;
type GpuInternalProver = InnerGpuProver<MAX_NUM_CHILDREN_INTERNAL>;

// The CUDA runtime (linked statically) and, for the device's name, the driver API.
extern "C" {
    fn cudaGetDeviceCount(count: *mut c_int) -> c_int;
    fn cudaGetDevice(device: *mut c_int) -> c_int;
    fn cudaDeviceGetAttribute(value: *mut c_int, attr: c_int, device: c_int) -> c_int;
    fn cudaMemGetInfo(free: *mut usize, total: *mut usize) -> c_int;
    fn cudaDriverGetVersion(version: *mut c_int) -> c_int;
    fn cuDeviceGetName(name: *mut c_char, len: c_int, device: c_int) -> c_int;
}

const COMPUTE_CAPABILITY_MAJOR: c_int = 75;
const COMPUTE_CAPABILITY_MINOR: c_int = 76;

/// An open GPU: what it is, and its provers per key set.
pub(crate) struct Gpu {
    device: Device,
    layers: Mutex<HashMap<(VmConfig, u32), Arc<GpuLayers>>>,
}

fn cuda(what: &str, code: c_int) -> Result<(), String> {
    if code == 0 {
        Ok(())
    } else {
        Err(format!("{what} failed with CUDA error {code}"))
    }
}

impl Gpu {
    /// Finds the GPU the CUDA runtime selected (the first one `CUDA_VISIBLE_DEVICES` leaves).
    pub fn open() -> Result<Self, String> {
        let mut count = 0;
        cuda("cudaGetDeviceCount", unsafe {
            cudaGetDeviceCount(&mut count)
        })?;
        if count == 0 {
            return Err("the CUDA runtime finds no GPU".into());
        }
        let mut ordinal = 0;
        cuda("cudaGetDevice", unsafe { cudaGetDevice(&mut ordinal) })?;
        let (mut major, mut minor) = (0, 0);
        cuda("cudaDeviceGetAttribute", unsafe {
            cudaDeviceGetAttribute(&mut major, COMPUTE_CAPABILITY_MAJOR, ordinal)
        })?;
        cuda("cudaDeviceGetAttribute", unsafe {
            cudaDeviceGetAttribute(&mut minor, COMPUTE_CAPABILITY_MINOR, ordinal)
        })?;
        let (mut free, mut total) = (0usize, 0usize);
        cuda("cudaMemGetInfo", unsafe {
            cudaMemGetInfo(&mut free, &mut total)
        })?;
        let mut name = [0 as c_char; 256];
        let model = if unsafe { cuDeviceGetName(name.as_mut_ptr(), 255, ordinal) } == 0 {
            unsafe { CStr::from_ptr(name.as_ptr()) }
                .to_string_lossy()
                .chars()
                .filter(|c| !c.is_control())
                .take(Device::MAX_MODEL_BYTES / 4)
                .collect()
        } else {
            format!("CUDA device {ordinal}")
        };
        let mut driver = 0;
        unsafe { cudaDriverGetVersion(&mut driver) };
        let device = Device {
            kind: DeviceKind::Gpu,
            model,
            memory_bytes: total as u64,
            compute_capability: Some(format!("{major}.{minor}")),
        };
        tracing::info!(
            device = %device.describe(),
            compute_capability = %format!("{major}.{minor}"),
            cuda_driver = %format!("{}.{}", driver / 1000, driver % 1000 / 10),
            "proving on the GPU"
        );
        Ok(Self {
            device,
            layers: Mutex::new(HashMap::new()),
        })
    }

    pub fn device(&self) -> Device {
        self.device.clone()
    }

    /// Proves a segment on the GPU, measuring the device memory it took.
    pub fn prove_segment(
        &self,
        task: SegmentTask<'_>,
    ) -> Result<(ProofBlob, ProofMeta), BackendError> {
        let (result, device_peak_bytes) =
            measure_device_peak(|| proofs::prove_segment_on::<GpuEngine, _>(SdkVmGpuBuilder, task));
        result.map(|(proof, meta)| {
            (
                proof,
                ProofMeta {
                    device_peak_bytes,
                    ..meta
                },
            )
        })
    }

    /// Proves an aggregation node on the GPU, measuring the device memory it took.
    pub fn aggregate(
        &self,
        keys: &Arc<KeySet>,
        layer: AggLayer,
        children: &[ProofBlob],
    ) -> Result<(ProofBlob, u64), BackendError> {
        let provers = self.layer_provers(keys)?;
        let (result, device_peak_bytes) =
            measure_device_peak(|| proofs::aggregate(provers.as_ref(), layer, children));
        result.map(|proof| (proof, device_peak_bytes))
    }

    /// The aggregation provers for `keys` on this GPU, loaded (into device memory) once.
    fn layer_provers(&self, keys: &Arc<KeySet>) -> Result<Arc<GpuLayers>, BackendError> {
        let mut layers = self.layers.lock().expect("GPU layers lock");
        Ok(layers
            .entry((keys.vm, keys.segment_height))
            .or_insert_with(|| {
                Arc::new(GpuLayers {
                    keys: keys.clone(),
                    leaf: OnceLock::new(),
                    internal_for_leaf: OnceLock::new(),
                    internal_recursive: OnceLock::new(),
                })
            })
            .clone())
    }
}

/// One key set's aggregation provers on the GPU, each loaded on first use.
pub(crate) struct GpuLayers {
    keys: Arc<KeySet>,
    leaf: OnceLock<Arc<GpuLeafProver>>,
    internal_for_leaf: OnceLock<Arc<GpuInternalProver>>,
    internal_recursive: OnceLock<Arc<GpuInternalProver>>,
}

impl GpuLayers {
    fn leaf_prover(&self) -> Result<&Arc<GpuLeafProver>, BackendError> {
        self.load(&self.leaf, Layer::Leaf)
    }

    fn internal_for_leaf_prover(&self) -> Result<&Arc<GpuInternalProver>, BackendError> {
        self.load(&self.internal_for_leaf, Layer::InternalForLeaf)
    }

    fn internal_recursive_prover(&self) -> Result<&Arc<GpuInternalProver>, BackendError> {
        self.load(&self.internal_recursive, Layer::InternalRecursive)
    }

    /// Loads a layer's prover from the CPU-made key, and refuses it if the GPU's commitment
    /// to its child key differs from the one the verifier expects (the engines would then not
    /// make the same proofs).
    fn load<'a, const N: usize>(
        &'a self,
        cell: &'a OnceLock<Arc<InnerGpuProver<N>>>,
        layer: Layer,
    ) -> Result<&'a Arc<InnerGpuProver<N>>, BackendError> {
        if let Some(prover) = cell.get() {
            return Ok(prover);
        }
        let keys = &self.keys;
        let vks: &LayerVks = keys.vks()?;
        let (pk_file, child_vk, self_recursive) = layer.key(vks);
        let pk: MultiStarkProvingKey<SC> = keys.read_key(pk_file)?;
        let prover = InnerGpuProver::<N>::from_pk::<GpuEngine>(
            Arc::new(child_vk.clone()),
            Arc::new(pk),
            self_recursive,
            None,
        );
        let baseline = &keys.verifier_template()?.baseline;
        let expected = match layer {
            Layer::Leaf => &baseline.app_vk_commit,
            Layer::InternalForLeaf => &baseline.leaf_vk_commit,
            Layer::InternalRecursive => &baseline.internal_for_leaf_vk_commit,
        };
        let mut agrees = prover.get_vk_commit(false) == *expected;
        if self_recursive {
            agrees &= prover.get_vk_commit(true) == baseline.internal_recursive_vk_commit;
        }
        if !agrees {
            return Err(BackendError::KeyStore {
                path: keys.dir.display().to_string(),
                reason: format!(
                    "the GPU's commitment to the {layer:?} layer's child key differs from the \
                     CPU's: its proofs would not verify"
                ),
            });
        }
        Ok(cell.get_or_init(|| Arc::new(prover)))
    }
}

#[derive(Clone, Copy, Debug)]
enum Layer {
    Leaf,
    InternalForLeaf,
    InternalRecursive,
}

impl Layer {
    /// The layer's key file, its children's verifying key, and whether it verifies itself.
    fn key(
        self,
        vks: &LayerVks,
    ) -> (
        &'static str,
        &openvm_stark_backend::keygen::types::MultiStarkVerifyingKey<SC>,
        bool,
    ) {
        match self {
            Layer::Leaf => (super::keys::LEAF_PK, &vks.app, false),
            Layer::InternalForLeaf => (super::keys::INTERNAL_FOR_LEAF_PK, &vks.leaf, false),
            Layer::InternalRecursive => (
                super::keys::INTERNAL_RECURSIVE_PK,
                &vks.internal_for_leaf,
                true,
            ),
        }
    }
}

impl LayerProvers for GpuLayers {
    fn prove_layer(
        &self,
        layer: AggLayer,
        proofs: &[Proof<SC>],
    ) -> Result<eyre::Result<Proof<SC>>, BackendError> {
        prove_layer_with!(self, GpuEngine, layer, proofs)
    }
}

/// Runs `work`, sampling the device memory in use (OpenVM's pool included) every 20 ms: the
/// peak is what the task needed of the GPU.
fn measure_device_peak<T>(work: impl FnOnce() -> T) -> (T, u64) {
    let done = AtomicBool::new(false);
    let peak = AtomicUsize::new(0);
    let result = std::thread::scope(|scope| {
        scope.spawn(|| loop {
            peak.fetch_max(device_memory_used(), Ordering::Relaxed);
            if done.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        result
    });
    (result, peak.into_inner() as u64)
}

fn device_memory_used() -> usize {
    let (mut free, mut total) = (0usize, 0usize);
    if unsafe { cudaMemGetInfo(&mut free, &mut total) } != 0 {
        return 0;
    }
    total.saturating_sub(free)
}
