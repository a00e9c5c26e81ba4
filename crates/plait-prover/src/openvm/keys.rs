//! Proving and verifying keys for one set of parameters, generated once and cached on disk.
//!
//! Keys depend only on the parameters (OpenVM version, VM config, segment height, aggregation
//! parameters), never on the program, so one key set serves every guest of that VM config. Each layer's key is
//! its own file, so a worker loads only the keys of the tasks it actually runs.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Instant,
};

use openvm_continuations::prover::InnerCpuProver;
use openvm_sdk::{
    config::{
        AggregationSystemParams, AppConfig, MAX_NUM_CHILDREN_INTERNAL, MAX_NUM_CHILDREN_LEAF,
    },
    keygen::{AggPrefixProvingKey, AggProvingKey, AppProvingKey},
    CpuSdk, SC,
};
use openvm_sdk_config::SdkVmConfig;
use openvm_stark_backend::keygen::types::{MultiStarkProvingKey, MultiStarkVerifyingKey};
use openvm_stark_sdk::config::{
    app_params_with_100_bits_security, baby_bear_poseidon2::BabyBearPoseidon2CpuEngine,
    MAX_APP_LOG_STACKED_HEIGHT,
};
use openvm_verify_stark_host::vk::{VerificationBaseline, VmStarkVerifyingKey};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{BackendError, VmConfig};

/// The smallest segment height OpenVM's segmentation accepts (its trace height must hold at
/// least two segment checks).
pub const MIN_SEGMENT_HEIGHT: u32 = 16;

const APP_PK: &str = "app.pk";
pub(crate) const LEAF_PK: &str = "leaf.pk";
pub(crate) const INTERNAL_FOR_LEAF_PK: &str = "internal-for-leaf.pk";
pub(crate) const INTERNAL_RECURSIVE_PK: &str = "internal-recursive.pk";
const LAYER_VKS: &str = "layer-vks.bin";
const VERIFIER: &str = "verifier-template.vk";
const META: &str = "meta.json";

pub(crate) type Engine = BabyBearPoseidon2CpuEngine;
pub(crate) type LeafProver = InnerCpuProver<MAX_NUM_CHILDREN_LEAF>;
pub(crate) type InternalProver = InnerCpuProver<MAX_NUM_CHILDREN_INTERNAL>;

/// The verifying keys of every layer, small enough to load anywhere.
#[derive(Serialize, Deserialize)]
pub(crate) struct LayerVks {
    pub app: MultiStarkVerifyingKey<SC>,
    pub leaf: MultiStarkVerifyingKey<SC>,
    pub internal_for_leaf: MultiStarkVerifyingKey<SC>,
    pub internal_recursive: MultiStarkVerifyingKey<SC>,
}

/// What keygen recorded about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyMeta {
    /// The key cache's format version.
    pub format_version: u32,
    /// The OpenVM version that generated the keys.
    pub openvm_version: String,
    /// Key sets written before VM configs existed are RV32IM's.
    #[serde(default)]
    pub vm_config: VmConfig,
    /// The segment height the keys are for.
    pub segment_height: u32,
    /// Seconds the app key took to generate.
    pub app_keygen_seconds: f64,
    /// Seconds the aggregation keys took to generate.
    pub agg_keygen_seconds: f64,
    /// File name and size in bytes of every key file.
    pub files: Vec<(String, u64)>,
}

/// The cache directory of one key set, with each key loaded on first use.
pub(crate) struct KeySet {
    pub dir: PathBuf,
    pub vm: VmConfig,
    pub segment_height: u32,
    app_pk: OnceLock<AppProvingKey<SdkVmConfig>>,
    vks: OnceLock<Arc<LayerVks>>,
    leaf: OnceLock<Arc<LeafProver>>,
    internal_for_leaf: OnceLock<Arc<InternalProver>>,
    internal_recursive: OnceLock<Arc<InternalProver>>,
    verifier_template: OnceLock<VmStarkVerifyingKey>,
}

/// OpenVM's configuration for `vm`: RV32IM and I/O (OpenVM's `riscv32`), plus SHA-2.
pub(crate) fn sdk_vm_config(vm: VmConfig) -> SdkVmConfig {
    match vm {
        VmConfig::Rv32im => SdkVmConfig::riscv32(),
        VmConfig::Rv32imSha2 => SdkVmConfig::builder()
            .system(Default::default())
            .rv32i(Default::default())
            .rv32m(Default::default())
            .io(Default::default())
            .sha2(Default::default())
            .build()
            .optimize(),
    }
}

/// Returns the cache directory name for keys of this VM config and segment height: a content
/// hash of every input to keygen, so a change in any of them can never load stale keys.
/// (RV32IM's name is the one it had before VM configs existed, so its cached keys stay valid.)
pub(crate) fn key_set_id(vm: VmConfig, segment_height: u32) -> String {
    let (config, prefix) = match vm {
        VmConfig::Rv32im => ("riscv32".to_string(), "openvm-2.0".to_string()),
        VmConfig::Rv32imSha2 => (
            format!("{:?}", sdk_vm_config(vm)),
            format!("openvm-2.0-{}", vm.name()),
        ),
    };
    let description = serde_json::json!({
        "format": 1,
        "openvm": "2.0.2",
        "vm-config": config,
        "app-params": format!("{:?}", app_params_with_100_bits_security(segment_height as usize)),
        "agg-params": format!("{:?}", AggregationSystemParams::default()),
    });
    let digest = Sha256::digest(description.to_string().as_bytes());
    format!("{prefix}-h{segment_height}-{}", &hex::encode(digest)[..16])
}

pub(crate) fn validate_segment_height(segment_height: u32) -> Result<(), BackendError> {
    let max = MAX_APP_LOG_STACKED_HEIGHT as u32;
    if !(MIN_SEGMENT_HEIGHT..=max).contains(&segment_height) {
        return Err(BackendError::InvalidParams(format!(
            "segment height {segment_height} is outside OpenVM's range {MIN_SEGMENT_HEIGHT}..={max}"
        )));
    }
    Ok(())
}

impl KeySet {
    pub fn new(cache_root: &Path, vm: VmConfig, segment_height: u32) -> Result<Self, BackendError> {
        validate_segment_height(segment_height)?;
        Ok(Self {
            dir: cache_root.join("keys").join(key_set_id(vm, segment_height)),
            vm,
            segment_height,
            app_pk: OnceLock::new(),
            vks: OnceLock::new(),
            leaf: OnceLock::new(),
            internal_for_leaf: OnceLock::new(),
            internal_recursive: OnceLock::new(),
            verifier_template: OnceLock::new(),
        })
    }

    pub fn exists(&self) -> bool {
        self.dir.join(META).is_file()
    }

    pub fn meta(&self) -> Result<KeyMeta, BackendError> {
        let path = self.dir.join(META);
        let text = fs::read_to_string(&path).map_err(|e| key_error(&path, e))?;
        serde_json::from_str(&text).map_err(|e| key_error(&path, e))
    }

    /// Generates every key and writes the set to disk, unless it is already there. The set is
    /// written to a temporary directory and renamed into place, so a crash never leaves a
    /// half-written set that later runs would trust.
    pub fn ensure_generated(&self) -> Result<KeyMeta, BackendError> {
        if self.exists() {
            return self.meta();
        }
        let parent = self.dir.parent().expect("key dir has a parent");
        fs::create_dir_all(parent).map_err(|e| key_error(parent, e))?;
        let tmp = parent.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.dir.file_name().unwrap().to_string_lossy()
        ));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(|e| key_error(&tmp, e))?;

        tracing::info!(vm = %self.vm, segment_height = self.segment_height, dir = %self.dir.display(), "generating keys");
        // Keys are always made on the CPU, by the same code in every build: a GPU prover loads
        // these same files (and checks that its own commitments to them agree), so one key
        // cache serves both engines. (OpenVM's `Sdk` becomes GPU-only in a `cuda` build.)
        let started = Instant::now();
        let app_params = app_params_with_100_bits_security(self.segment_height as usize);
        let app_config = AppConfig::new(sdk_vm_config(self.vm), app_params);
        let app_pk = AppProvingKey::keygen(app_config).map_err(|e| key_error(&self.dir, e))?;
        let app_keygen_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let agg = AggregationLayers::keygen(&app_pk);
        let agg_keygen_seconds = started.elapsed().as_secs_f64();

        write_bitcode(&tmp.join(APP_PK), &app_pk)?;
        write_bitcode(&tmp.join(LEAF_PK), &*agg.leaf_prover.get_pk())?;
        write_bitcode(
            &tmp.join(INTERNAL_FOR_LEAF_PK),
            &*agg.internal_for_leaf_prover.get_pk(),
        )?;
        write_bitcode(
            &tmp.join(INTERNAL_RECURSIVE_PK),
            &*agg.internal_recursive_prover.get_pk(),
        )?;
        let vks = LayerVks {
            app: app_pk.app_vm_pk.vm_pk.get_vk(),
            leaf: (*agg.leaf_prover.get_vk()).clone(),
            internal_for_leaf: (*agg.internal_for_leaf_prover.get_vk()).clone(),
            internal_recursive: (*agg.internal_recursive_prover.get_vk()).clone(),
        };
        write_bitcode(&tmp.join(LAYER_VKS), &vks)?;
        // The baseline of every program shares these commits; only the exe commit differs.
        let app_vk = app_pk.get_app_vk();
        let template = VmStarkVerifyingKey {
            mvk: vks.internal_recursive.clone(),
            baseline: VerificationBaseline {
                app_exe_commit: Default::default(),
                memory_dimensions: app_vk.memory_dimensions,
                num_user_pvs: app_vk.num_user_pvs,
                app_vk_commit: agg.leaf_prover.get_vk_commit(false),
                leaf_vk_commit: agg.internal_for_leaf_prover.get_vk_commit(false),
                internal_for_leaf_vk_commit: agg.internal_recursive_prover.get_vk_commit(false),
                internal_recursive_vk_commit: agg.internal_recursive_prover.get_vk_commit(true),
                expected_def_hook_commit: None,
            },
        };
        write_bitcode(&tmp.join(VERIFIER), &template)?;

        let mut files = Vec::new();
        for name in [
            APP_PK,
            LEAF_PK,
            INTERNAL_FOR_LEAF_PK,
            INTERNAL_RECURSIVE_PK,
            LAYER_VKS,
            VERIFIER,
        ] {
            let path = tmp.join(name);
            let len = fs::metadata(&path).map_err(|e| key_error(&path, e))?.len();
            files.push((name.to_string(), len));
        }
        let meta = KeyMeta {
            format_version: 1,
            openvm_version: "2.0.2".into(),
            vm_config: self.vm,
            segment_height: self.segment_height,
            app_keygen_seconds,
            agg_keygen_seconds,
            files,
        };
        let meta_path = tmp.join(META);
        fs::write(
            &meta_path,
            serde_json::to_vec_pretty(&meta).expect("meta serializes"),
        )
        .map_err(|e| key_error(&meta_path, e))?;
        match fs::rename(&tmp, &self.dir) {
            Ok(()) => {}
            // Another process finished the same keygen first; its keys are identical.
            Err(_) if self.exists() => {
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => return Err(key_error(&self.dir, e)),
        }
        // Keep what we just built rather than reading it back.
        let _ = self.app_pk.set(app_pk);
        let _ = self.vks.set(Arc::new(vks));
        let _ = self.verifier_template.set(template);
        Ok(meta)
    }

    pub fn app_pk(&self) -> Result<&AppProvingKey<SdkVmConfig>, BackendError> {
        get_or_load(&self.app_pk, || self.read_key(APP_PK))
    }

    pub fn vks(&self) -> Result<&Arc<LayerVks>, BackendError> {
        get_or_load(&self.vks, || self.read_key(LAYER_VKS).map(Arc::new))
    }

    pub fn verifier_template(&self) -> Result<&VmStarkVerifyingKey, BackendError> {
        get_or_load(&self.verifier_template, || self.read_key(VERIFIER))
    }

    pub fn leaf_prover(&self) -> Result<&Arc<LeafProver>, BackendError> {
        self.layer_prover(&self.leaf, LEAF_PK, |vks| &vks.app, false)
    }

    pub fn internal_for_leaf_prover(&self) -> Result<&Arc<InternalProver>, BackendError> {
        self.layer_prover(
            &self.internal_for_leaf,
            INTERNAL_FOR_LEAF_PK,
            |vks| &vks.leaf,
            false,
        )
    }

    pub fn internal_recursive_prover(&self) -> Result<&Arc<InternalProver>, BackendError> {
        self.layer_prover(
            &self.internal_recursive,
            INTERNAL_RECURSIVE_PK,
            |vks| &vks.internal_for_leaf,
            true,
        )
    }

    /// Loads one aggregation layer's prover from its key file and its children's vk.
    fn layer_prover<'a, const N: usize>(
        &'a self,
        cell: &'a OnceLock<Arc<InnerCpuProver<N>>>,
        pk_file: &str,
        child_vk: impl FnOnce(&LayerVks) -> &MultiStarkVerifyingKey<SC>,
        self_recursive: bool,
    ) -> Result<&'a Arc<InnerCpuProver<N>>, BackendError> {
        get_or_load(cell, || {
            let pk: MultiStarkProvingKey<SC> = self.read_key(pk_file)?;
            let child = Arc::new(child_vk(self.vks()?).clone());
            Ok(Arc::new(InnerCpuProver::<N>::from_pk::<Engine>(
                child,
                Arc::new(pk),
                self_recursive,
                None,
            )))
        })
    }

    /// An OpenVM SDK seeded with these keys (for the single-process baseline).
    pub fn sdk(&self) -> Result<CpuSdk, BackendError> {
        let read_pk = |name: &str| -> Result<Arc<MultiStarkProvingKey<SC>>, BackendError> {
            Ok(Arc::new(self.read_key(name)?))
        };
        let agg_pk = AggProvingKey {
            prefix: AggPrefixProvingKey {
                leaf: read_pk(LEAF_PK)?,
                internal_for_leaf: read_pk(INTERNAL_FOR_LEAF_PK)?,
            },
            internal_recursive: read_pk(INTERNAL_RECURSIVE_PK)?,
        };
        CpuSdk::builder()
            .app_pk(self.app_pk()?.clone())
            .agg_pk(agg_pk)
            .build()
            .map_err(|e| key_error(&self.dir, e))
    }

    pub(crate) fn read_key<T: DeserializeOwned>(&self, name: &str) -> Result<T, BackendError> {
        if !self.exists() {
            return Err(BackendError::KeyStore {
                path: self.dir.display().to_string(),
                reason: format!(
                    "no keys for segment height {} (run `plait keygen --segment-height {}`)",
                    self.segment_height, self.segment_height
                ),
            });
        }
        let path = self.dir.join(name);
        let bytes = fs::read(&path).map_err(|e| key_error(&path, e))?;
        bitcode::deserialize(&bytes).map_err(|e| key_error(&path, e))
    }
}

/// The three aggregation layers' provers as keygen makes them, on the CPU: what OpenVM's
/// `AggProver::new` does, without its engine switching to the GPU in a `cuda` build.
struct AggregationLayers {
    leaf_prover: LeafProver,
    internal_for_leaf_prover: InternalProver,
    internal_recursive_prover: InternalProver,
}

impl AggregationLayers {
    fn keygen(app_pk: &AppProvingKey<SdkVmConfig>) -> Self {
        let params = AggregationSystemParams::default();
        let app_vk = Arc::new(app_pk.app_vm_pk.vm_pk.get_vk());
        let leaf_prover = LeafProver::new::<Engine>(app_vk, params.leaf.clone(), false, None);
        let internal_for_leaf_prover = InternalProver::new::<Engine>(
            leaf_prover.get_vk(),
            params.internal.clone(),
            false,
            None,
        );
        let internal_recursive_prover = InternalProver::new::<Engine>(
            internal_for_leaf_prover.get_vk(),
            params.internal,
            true,
            None,
        );
        Self {
            leaf_prover,
            internal_for_leaf_prover,
            internal_recursive_prover,
        }
    }
}

fn get_or_load<T>(
    cell: &OnceLock<T>,
    load: impl FnOnce() -> Result<T, BackendError>,
) -> Result<&T, BackendError> {
    if let Some(value) = cell.get() {
        return Ok(value);
    }
    let value = load()?;
    Ok(cell.get_or_init(|| value))
}

fn write_bitcode<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), BackendError> {
    let bytes = bitcode::serialize(value).map_err(|e| key_error(path, e))?;
    fs::write(path, bytes).map_err(|e| key_error(path, e))
}

fn key_error(path: &Path, e: impl std::fmt::Display) -> BackendError {
    BackendError::KeyStore {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rv32im_keys_keep_their_directory_and_each_config_has_its_own() {
        // The name RV32IM's height-19 keys had before VM configs existed: caches stay valid.
        assert_eq!(
            key_set_id(VmConfig::Rv32im, 19),
            "openvm-2.0-h19-b0ef6338aa1cc7bf"
        );
        let sha2 = key_set_id(VmConfig::Rv32imSha2, 19);
        assert!(sha2.starts_with("openvm-2.0-rv32im-sha2-h19-"), "{sha2}");
        assert_ne!(sha2, key_set_id(VmConfig::Rv32imSha2, 20));
        assert!(sdk_vm_config(VmConfig::Rv32imSha2).sha2.is_some());
        assert!(sdk_vm_config(VmConfig::Rv32im).sha2.is_none());
    }
}
