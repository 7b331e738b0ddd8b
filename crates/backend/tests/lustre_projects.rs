//! The `lustre` backend against the [`FakeRunner`]: project IDs (`lfs project`). Every operation asserts the
//! exact argv sequence, and replays outputs copied from `shared/lustre-formats/` (each
//! fixture names its file and sample).

mod lustre_common;

use std::sync::Arc;

use backend::BackendError;
use backend::Quotas;
use backend::lustre::FakeRunner;

use lustre_common::fake::*;

#[tokio::test]
async fn set_project_uses_the_inherit_flag() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "project", "-p", "110255", "-s", "/projects/csc000"],
        "",
        "",
        0,
    ));
    backend_at(&fake, "/projects")
        .set_project(&rel("csc000"), pid(110255))
        .await
        .unwrap();
    fake.assert_done();
}

#[tokio::test]
async fn set_project_failure_surfaces_lustre_stderr() {
    // lfs-project.md (b): `lfs: failed to set xattr for '<path>': <strerror>`.
    let stderr = "lfs: failed to set xattr for '/mnt/testfs/t/a': Operation not permitted\n";
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "project", "-p", "7", "-s", "/mnt/testfs/t/a"],
        "",
        stderr,
        1,
    ));
    let err = backend(&fake)
        .set_project(&rel("t/a"), pid(7))
        .await
        .unwrap_err();
    match err {
        BackendError::Command {
            command,
            status,
            stderr,
        } => {
            assert_eq!(command, "lfs project -p 7 -s /mnt/testfs/t/a");
            assert_eq!(status, "exit status 1");
            assert_eq!(
                stderr,
                "lfs: failed to set xattr for '/mnt/testfs/t/a': Operation not permitted"
            );
        }
        other => panic!("expected Command, got {other}"),
    }
    fake.assert_done();
}

#[tokio::test]
async fn project_of_reads_the_directory_entry() {
    let fake = Arc::new(
        FakeRunner::new()
            // lfs-project.md (c): the 5-wide format example, `   10 P /mnt/lustre/dir1`.
            .expect(
                ["lfs", "project", "-d", "/mnt/lustre/dir1"],
                "   10 P /mnt/lustre/dir1\n",
                "",
                0,
            )
            // ID 0 is "no project".
            .expect(
                ["lfs", "project", "-d", "/mnt/lustre/dir2"],
                "    0 - /mnt/lustre/dir2\n",
                "",
                0,
            )
            .expect(
                ["lfs", "project", "-d", "/mnt/lustre/dir3"],
                "",
                "lfs: failed to lstat '/mnt/lustre/dir3': No such file or directory\n",
                2,
            ),
    );
    let b = backend_at(&fake, "/mnt/lustre");
    assert_eq!(b.project_of(&rel("dir1")).await.unwrap(), Some(pid(10)));
    assert_eq!(b.project_of(&rel("dir2")).await.unwrap(), None);
    let err = b.project_of(&rel("dir3")).await.unwrap_err();
    assert!(
        matches!(err, BackendError::NotFound { ref path } if path == "dir3"),
        "{err}"
    );
    fake.assert_done();
}

#[tokio::test]
async fn project_output_that_does_not_parse_is_a_typed_parse_error() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "project", "-d", "/mnt/testfs/a"],
        "garbage here\n",
        "",
        0,
    ));
    let err = backend(&fake).project_of(&rel("a")).await.unwrap_err();
    match err {
        BackendError::Parse { command, source } => {
            assert_eq!(command, "lfs project -d /mnt/testfs/a");
            assert_eq!(source.what, "lfs project");
        }
        other => panic!("expected Parse, got {other}"),
    }
    fake.assert_done();
}
