//! The copytool's action mapping, without Lustre: a fake coordinator stands in for
//! liblustreapi (begin/progress/end, fid2path, the restore descriptor) over a local
//! directory, while the engine and the store are real. Action lists are built as bytes
//! from the documented structs and parsed like the ones the kernel sends.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::coordinator::*;
use common::*;
use hsm::copytool::Dispatcher;
use hsm::copytool::hal::{self, Action};
use hsm::{EngineConfig, HsmEngine};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_restore_remove_and_cancel_map_to_the_engine() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store_dir = tmp.path().join("store");
    let spec = format!("file://{}", store_dir.display());
    let mut cfg = small_cfg();
    cfg.part_size = 1 << 20;
    let env = env_with(&spec, tempfile::tempdir().expect("tmp"), cfg.clone()).await;
    let mnt = env.ns.clone();
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let big = content(5 << 20 | 77, 3);
    write(&mnt.join("proj/big.bin"), &big);
    write(&mnt.join("slow.bin"), &content(8 << 20, 4));
    let fake = Arc::new(Fake {
        mnt: mnt.clone(),
        scratch,
        fids: Mutex::new(HashMap::from([
            (fid(1), PathBuf::from("proj/big.bin")),
            (fid(2), PathBuf::from("slow.bin")),
        ])),
        log: Mutex::new(Log::default()),
        drifting_version: None,
    });
    let engine = Arc::new(env.engine);
    let mut d = Dispatcher::new(fake.clone(), engine.clone());

    // ARCHIVE, plus one for a FID that does not resolve.
    run_list(
        &mut d,
        &list(vec![
            (Action::Archive, fid(1), 11),
            (Action::Archive, fid(9), 12),
        ]),
    )
    .await;
    {
        let log = fake.log.lock().expect("lock");
        assert!(
            log.ends.contains(&(11, 0, big.len() as u64)),
            "{:?}",
            log.ends
        );
        assert!(
            log.ends
                .iter()
                .any(|(c, e, _)| *c == 12 && *e == libc::ENOENT),
            "{:?}",
            log.ends
        );
        let p: Vec<_> = log.progress.iter().filter(|p| p.0 == 11).collect();
        assert!(!p.is_empty(), "no progress reported");
        assert_eq!(p.last().map(|p| p.1 + p.2), Some(big.len() as u64));
    }
    let key = engine.key_of(&mnt.join("proj/big.bin")).expect("key");
    let info = engine
        .store()
        .head(&key)
        .await
        .expect("head")
        .expect("object");
    assert_eq!(info.size, big.len() as u64);
    assert!(info.meta.contains_key("lustrekit_blake3"));
    // The copytool never marks state: the coordinator does.
    let st = engine
        .state(&mnt.join("proj/big.bin"))
        .await
        .expect("state")
        .state;
    assert!(!st.flags.archived);

    // RESTORE into the coordinator's descriptor.
    run_list(&mut d, &list(vec![(Action::Restore, fid(1), 21)])).await;
    {
        let log = fake.log.lock().expect("lock");
        assert!(
            log.ends.contains(&(21, 0, big.len() as u64)),
            "{:?}",
            log.ends
        );
        let p = log.restored.get(&21).expect("restored");
        assert!(
            std::fs::read(p).expect("read") == big,
            "restored bytes differ"
        );
    }

    // A corrupted object: RESTORE ends with EIO.
    let obj = store_dir.join("proj/big.bin");
    let mut bytes = std::fs::read(&obj).expect("obj");
    bytes[10] ^= 1;
    std::fs::write(&obj, &bytes).expect("corrupt");
    run_list(&mut d, &list(vec![(Action::Restore, fid(1), 22)])).await;
    assert!(
        fake.log
            .lock()
            .expect("lock")
            .ends
            .contains(&(22, libc::EIO, 0))
    );

    // REMOVE after the file is gone: found through the FID record.
    std::fs::remove_file(mnt.join("proj/big.bin")).expect("unlink");
    let fake2 = Arc::new(Fake {
        mnt: mnt.clone(),
        scratch: tmp.path().join("scratch"),
        fids: Mutex::new(HashMap::from([(fid(2), PathBuf::from("slow.bin"))])),
        log: Mutex::new(Log::default()),
        drifting_version: None,
    });
    let mut d2 = Dispatcher::new(fake2.clone(), engine.clone());
    run_list(&mut d2, &list(vec![(Action::Remove, fid(1), 31)])).await;
    assert!(fake2.log.lock().expect("lock").ends.contains(&(31, 0, 0)));
    assert!(engine.store().head(&key).await.expect("head").is_none());

    // CANCEL a slow archive (1 MiB/s for 8 MiB): it ends with ECANCELED.
    let slow_cfg = EngineConfig {
        rate_limit_bytes_per_sec: Some(1 << 20),
        ..engine.config().clone()
    };
    let slow = Arc::new(HsmEngine::new(
        engine.store().clone(),
        engine.backend().clone(),
        slow_cfg,
    ));
    let mut d3 = Dispatcher::new(fake2.clone(), slow);
    let l = hal::parse(&list(vec![(Action::Archive, fid(2), 41)])).expect("parse");
    d3.dispatch(&l, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = hal::parse(&list(vec![(Action::Cancel, fid(2), 41)])).expect("parse");
    d3.dispatch(&c, 0);
    tokio::time::timeout(Duration::from_secs(10), d3.drain())
        .await
        .expect("cancelled action ends");
    assert!(
        fake2
            .log
            .lock()
            .expect("lock")
            .ends
            .contains(&(41, libc::ECANCELED, 0)),
        "{:?}",
        fake2.log.lock().expect("lock").ends
    );
}

#[test]
fn copytool_without_liblustreapi_says_so() {
    let Err(e) = hsm::copytool::LustreApi::load("liblustreapi-not-here.so.1") else {
        panic!("loaded a library that does not exist");
    };
    assert!(e.contains("liblustreapi-not-here.so.1"), "{e}");
}

/// The coordinator's data version decides whether an archive is clean: when it moves during
/// the copy (a client wrote), the action ends with an error and nothing is recorded as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_whose_data_version_moves_fails() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = format!("file://{}", tmp.path().join("store").display());
    let env = env_with(&spec, tempfile::tempdir().expect("tmp"), small_cfg()).await;
    let mnt = env.ns.clone();
    write(&mnt.join("busy.bin"), &content(64 << 10, 5));
    let fake = Arc::new(Fake {
        mnt: mnt.clone(),
        scratch: tmp.path().to_path_buf(),
        fids: Mutex::new(HashMap::from([(fid(7), PathBuf::from("busy.bin"))])),
        log: Mutex::new(Log::default()),
        drifting_version: Some(std::sync::atomic::AtomicU64::new(0)),
    });
    let engine = Arc::new(env.engine);
    let mut d = Dispatcher::new(fake.clone(), engine.clone());
    run_list(&mut d, &list(vec![(Action::Archive, fid(7), 70)])).await;
    let log = fake.log.lock().expect("lock");
    assert!(
        log.ends.iter().any(|(c, e, _)| *c == 70 && *e != 0),
        "{:?}",
        log.ends
    );
}
