//! Shared set-up: a namespace on the local backend and the real stores the environment
//! offers (the local directory store always; Azurite and S3 when their env vars are set).
#![allow(dead_code)]

pub mod coordinator;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend::local::LocalBackend;
use hsm::{ArchiveStore, EngineConfig, HsmEngine, RetryPolicy};

pub struct Env {
    pub _tmp: tempfile::TempDir,
    pub ns: PathBuf,
    pub engine: HsmEngine,
    pub spec: String,
}

fn unique() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("t{}-{n}", std::process::id())
}

/// Store specs to run against: (label, spec). Each gets its own fresh prefix.
pub fn store_specs(local_dir: &Path) -> Vec<(String, String)> {
    let mut v = vec![(
        "local".to_string(),
        format!("file://{}", local_dir.display()),
    )];
    if std::env::var("LUSTREKIT_TEST_AZURITE").is_ok_and(|v| v == "1") {
        let c = std::env::var("LUSTREKIT_TEST_AZURE_CONTAINER")
            .unwrap_or_else(|_| "lustrekit-test".into());
        v.push((
            "azurite".into(),
            format!("az://{c}/{}?use_emulator=true", unique()),
        ));
    } else {
        eprintln!("skipping Azurite: set LUSTREKIT_TEST_AZURITE=1 (scripts/start-azurite.sh)");
    }
    match std::env::var("LUSTREKIT_TEST_S3_ENDPOINT") {
        Ok(ep) => {
            let b = std::env::var("LUSTREKIT_TEST_S3_BUCKET")
                .unwrap_or_else(|_| "lustrekit-test".into());
            let ak = std::env::var("LUSTREKIT_TEST_S3_ACCESS_KEY").unwrap_or_default();
            let sk = std::env::var("LUSTREKIT_TEST_S3_SECRET_KEY").unwrap_or_default();
            let region =
                std::env::var("LUSTREKIT_TEST_S3_REGION").unwrap_or_else(|_| "garage".into());
            v.push((
                "s3".into(),
                format!(
                    "s3://{b}/{}?endpoint={ep}&access_key_id={ak}&secret_access_key={sk}&region={region}&virtual_hosted_style_request=false",
                    unique()
                ),
            ));
        }
        Err(_) => eprintln!(
            "skipping S3: set LUSTREKIT_TEST_S3_ENDPOINT and _ACCESS_KEY/_SECRET_KEY (scripts/start-s3.sh)"
        ),
    }
    v
}

pub async fn env_with(spec: &str, tmp: tempfile::TempDir, cfg: EngineConfig) -> Env {
    let ns = tmp.path().join("ns");
    std::fs::create_dir_all(&ns).expect("mkdir ns");
    let backend = LocalBackend::open(&ns).await.expect("local backend");
    let mut cfg = cfg;
    cfg.root = ns.clone();
    let store = ArchiveStore::open(spec, &cfg.retry).expect("store");
    // As the binary does: a lease break must not end the test process.
    hsm::engine::ignore_lease_break_signal();
    Env {
        _tmp: tmp,
        ns,
        engine: HsmEngine::new(store, Arc::new(backend), cfg),
        spec: spec.to_string(),
    }
}

/// All the stores, each with a fresh namespace.
pub async fn envs(cfg: EngineConfig) -> Vec<(String, Env)> {
    let mut out = Vec::new();
    let probe = tempfile::tempdir().expect("tmp");
    for (label, spec) in store_specs(&probe.path().join("store")) {
        let tmp = tempfile::tempdir().expect("tmp");
        let spec = if label == "local" {
            format!("file://{}", tmp.path().join("store").display())
        } else {
            spec
        };
        out.push((label, env_with(&spec, tmp, cfg.clone()).await));
    }
    out
}

pub fn small_cfg() -> EngineConfig {
    EngineConfig {
        part_size: 5 << 20,
        concurrency: 3,
        retry: RetryPolicy {
            max_retries: 2,
            initial_backoff: std::time::Duration::from_millis(50),
            max_backoff: std::time::Duration::from_millis(200),
            timeout: std::time::Duration::from_secs(30),
            connect_timeout: std::time::Duration::from_secs(2),
        },
        // These tests release with no restore daemon (tests/restore_daemon.rs covers the guard).
        allow_unguarded_release: true,
        ..EngineConfig::default()
    }
}

/// Deterministic pseudo-random content.
pub fn content(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::write(path, data).expect("write");
}

pub fn blocks(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("md").blocks()
}
