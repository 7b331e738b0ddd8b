//! The import pipeline: entries made many at once (in any order) give exactly the tree that
//! one at a time gives, and what the objects' metadata says; an object whose name or
//! metadata is bad fails that entry alone, named by its key.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use futures::StreamExt;
use hsm::meta::FileMeta;
use hsm::{ConflictMode, EngineConfig, EntryKind, HsmEngine, ImportOptions};

const DIRS: usize = 20;
const FILES: usize = 2400;

fn file_meta(i: usize) -> FileMeta {
    FileMeta {
        kind: EntryKind::File,
        mode: [0o644, 0o600, 0o755, 0o4755][i % 4],
        uid: 1000 + (i % 3) as u32,
        gid: 2000 + (i % 5) as u32,
        mtime_ns: 1_600_000_000_000_000_000 + i as i64 * 1_000_001,
        atime_ns: Some(1_650_000_000_000_000_000 + i as i64),
        size: Some((i % 7 * 1000) as u64),
        xattrs: if i.is_multiple_of(10) {
            vec![("user.note".into(), format!("n{i}").into_bytes())]
        } else {
            Vec::new()
        },
        checksum: Some(format!("blake3:{:064x}", i)),
        ..Default::default()
    }
}

fn dir_meta(d: usize) -> FileMeta {
    FileMeta {
        kind: EntryKind::Dir,
        mode: [0o750, 0o700, 0o1777][d % 3],
        uid: 3000 + d as u32,
        gid: 4000,
        mtime_ns: 1_500_000_000_000_000_000 + d as i64 * 7_000_000_003,
        ..Default::default()
    }
}

/// The objects, as an archive writes them: `src/d<d>` directories (a folder blob or a
/// sidecar) and `src/d<d>/f<i>` files with their metadata.
async fn fill(e: &HsmEngine) {
    for d in 0..DIRS {
        let key = e.store().key_for(&["src", &format!("d{d:02}")]);
        e.store()
            .put_folder(&key, &dir_meta(d).to_map().0)
            .await
            .expect("put dir");
    }
    futures::stream::iter(0..FILES)
        .map(|i| async move {
            let m = file_meta(i);
            let key =
                e.store()
                    .key_for(&["src", &format!("d{:02}", i % DIRS), &format!("f{i:05}")]);
            let data = vec![b'x'; m.size.unwrap_or(0) as usize];
            e.store()
                .put(&key, data.into(), &m.to_map().0)
                .await
                .expect("put");
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// What an imported entry looks like from outside: kind, size, mode, owner, times, user
/// xattrs, pin and HSM state.
#[derive(Debug, PartialEq)]
struct Seen {
    kind: &'static str,
    size: u64,
    mode: u32,
    owner: (u32, u32),
    mtime_ns: i64,
    xattrs: Vec<(String, Vec<u8>)>,
    pin: Option<hsm::pin::Pin>,
    hsm: Option<(bool, bool, bool, bool)>,
}

async fn snapshot(e: &HsmEngine, dir: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("ls").filter_map(|x| x.ok()) {
            let p = entry.path();
            let md = std::fs::symlink_metadata(&p).expect("lstat");
            let kind = if md.is_dir() {
                todo.push(p.clone());
                "dir"
            } else if md.is_file() {
                "file"
            } else {
                "other"
            };
            let (mut xattrs, mut pin, mut hsm) = (Vec::new(), None, None);
            if md.is_file() {
                let f = std::fs::File::open(&p).expect("open");
                let fd = std::os::fd::AsFd::as_fd(&f);
                pin = hsm::pin::read(fd, &p).expect("pin");
                if let Some(v) = backend::local::beneath::get_xattr(fd, "user.note").expect("x") {
                    xattrs.push(("user.note".to_string(), v));
                }
                let st = e.backend().hsm_state(&p).await.expect("state");
                hsm = Some((
                    st.flags.exists,
                    st.flags.archived,
                    st.flags.released,
                    st.flags.dirty,
                ));
            }
            let rel = p.strip_prefix(dir).expect("below").to_path_buf();
            out.insert(
                rel,
                Seen {
                    kind,
                    size: if md.is_file() { md.len() } else { 0 },
                    mode: md.mode() & 0o7777,
                    owner: (md.uid(), md.gid()),
                    mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                    xattrs,
                    pin,
                    hsm,
                },
            );
        }
    }
    out
}

fn opts(target: PathBuf) -> ImportOptions {
    ImportOptions {
        source_prefix: Some("src".into()),
        target,
        conflict: ConflictMode::Skip,
        preserve_owner: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_parallel_import_makes_the_tree_one_at_a_time_makes() {
    let one_at_a_time = EngineConfig {
        file_concurrency: 1,
        ..small_cfg()
    };
    for (label, env) in envs(one_at_a_time.clone()).await {
        let e = &env.engine;
        fill(e).await;
        let seq = env.ns.join("one-at-a-time");
        let rep = e.import(&opts(seq.clone())).await.expect("import");
        assert!(rep.errors.is_empty(), "{label}: {:?}", rep.errors);
        assert_eq!((rep.files, rep.dirs), (FILES, DIRS), "{label}");

        let parallel = HsmEngine::new(
            e.store().clone(),
            e.backend().clone(),
            EngineConfig {
                root: env.ns.clone(),
                file_concurrency: 64,
                ..one_at_a_time.clone()
            },
        );
        let par = env.ns.join("parallel");
        let rep = parallel.import(&opts(par.clone())).await.expect("import");
        assert!(rep.errors.is_empty(), "{label}: {:?}", rep.errors);
        assert_eq!((rep.files, rep.dirs), (FILES, DIRS), "{label}");

        let (a, b) = (snapshot(e, &seq).await, snapshot(e, &par).await);
        assert_eq!(a.len(), FILES + DIRS, "{label}");
        for (rel, seen) in &a {
            assert_eq!(Some(seen), b.get(rel), "{label}: {}", rel.display());
        }
        assert_eq!(a.len(), b.len(), "{label}");

        // And what the objects say (setuid dropped, as by default).
        for d in 0..DIRS {
            let m = dir_meta(d);
            let s = &b[&PathBuf::from(format!("d{d:02}"))];
            assert_eq!(
                (s.kind, s.mode, s.owner, s.mtime_ns),
                ("dir", m.mode, (m.uid, m.gid), m.mtime_ns),
                "{label}: d{d:02}"
            );
        }
        for i in 0..FILES {
            let m = file_meta(i);
            let rel = PathBuf::from(format!("d{:02}/f{i:05}", i % DIRS));
            let s = &b[&rel];
            let pin = s.pin.as_ref().expect("pinned");
            assert_eq!(
                (s.size, s.mode, s.owner, s.mtime_ns),
                (
                    m.size.unwrap_or(0),
                    m.mode & 0o777,
                    (m.uid, m.gid),
                    m.mtime_ns
                ),
                "{label}: {}",
                rel.display()
            );
            assert_eq!(pin.checksum, m.checksum, "{label}: {}", rel.display());
            assert_eq!(pin.size, m.size.unwrap_or(0));
            assert!(pin.key.ends_with(&format!("src/d{:02}/f{i:05}", i % DIRS)));
            assert_eq!(s.hsm, Some((true, true, true, false)), "{label}");
            let note = (i.is_multiple_of(10))
                .then(|| ("user.note".to_string(), format!("n{i}").into_bytes()));
            assert_eq!(s.xattrs, note.into_iter().collect::<Vec<_>>());
        }
        // Resumed over itself: everything is there, nothing is made again.
        let rep = parallel.import(&opts(par.clone())).await.expect("import");
        assert_eq!((rep.files, rep.skipped), (0, FILES + DIRS), "{label}");
        assert_eq!(snapshot(e, &par).await, b, "{label}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_with_bad_metadata_or_name_fails_alone_named_by_its_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store_dir = tmp.path().join("store");
    let spec = format!("file://{}", store_dir.display());
    let env = env_with(&spec, tmp, small_cfg()).await;
    let e = &env.engine;
    for i in 0..200 {
        let key = e.store().key_for(&["src", "d", &format!("f{i:03}")]);
        e.store()
            .put(&key, vec![b'y'; 10].into(), &file_meta(i).to_map().0)
            .await
            .expect("put");
    }
    // A sidecar that is not JSON, and a key whose name decodes to a `/`.
    std::fs::write(
        store_dir.join(".lustrekit-meta/src/d/f017.meta"),
        b"{not json",
    )
    .expect("w");
    use object_store::ObjectStoreExt;
    let hostile = object_store::path::Path::parse("src/d/a%2Fb").expect("key");
    e.store()
        .object_store()
        .put(&hostile, vec![b'z'; 3].into())
        .await
        .expect("put hostile");

    let dst = env.ns.join("dst");
    let o = ImportOptions {
        preserve_owner: false,
        ..opts(dst.clone())
    };
    let rep = e.import(&o).await.expect("import");
    assert_eq!(rep.files, 199, "{:?}", rep.errors);
    assert_eq!(rep.errors.len(), 2, "{:?}", rep.errors);
    let paths: Vec<String> = rep
        .errors
        .iter()
        .map(|p| p.path.to_string_lossy().into_owned())
        .collect();
    // In key order, each naming its key.
    assert_eq!(paths, vec![hostile.to_string(), "src/d/f017".to_string()]);
    assert!(
        rep.errors[1].error.contains("src/d/f017"),
        "{}",
        rep.errors[1].error
    );
    assert!(!dst.join("d/f017").exists());
    assert!(dst.join("d/f016").exists() && dst.join("d/f018").exists());
}

/// A source prefix is a key prefix path segment by path segment: `src` takes nothing of
/// `src2`, not even a directory known only from its sidecar (the local store), which was
/// once matched by its name's first bytes and made at the wrong place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_prefix_takes_no_directory_of_a_longer_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = format!("file://{}", tmp.path().join("store").display());
    let env = env_with(&spec, tmp, small_cfg()).await;
    let e = &env.engine;
    let file = e.store().key_for(&["src", "d", "f"]);
    e.store()
        .put(&file, vec![b'y'; 10].into(), &file_meta(1).to_map().0)
        .await
        .expect("put");
    for dir in [["src", "kept"], ["src2", "other"]] {
        let key = e.store().key_for(&dir);
        e.store()
            .put_folder(&key, &dir_meta(0).to_map().0)
            .await
            .expect("put dir");
    }
    let dst = env.ns.join("dst");
    let o = ImportOptions {
        preserve_owner: false,
        ..opts(dst.clone())
    };
    let rep = e.import(&o).await.expect("import");
    assert!(rep.errors.is_empty(), "{:?}", rep.errors);
    assert!(dst.join("d/f").is_file() && dst.join("kept").is_dir());
    assert!(
        !dst.join("other").exists(),
        "a directory of `src2` made from `src`"
    );
    assert_eq!((rep.files, rep.dirs), (1, 1));
}
