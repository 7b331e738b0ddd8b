//! A fake Lustre HSM coordinator for the copytool tests: it stands in for liblustreapi
//! (begin/progress/end, fid2path, the restore descriptor) over a local directory, while the
//! engine and the store are real. Action lists are built as bytes from the documented
//! structs and parsed like the ones the kernel sends.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use hsm::copytool::hal::{self, Action, ActionItem, ActionList, Fid};
use hsm::copytool::{Coordinator, Dispatcher};

pub struct FakeAction {
    pub cookie: u64,
    pub target: Option<(PathBuf, std::fs::File)>,
}

#[derive(Default)]
pub struct Log {
    pub progress: Vec<(u64, u64, u64, u64)>,
    pub ends: Vec<(u64, i32, u64)>,
    pub restored: HashMap<u64, PathBuf>,
}

pub struct Fake {
    pub mnt: PathBuf,
    pub scratch: PathBuf,
    /// FID → path below `mnt`; a test may rename files (and update this) between actions.
    pub fids: Mutex<HashMap<Fid, PathBuf>>,
    pub log: Mutex<Log>,
    /// When set, every data-version read differs (as Lustre's does when a client writes).
    pub drifting_version: Option<std::sync::atomic::AtomicU64>,
}

impl Coordinator for Fake {
    type Action = FakeAction;

    fn begin(&self, item: &ActionItem, _base: usize) -> std::io::Result<FakeAction> {
        let target = if item.action == Action::Restore {
            let p = self.scratch.join(format!("volatile-{}", item.cookie));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)?;
            Some((p, f))
        } else {
            None
        };
        Ok(FakeAction {
            cookie: item.cookie,
            target,
        })
    }

    fn progress(&self, a: &FakeAction, offset: u64, length: u64, total: u64) {
        self.log
            .lock()
            .expect("lock")
            .progress
            .push((a.cookie, offset, length, total));
    }

    fn restore_fd(&self, a: &FakeAction) -> std::io::Result<RawFd> {
        a.target
            .as_ref()
            .map(|(_, f)| f.as_raw_fd())
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))
    }

    fn end(&self, a: FakeAction, _offset: u64, length: u64, errval: i32) -> std::io::Result<()> {
        let mut log = self.log.lock().expect("lock");
        log.ends.push((a.cookie, errval, length));
        if let Some((p, _)) = a.target {
            log.restored.insert(a.cookie, p);
        }
        Ok(())
    }

    fn path_of(&self, fid: &Fid) -> std::io::Result<PathBuf> {
        self.fids
            .lock()
            .expect("lock")
            .get(fid)
            .cloned()
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))
    }

    fn data_path(&self, fid: &Fid) -> PathBuf {
        self.mnt.join(self.path_of(fid).unwrap_or_default())
    }

    fn data_version(&self, file: &std::fs::File) -> std::io::Result<String> {
        match &self.drifting_version {
            Some(n) => Ok(format!(
                "fake:{}",
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            )),
            None => hsm::posix::DataVersion::of_file(file).map(|v| v.token()),
        }
    }
}

pub fn fid(n: u32) -> Fid {
    Fid {
        seq: 0x200000401,
        oid: n,
        ver: 0,
    }
}

pub fn list(items: Vec<(Action, Fid, u64)>) -> Vec<u8> {
    hal::build(&ActionList {
        version: hal::HAL_VERSION,
        compound_id: 0,
        flags: 0,
        archive_id: 1,
        fsname: "testfs".into(),
        items: items
            .into_iter()
            .map(|(action, f, cookie)| ActionItem {
                action,
                fid: f,
                dfid: f,
                offset: 0,
                length: u64::MAX,
                cookie,
                gid: 0,
                data: Vec::new(),
                at: 0,
            })
            .collect(),
    })
}

pub async fn run_list<C: Coordinator>(d: &mut Dispatcher<C>, bytes: &[u8]) {
    let l = hal::parse(bytes).expect("parse");
    d.dispatch(&l, bytes.as_ptr() as usize);
    tokio::time::timeout(Duration::from_secs(60), d.drain())
        .await
        .expect("actions end");
}
