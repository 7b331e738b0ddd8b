//! The `lustre` backend against the [`FakeRunner`]: HSM state, flags, release and data version (`lfs hsm_*`, `lfs data_version`). Every operation asserts the
//! exact argv sequence, and replays outputs copied from `shared/lustre-formats/` (each
//! fixture names its file and sample).

mod lustre_common;

use std::path::Path;
use std::sync::Arc;

use backend::BackendError;
use backend::Hsm;
use backend::lustre::FakeRunner;
use lustre_model::HsmFlags;

use lustre_common::fake::*;

#[tokio::test]
async fn hsm_state_parses_the_manual_sample() {
    // lfs-hsm.md (c): manual, `lfs hsm_state /mnt/lustre/foo`.
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "hsm_state", "/mnt/lustre/foo"],
        "/mnt/lustre/foo: (0x00000009) exists archived, archive_id:5\n",
        "",
        0,
    ));
    let state = backend_at(&fake, "/mnt/lustre")
        .hsm_state(Path::new("/mnt/lustre/foo"))
        .await
        .unwrap();
    assert!(state.flags.exists && state.flags.archived && !state.flags.released);
    assert_eq!(state.archive_id, Some(5));
    fake.assert_done();
}

#[tokio::test]
async fn data_version_runs_lfs_data_version_read() {
    // lfs-hsm.md (a): `lfs data_version {--nosync|--read|--write} FILE` prints "%ju\n".
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["lfs", "data_version", "--read", "/mnt/lustre/foo"],
                "12884901890\n",
                "",
                0,
            )
            .expect(
                ["lfs", "data_version", "--read", "/mnt/lustre/gone"],
                "",
                "lfs data_version: /mnt/lustre/gone: No such file or directory\n",
                2,
            ),
    );
    let b = backend_at(&fake, "/mnt/lustre");
    let version = b.data_version(Path::new("/mnt/lustre/foo")).await.unwrap();
    assert_eq!(
        version,
        backend::DataVersion::Lustre {
            version: 12_884_901_890
        }
    );
    assert_eq!(version.token(), "lustre:12884901890");
    let gone = b.data_version(Path::new("/mnt/lustre/gone")).await;
    assert!(
        matches!(gone, Err(BackendError::NotFound { .. })),
        "{gone:?}"
    );
    assert!(b.data_version(Path::new("/elsewhere/foo")).await.is_err());
    fake.assert_done();
}

#[tokio::test]
async fn hsm_mark_sets_then_clears_and_release() {
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                [
                    "lfs",
                    "hsm_set",
                    "--exists",
                    "--archived",
                    "--archive-id",
                    "3",
                    "/mnt/testfs/t/f",
                ],
                "",
                "",
                0,
            )
            .expect(
                ["lfs", "hsm_clear", "--dirty", "/mnt/testfs/t/f"],
                "",
                "",
                0,
            )
            .expect(["lfs", "hsm_release", "/mnt/testfs/t/f"], "", "", 0)
            .expect(
                ["lfs", "hsm_set", "--norelease", "/mnt/testfs/t/f"],
                "",
                "",
                0,
            ),
    );
    let b = backend(&fake);
    let file = Path::new("/mnt/testfs/t/f");
    let set = HsmFlags {
        exists: true,
        archived: true,
        ..HsmFlags::default()
    };
    let clear = HsmFlags {
        dirty: true,
        ..HsmFlags::default()
    };
    b.hsm_mark(file, set, clear, Some(3)).await.unwrap();
    b.hsm_release(file).await.unwrap();
    let set = HsmFlags {
        no_release: true,
        ..HsmFlags::default()
    };
    b.hsm_mark(file, set, HsmFlags::default(), None)
        .await
        .unwrap();
    fake.assert_done();
}

#[tokio::test]
async fn hsm_errors() {
    // lfs-hsm.md (a): `lfs hsm_set: change hsm flags for 'F' failed: <strerror>`.
    let stderr =
        "lfs hsm_set: change hsm flags for '/mnt/testfs/f' failed: Operation not permitted\n";
    let fake = Arc::new(
        FakeRunner::new()
            .expect(["lfs", "hsm_set", "--archived", "/mnt/testfs/f"], "", stderr, 1)
            .expect(
                ["lfs", "hsm_state", "/mnt/testfs/none"],
                "",
                "lfs hsm_state: get HSM state for '/mnt/testfs/none' failed: No such file or directory\n",
                2,
            ),
    );
    let b = backend(&fake);
    let set = HsmFlags {
        archived: true,
        ..HsmFlags::default()
    };
    let err = b
        .hsm_mark(Path::new("/mnt/testfs/f"), set, HsmFlags::default(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.ends_with("Operation not permitted")),
        "{err}"
    );
    let err = b
        .hsm_state(Path::new("/mnt/testfs/none"))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::NotFound { .. }), "{err}");
    // Outside the mount, or "released" as a flag to set: refused before anything runs.
    assert!(b.hsm_release(Path::new("/etc/passwd")).await.is_err());
    assert!(
        b.hsm_release(Path::new("/mnt/testfs/../etc/passwd"))
            .await
            .is_err()
    );
    let released = HsmFlags {
        released: true,
        ..HsmFlags::default()
    };
    assert!(matches!(
        b.hsm_mark(
            Path::new("/mnt/testfs/f"),
            released,
            HsmFlags::default(),
            None
        )
        .await,
        Err(BackendError::Unsupported { .. })
    ));
    fake.assert_done();
}
