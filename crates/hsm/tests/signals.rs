//! The library leaves the process's signal dispositions alone: building an engine does not
//! change SIGIO; [`hsm::engine::ignore_lease_break_signal`], called by the binary, does.
//! (Its own test binary: the other tests ignore SIGIO as the binary does.)

use std::sync::Arc;

use backend::local::LocalBackend;
use hsm::{ArchiveStore, EngineConfig, HsmEngine};

/// SIGIO's current handler (`SIG_DFL`, `SIG_IGN` or a function).
fn sigio_handler() -> libc::sighandler_t {
    // SAFETY: a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGIO, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

#[tokio::test]
async fn building_an_engine_leaves_sigio_alone() {
    assert_eq!(sigio_handler(), libc::SIG_DFL, "the harness changed SIGIO");
    let tmp = tempfile::tempdir().expect("tmp");
    let backend = LocalBackend::open(tmp.path().join("ns"))
        .await
        .expect("backend");
    let cfg = EngineConfig {
        root: backend.root().to_path_buf(),
        ..EngineConfig::default()
    };
    let spec = format!("file://{}", tmp.path().join("store").display());
    let store = ArchiveStore::open(&spec, &cfg.retry).expect("store");
    let _engine = HsmEngine::new(store, Arc::new(backend), cfg);
    assert_eq!(sigio_handler(), libc::SIG_DFL, "the engine changed SIGIO");
    hsm::engine::ignore_lease_break_signal();
    assert_eq!(sigio_handler(), libc::SIG_IGN);
}
