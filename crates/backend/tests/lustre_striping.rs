//! The `lustre` backend's default layouts against the [`FakeRunner`]: `lfs setstripe` with
//! the exact arguments, then `lfs getstripe -d` read back (outputs from
//! `shared/lustre-formats/lfs-setstripe-getstripe.md`); a layout that did not take is an
//! error, and the `local` backend says it has no stripes.

mod lustre_common;

use std::sync::Arc;

use backend::lustre::FakeRunner;
use backend::{BackendError, Filesystem, Namespace};
use lustre_model::LayoutSpec;

use lustre_common::fake::*;

/// (b) "Directory default layout (one line)".
const DIR_DEFAULT_4M_4: &str =
    "stripe_count:  4 stripe_size:   4194304 pattern:       raid0 stripe_offset: -1\n";

/// (b) "Default layout of a directory with PFL": `N/A` ids, one-line striping per component.
const DIR_DEFAULT_PFL: &str = "  lcm_layout_gen:    0
  lcm_mirror_count:  1
  lcm_entry_count:   2
    lcme_id:             N/A
    lcme_mirror_id:      N/A
    lcme_flags:          0
    lcme_extent.e_start: 0
    lcme_extent.e_end:   4194304
      stripe_count:  1       stripe_size:   1048576       pattern:       raid0       stripe_offset: -1

    lcme_id:             N/A
    lcme_mirror_id:      N/A
    lcme_flags:          0
    lcme_extent.e_start: 4194304
    lcme_extent.e_end:   EOF
      stripe_count:  -1       stripe_size:   4194304       pattern:       raid0       stripe_offset: -1
";

fn plain(count: &str, size: &str) -> LayoutSpec {
    LayoutSpec::from_parts(Some(count), Some(size), None, None)
        .expect("valid")
        .expect("asked")
}

#[tokio::test]
async fn a_plain_layout_is_set_and_read_back() {
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                [
                    "lfs",
                    "setstripe",
                    "-c",
                    "4",
                    "-S",
                    "4194304",
                    "/mnt/testfs/t/a",
                ],
                "",
                "",
                0,
            )
            .expect(
                ["lfs", "getstripe", "-d", "/mnt/testfs/t/a"],
                DIR_DEFAULT_4M_4,
                "",
                0,
            ),
    );
    let b = backend(&fake);
    assert!(b.capabilities().striping);
    b.set_default_layout(&rel("t/a"), &plain("4", "4M"))
        .await
        .expect("set");
    fake.assert_done();
}

#[tokio::test]
async fn a_pfl_layout_is_set_with_components_and_read_back() {
    let layout =
        lustre_model::striping::parse_components("4M:count=1,size=1M;EOF:count=-1,size=4M")
            .expect("valid");
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                [
                    "lfs",
                    "setstripe",
                    "-E",
                    "4194304",
                    "-c",
                    "1",
                    "-S",
                    "1048576",
                    "-E",
                    "-1",
                    "-c",
                    "-1",
                    "-S",
                    "4194304",
                    "/mnt/testfs/t/a",
                ],
                "",
                "",
                0,
            )
            .expect(
                ["lfs", "getstripe", "-d", "/mnt/testfs/t/a"],
                DIR_DEFAULT_PFL,
                "",
                0,
            ),
    );
    backend(&fake)
        .set_default_layout(&rel("t/a"), &layout)
        .await
        .expect("set");
    fake.assert_done();
}

#[tokio::test]
async fn a_layout_that_did_not_take_is_an_error() {
    // Asked for 8 stripes; the filesystem kept 4 (fewer OSTs than asked, for instance).
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                [
                    "lfs",
                    "setstripe",
                    "-c",
                    "8",
                    "-S",
                    "4194304",
                    "/mnt/testfs/t/a",
                ],
                "",
                "",
                0,
            )
            .expect(
                ["lfs", "getstripe", "-d", "/mnt/testfs/t/a"],
                DIR_DEFAULT_4M_4,
                "",
                0,
            ),
    );
    let err = backend(&fake)
        .set_default_layout(&rel("t/a"), &plain("8", "4M"))
        .await
        .expect_err("not applied");
    assert!(
        matches!(&err, BackendError::InvalidState(m) if m.contains("not applied")),
        "{err}"
    );
    fake.assert_done();
}

#[tokio::test]
async fn setstripe_failing_is_an_error_naming_the_command() {
    let fake = Arc::new(FakeRunner::new().expect(
        [
            "lfs",
            "setstripe",
            "-c",
            "4",
            "-S",
            "4194304",
            "/mnt/testfs/t/a",
        ],
        "",
        "lfs setstripe: setstripe error for '/mnt/testfs/t/a': Invalid argument\n",
        22,
    ));
    let err = backend(&fake)
        .set_default_layout(&rel("t/a"), &plain("4", "4M"))
        .await
        .expect_err("failed");
    assert!(err.to_string().contains("setstripe"), "{err}");
    fake.assert_done();
}

#[tokio::test]
async fn the_local_backend_has_no_stripes() {
    let dir = tempfile::tempdir().expect("tmp");
    let local = backend::local::LocalBackend::open(dir.path())
        .await
        .expect("local backend");
    assert!(!local.capabilities().striping);
    let err = local
        .set_default_layout(&rel("a"), &plain("4", "4M"))
        .await
        .expect_err("unsupported");
    assert!(
        matches!(
            err,
            BackendError::Unsupported {
                what: "striping",
                ..
            }
        ),
        "{err}"
    );
}
