//! The `lustre` backend against the [`FakeRunner`]: the directory commands (`mkdir`, `stat`, `rm`, `mv`, claims and state files). Every operation asserts the
//! exact argv sequence, and replays outputs copied from `shared/lustre-formats/` (each
//! fixture names its file and sample).

mod lustre_common;

use std::sync::Arc;

use backend::Namespace;
use backend::lustre::FakeRunner;
use backend::{BackendError, DirSpec};

use lustre_common::fake::*;

#[tokio::test]
async fn ensure_dir_is_mkdir_p() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["mkdir", "-p", "--", "/mnt/testfs/t/.trash"],
        "",
        "",
        0,
    ));
    backend(&fake).ensure_dir(&rel("t/.trash")).await.unwrap();
    fake.assert_done();
}

#[tokio::test]
async fn create_share_dir_makes_owns_and_sets_mode() {
    let fake = Arc::new(
        FakeRunner::new()
            .expect(["mkdir", "-m", "0700", "--", "/mnt/testfs/t/a"], "", "", 0)
            .expect(["chown", "--", "1000:2000", "/mnt/testfs/t/a"], "", "", 0)
            .expect(["chmod", "--", "2770", "/mnt/testfs/t/a"], "", "", 0),
    );
    let spec = DirSpec {
        mode: 0o2770,
        uid: 1000,
        gid: 2000,
    };
    assert!(
        backend(&fake)
            .create_share_dir(&rel("t/a"), &spec)
            .await
            .unwrap()
    );
    fake.assert_done();
}

#[tokio::test]
async fn create_share_dir_that_exists_is_false() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["mkdir", "-m", "0700", "--", "/mnt/testfs/t/a"],
        "",
        "mkdir: cannot create directory '/mnt/testfs/t/a': File exists\n",
        1,
    ));
    assert!(
        !backend(&fake)
            .create_share_dir(&rel("t/a"), &DirSpec::default())
            .await
            .unwrap()
    );
    fake.assert_done();
}

#[tokio::test]
async fn create_share_dir_without_parent_is_not_found() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["mkdir", "-m", "0700", "--", "/mnt/testfs/t/a"],
        "",
        "mkdir: cannot create directory '/mnt/testfs/t/a': No such file or directory\n",
        1,
    ));
    let err = backend(&fake)
        .create_share_dir(&rel("t/a"), &DirSpec::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::NotFound { ref path } if path == "t"),
        "{err}"
    );
    fake.assert_done();
}

#[tokio::test]
async fn remove_share_dir_removes_within_one_filesystem() {
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["stat", "-c", "%f %u %g %Y %F", "--", "/mnt/testfs/t/a"],
                DIR_STAT,
                "",
                0,
            )
            .expect(
                ["rm", "-rf", "--one-file-system", "--", "/mnt/testfs/t/a"],
                "",
                "",
                0,
            )
            .expect(
                ["stat", "-c", "%f %u %g %Y %F", "--", "/mnt/testfs/t/a"],
                "",
                ENOENT_STAT,
                1,
            ),
    );
    let b = backend(&fake);
    assert!(b.remove_share_dir(&rel("t/a")).await.unwrap());
    assert!(!b.remove_share_dir(&rel("t/a")).await.unwrap());
    fake.assert_done();
}

#[tokio::test]
async fn remove_share_dir_refuses_a_symlink() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["stat", "-c", "%f %u %g %Y %F", "--", "/mnt/testfs/t/a"],
        "a1ff 0 0 1700000000 symbolic link\n",
        "",
        0,
    ));
    let err = backend(&fake)
        .remove_share_dir(&rel("t/a"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::InvalidState(ref m) if m.contains("symbolic link")),
        "{err}"
    );
    fake.assert_done();
}

#[tokio::test]
async fn rename_checks_then_moves_without_clobbering() {
    let stat = |p: &'static str| ["stat", "-c", "%f %u %g %Y %F", "--", p];
    let fake = Arc::new(
        FakeRunner::new()
            .expect(stat("/mnt/testfs/t/.trash/a"), "", ENOENT_STAT, 1)
            .expect(stat("/mnt/testfs/t/a"), DIR_STAT, "", 0)
            .expect(
                [
                    "mv",
                    "-T",
                    "--no-clobber",
                    "--",
                    "/mnt/testfs/t/a",
                    "/mnt/testfs/t/.trash/a",
                ],
                "",
                "",
                0,
            )
            .expect(stat("/mnt/testfs/t/a"), "", ENOENT_STAT, 1)
            // Second rename: the destination exists.
            .expect(stat("/mnt/testfs/t/.trash/a"), DIR_STAT, "", 0),
    );
    let b = backend(&fake);
    b.rename(&rel("t/a"), &rel("t/.trash/a")).await.unwrap();
    let err = b.rename(&rel("t/a"), &rel("t/.trash/a")).await.unwrap_err();
    assert!(
        matches!(err, BackendError::AlreadyExists { ref path } if path == "t/.trash/a"),
        "{err}"
    );
    fake.assert_done();
}

#[tokio::test]
async fn rename_that_lost_a_race_is_already_exists() {
    let stat = |p: &'static str| ["stat", "-c", "%f %u %g %Y %F", "--", p];
    let fake = Arc::new(
        FakeRunner::new()
            .expect(stat("/mnt/testfs/b"), "", ENOENT_STAT, 1)
            .expect(stat("/mnt/testfs/a"), DIR_STAT, "", 0)
            .expect(
                [
                    "mv",
                    "-T",
                    "--no-clobber",
                    "--",
                    "/mnt/testfs/a",
                    "/mnt/testfs/b",
                ],
                "",
                "",
                0,
            )
            // --no-clobber skipped silently: the source is still there.
            .expect(stat("/mnt/testfs/a"), DIR_STAT, "", 0),
    );
    let err = backend(&fake)
        .rename(&rel("a"), &rel("b"))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::AlreadyExists { .. }), "{err}");
    fake.assert_done();
}

#[tokio::test]
async fn stat_dir_reads_mode_owner_and_project() {
    // lfs-project.md (c): NREL Eagle docs, `lfs project -d /projects/csc000`.
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["stat", "-c", "%f %u %g %Y %F", "--", "/projects/csc000"],
                DIR_STAT,
                "",
                0,
            )
            .expect(
                ["lfs", "project", "-d", "/projects/csc000"],
                "110255 P /projects/csc000\n",
                "",
                0,
            )
            .expect(
                ["stat", "-c", "%f %u %g %Y %F", "--", "/projects/gone"],
                "",
                ENOENT_STAT,
                1,
            ),
    );
    let b = backend_at(&fake, "/projects");
    let info = b.stat_dir(&rel("csc000")).await.unwrap().unwrap();
    assert_eq!(info.mode, 0o770);
    assert_eq!((info.uid, info.gid), (1000, 2000));
    assert_eq!(info.modified, 1_700_000_000);
    assert_eq!(info.project, Some(pid(110255)));
    assert_eq!(b.stat_dir(&rel("gone")).await.unwrap(), None);
    fake.assert_done();
}

#[tokio::test]
async fn list_dir_is_sorted_and_absent_is_empty() {
    let find = |p: &'static str| [p, "-mindepth", "1", "-maxdepth", "1", "-printf", "%f\\0"];
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                std::iter::once("find").chain(find("/mnt/testfs/t")),
                "b\0a b\0.lustrekit\0",
                "",
                0,
            )
            .expect(
                std::iter::once("find").chain(find("/mnt/testfs/none")),
                "",
                "find: '/mnt/testfs/none': No such file or directory\n",
                1,
            ),
    );
    let b = backend(&fake);
    assert_eq!(
        b.list_dir(&rel("t")).await.unwrap(),
        vec![".lustrekit", "a b", "b"]
    );
    assert!(b.list_dir(&rel("none")).await.unwrap().is_empty());
    fake.assert_done();
}

#[tokio::test]
async fn claim_is_one_mkdir() {
    let argv = [
        "mkdir",
        "-m",
        "0700",
        "--",
        "/mnt/testfs/.lustrekit/ids/1000",
    ];
    let fake = Arc::new(
        FakeRunner::new()
            .expect(argv, "", "", 0)
            .expect(argv, "", "mkdir: cannot create directory '/mnt/testfs/.lustrekit/ids/1000': File exists\n", 1)
            .expect(["rmdir", "--", "/mnt/testfs/.lustrekit/ids/1000"], "", "", 0)
            .expect(
                ["rmdir", "--", "/mnt/testfs/.lustrekit/ids/1000"],
                "",
                "rmdir: failed to remove '/mnt/testfs/.lustrekit/ids/1000': No such file or directory\n",
                1,
            ),
    );
    let b = backend(&fake);
    let marker = rel(".lustrekit/ids/1000");
    assert!(b.claim(&marker).await.unwrap());
    assert!(!b.claim(&marker).await.unwrap());
    b.unclaim(&marker).await.unwrap();
    b.unclaim(&marker).await.unwrap();
    fake.assert_done();
}

#[tokio::test]
async fn state_files_read_write_remove() {
    let fake = Arc::new(
        FakeRunner::new()
            .expect(["cat", "--", "/mnt/testfs/.lustrekit/state.json"], b"{\"a\":1}\xff", "", 0)
            .expect(
                ["cat", "--", "/mnt/testfs/.lustrekit/none"],
                "",
                "cat: /mnt/testfs/.lustrekit/none: No such file or directory\n",
                1,
            )
            .expect_stdin(
                [
                    "sh",
                    "-c",
                    r#"tmp="$1.tmp.$$"; { cat > "$tmp" && sync -- "$tmp" && mv -f -- "$tmp" "$1"; } || { rc=$?; rm -f -- "$tmp"; exit $rc; }"#,
                    "sh",
                    "/mnt/testfs/.lustrekit/state.json",
                ],
                b"{\"a\":2}",
                "",
                "",
                0,
            )
            .expect(["rm", "-f", "--", "/mnt/testfs/.lustrekit/state.json"], "", "", 0),
    );
    let b = backend(&fake);
    let file = rel(".lustrekit/state.json");
    assert_eq!(b.read_file(&file).await.unwrap().unwrap(), b"{\"a\":1}\xff");
    assert_eq!(b.read_file(&rel(".lustrekit/none")).await.unwrap(), None);
    b.write_file(&file, b"{\"a\":2}").await.unwrap();
    b.remove_file(&file).await.unwrap();
    fake.assert_done();
}
