//! `lustrekit demo`: the whole share lifecycle on the embedded local backend, shown step by
//! step, ending with a report. As root with btrfs-progs it runs on a fresh btrfs image on a
//! loop device, so the quota is the kernel's; otherwise on a plain directory, and it says
//! that quotas are then only accounted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use backend::local::LocalBackend;
use backend::{DirSpec, Filesystem};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lustre_model::{FsName, LNet, Nid, ProjectId, ProjectRange, RelPath, ShareName};
use share::{AccessLevel, CreateShare, DeleteMode, ShareError, ShareService, ShareSettings};

use crate::output::human_bytes;

#[derive(Args)]
pub struct DemoArgs {
    /// Work in this directory instead of a fresh btrfs image (or temporary directory).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Never make a btrfs image, even as root.
    #[arg(long)]
    no_btrfs: bool,
}

const MIB: u64 = 1 << 20;

/// A btrfs image mounted on a loop device, unmounted and removed on drop.
struct Scratch {
    dir: PathBuf,
    mount: Option<PathBuf>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(mount) = &self.mount {
            let _ = Command::new("umount").arg(mount).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run_cmd(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn scratch(no_btrfs: bool) -> anyhow::Result<(Scratch, PathBuf, String)> {
    let dir = std::env::temp_dir().join(format!("lustrekit-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut scratch = Scratch {
        dir: dir.clone(),
        mount: None,
    };
    let root_user = nix::unistd::geteuid().is_root();
    let have_mkfs = Command::new("mkfs.btrfs").arg("--version").output().is_ok();
    if !no_btrfs && root_user && have_mkfs {
        let image = dir.join("demo.img");
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount)?;
        std::fs::File::create(&image)?.set_len(512 * MIB)?;
        let image_s = image.to_string_lossy().to_string();
        let mount_s = mount.to_string_lossy().to_string();
        run_cmd("mkfs.btrfs", &["-q", &image_s])?;
        run_cmd("mount", &["-o", "loop", &image_s, &mount_s])?;
        scratch.mount = Some(mount.clone());
        return Ok((
            scratch,
            mount,
            "a fresh 512 MiB btrfs image on a loop device (kernel-enforced qgroups)".into(),
        ));
    }
    let why = if no_btrfs {
        "--no-btrfs"
    } else if !root_user {
        "not root"
    } else {
        "mkfs.btrfs not installed"
    };
    let root = dir.join("root");
    Ok((
        scratch,
        root,
        format!("a plain directory ({why}): quotas are accounted, not enforced"),
    ))
}

/// Writes `bytes` into `file` in 1 MiB chunks; returns how much was written before an error.
fn fill(file: &Path, bytes: u64) -> (u64, Option<std::io::Error>) {
    let mut out = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
    {
        Ok(f) => f,
        Err(e) => return (0, Some(e)),
    };
    let chunk = vec![0x5au8; MIB as usize];
    let mut written = 0;
    while written < bytes {
        if let Err(e) = out.write_all(&chunk).and_then(|()| out.sync_data()) {
            return (written, Some(e));
        }
        written += MIB;
    }
    (written, None)
}

struct Step {
    what: String,
    outcome: String,
    took: Duration,
}

struct Demo {
    service: ShareService,
    fs: Arc<dyn Filesystem>,
    steps: Vec<Step>,
    bar: ProgressBar,
}

impl Demo {
    async fn step<F>(&mut self, what: &str, f: F) -> anyhow::Result<()>
    where
        F: AsyncFnOnce(&ShareService, &dyn Filesystem) -> anyhow::Result<String>,
    {
        self.bar.set_message(what.to_string());
        let started = Instant::now();
        let outcome = f(&self.service, self.fs.as_ref()).await?;
        let took = started.elapsed();
        self.bar.inc(1);
        self.bar.println(format!("  ✓ {what}: {outcome}"));
        self.steps.push(Step {
            what: what.to_string(),
            outcome,
            took,
        });
        Ok(())
    }
}

fn n(text: &str) -> anyhow::Result<ShareName> {
    Ok(ShareName::new(text)?)
}

fn share_file(fs: &dyn Filesystem, share: &ShareName, file: &str) -> anyhow::Result<PathBuf> {
    let dir = RelPath::parse("shares")?.join(share);
    Ok(fs.host_path(&dir).join(file))
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (_scratch, root, where_) = match &args.root {
        Some(root) => (
            Scratch {
                dir: std::env::temp_dir().join("lustrekit-demo-unused"),
                mount: None,
            },
            root.clone(),
            format!("{} (given with --root)", root.display()),
        ),
        None => scratch(args.no_btrfs)?,
    };
    println!("lustrekit demo on {where_}");
    let fs: Arc<dyn Filesystem> = Arc::new(LocalBackend::open(&root).await?);
    let enforced = fs.capabilities().quota == backend::QuotaEnforcement::Enforced;
    let settings = ShareSettings {
        tenants: Vec::new(),
        fsname: FsName::new("demo")?,
        prefix: RelPath::parse("shares")?,
        project_ids: ProjectRange::new(ProjectId::new(10_000)?, ProjectId::new(10_999)?)?,
        export_nids: vec!["192.168.10.1@tcp".parse::<Nid>()?],
        nid_net: "tcp".parse::<LNet>()?,
        trash_ttl_secs: 3600,
        root_squash: true,
        activate_nodemaps: true,
        dir: DirSpec::default(),
    };
    let service = ShareService::open(Arc::clone(&fs), settings).await?;
    let bar = ProgressBar::new(13);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let demo_fs = Arc::clone(&fs);
    let mut demo = Demo {
        service,
        fs: Arc::clone(&fs),
        steps: Vec::new(),
        bar,
    };
    let (alpha, beta, gamma) = (n("alpha")?, n("beta")?, n("gamma")?);

    demo.step("create three shares", async |s, _| {
        let mut out = Vec::new();
        for (name, size) in [(&alpha, 10 * MIB), (&beta, 20 * MIB), (&gamma, 10 * MIB)] {
            let share = s
                .create(CreateShare {
                    name: name.clone(),
                    size_bytes: size,
                    inode_limit: Some(10_000),
                    labels: Default::default(),
                    layout: None,
                    compression: None,
                })
                .await?;
            out.push(format!(
                "{} {} (project {})",
                share.name,
                human_bytes(size),
                share.project_id.get()
            ));
        }
        Ok(out.join(", "))
    })
    .await?;

    demo.step("create alpha again (idempotent)", async |s, _| {
        let again = s
            .create(CreateShare {
                name: alpha.clone(),
                size_bytes: 10 * MIB,
                inode_limit: Some(10_000),
                labels: Default::default(),
                layout: None,
                compression: None,
            })
            .await?;
        let conflict = s
            .create(CreateShare {
                name: alpha.clone(),
                size_bytes: 99 * MIB,
                inode_limit: None,
                labels: Default::default(),
                layout: None,
                compression: None,
            })
            .await;
        Ok(format!(
            "same share back (project {}); a different size is refused: {}",
            again.project_id.get(),
            match conflict {
                Err(ShareError::Conflict { .. }) => "yes",
                _ => "NO",
            }
        ))
    })
    .await?;

    demo.step("write 4 MiB into alpha", async |s, fs| {
        let (written, err) = fill(&share_file(fs, &alpha, "data.bin")?, 4 * MIB);
        if let Some(e) = err {
            bail!("writing alpha: {e}")
        }
        let usage = s.usage_now(&alpha).await?;
        Ok(format!(
            "wrote {}, quota reports {} used of {}",
            human_bytes(written),
            human_bytes(usage.used_bytes),
            human_bytes(usage.limit_bytes)
        ))
    })
    .await?;

    demo.step("write 16 MiB into gamma (10 MiB quota)", async |s, fs| {
        let file = share_file(fs, &gamma, "big.bin")?;
        let (written, err) = tokio::task::spawn_blocking(move || fill(&file, 16 * MIB)).await?;
        let usage = s.usage(&gamma).await?;
        Ok(match err {
            Some(e) if e.raw_os_error() == Some(nix::libc::EDQUOT) => format!(
                "stopped by the kernel at {} with EDQUOT (quota hit)",
                human_bytes(written)
            ),
            Some(e) => bail!("unexpected error writing gamma: {e}"),
            None if enforced => bail!("16 MiB fit in a 10 MiB quota: quota not enforced"),
            None => format!(
                "wrote {} (limit accounted only: exceeded = {})",
                human_bytes(written),
                usage.bytes_exceeded
            ),
        })
    })
    .await?;

    demo.step(
        "shrink gamma to 1 MiB (refused while full)",
        async |s, _| match s.shrink(&gamma, MIB).await {
            Err(ShareError::ShrinkBelowUsage { used_bytes, .. }) => {
                let size = s.get(&gamma).await?.size_bytes;
                Ok(format!(
                    "refused: it uses {}; size still {}",
                    human_bytes(used_bytes),
                    human_bytes(size)
                ))
            }
            Err(e) => Err(e.into()),
            Ok(_) => bail!("shrink below usage was accepted"),
        },
    )
    .await?;

    demo.step(
        "extend gamma to 30 MiB and write 8 MiB more",
        async |s, fs| {
            s.extend(&gamma, 30 * MIB).await?;
            let (written, err) = fill(&share_file(fs, &gamma, "more.bin")?, 8 * MIB);
            if let Some(e) = err {
                bail!("writing after extend: {e}")
            }
            let usage = s.usage_now(&gamma).await?;
            Ok(format!(
                "wrote {} more; {} used of {}",
                human_bytes(written),
                human_bytes(usage.used_bytes),
                human_bytes(usage.limit_bytes)
            ))
        },
    )
    .await?;

    demo.step("grant access to alpha", async |s, fs| {
        s.allow(&alpha, "10.0.0.0/24", AccessLevel::Rw).await?;
        let share = s.allow(&alpha, "10.0.1.5", AccessLevel::Ro).await?;
        let maps = fs.nodemaps().await?;
        let names: Vec<String> = maps
            .nodemaps
            .iter()
            .filter(|m| m.name != "default")
            .map(|m| {
                format!(
                    "{} fileset={} ranges={}",
                    m.name,
                    m.fileset.clone().unwrap_or_default(),
                    m.ranges.len()
                )
            })
            .collect();
        Ok(format!(
            "{} rules; nodemaps: {}",
            share.access.len(),
            names.join("; ")
        ))
    })
    .await?;

    demo.step("a conflicting grant is refused", async |s, _| {
        match s.allow(&beta, "10.0.0.7", AccessLevel::Rw).await {
            Err(ShareError::AccessConflict { nodemap, .. }) => {
                Ok(format!("10.0.0.7 is already in nodemap {nodemap}"))
            }
            Err(e) => Err(e.into()),
            Ok(_) => bail!("overlapping grant accepted"),
        }
    })
    .await?;

    demo.step("revoke read-only access", async |s, _| {
        let share = s.deny(&alpha, "10.0.1.5").await?;
        s.deny(&alpha, "10.9.9.9").await?;
        Ok(format!(
            "{} rule left; denying a rule never granted is fine",
            share.access.len()
        ))
    })
    .await?;

    demo.step("trash beta, then restore it", async |s, fs| {
        fill(&share_file(fs, &beta, "keep.txt")?, MIB);
        s.delete(&beta, DeleteMode::Trash { ttl_secs: None }).await?;
        let trashed = s.trash_list().await?.len();
        let gone = s.find(&beta).await?.is_none();
        let back = s.restore(&beta).await?;
        let kept = share_file(fs, &beta, "keep.txt")?.exists();
        Ok(format!("trash held {trashed}, share gone: {gone}; restored with project {} and its data: {kept}", back.project_id.get()))
    }).await?;

    let store_dir = root.join(".demo-archive");
    demo.step("tier gamma to object storage and back", async |s, fs| {
        std::fs::create_dir_all(&store_dir)?;
        let store = hsm::ArchiveStore::open(
            &format!("file://{}", store_dir.display()),
            &hsm::RetryPolicy::default(),
        )?;
        // The demo runs no restore daemon, so on `local` it releases unguarded (a read of the
        // stub before the restore below would return zeros) and says so.
        let config = hsm::EngineConfig {
            root: fs.host_path(&RelPath::parse("shares")?),
            allow_unguarded_release: true,
            ..hsm::EngineConfig::default()
        };
        hsm::engine::ignore_lease_break_signal();
        let engine = hsm::HsmEngine::new(store, Arc::clone(&demo_fs), config);
        let file = share_file(fs, &gamma, "more.bin")?;
        let before = s.usage_now(&gamma).await?.used_bytes;
        engine.archive(&file).await?;
        engine.release(&file).await?;
        let released = s.usage_now(&gamma).await?.used_bytes;
        let state = engine.state(&file).await?;
        let state = if state.unguarded {
            format!("{}; released with --unguarded: no restore daemon runs in the demo", state.text)
        } else {
            state.text
        };
        engine.restore(&file).await?;
        let after = s.usage_now(&gamma).await?.used_bytes;
        let intact = std::fs::read(&file)?.iter().all(|b| *b == 0x5a);
        Ok(format!(
            "archived and released more.bin ({state}): quota use {} -> {}; restored: {} (data intact: {intact})",
            human_bytes(before),
            human_bytes(released),
            human_bytes(after)
        ))
    }).await?;

    demo.step("ensure repairs a lost quota", async |s, fs| {
        let share = s.get(&alpha).await?;
        fs.set_quota(
            &share.path,
            share.project_id,
            &lustre_model::QuotaLimits::default(),
        )
        .await?;
        let report = s.ensure().await?;
        Ok(format!(
            "checked {}, repaired: {}",
            report.checked,
            report
                .repaired
                .iter()
                .map(|r| format!("{} ({})", r.share, r.what))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
    .await?;

    demo.step("delete every share", async |s, _| {
        for name in [&alpha, &beta, &gamma] {
            s.delete(name, DeleteMode::Purge).await?;
        }
        s.delete(&alpha, DeleteMode::Purge).await?;
        let left = s.list().await?.len();
        let maps = s.backend().nodemaps().await?.nodemaps.len();
        Ok(format!(
            "{left} shares left, {maps} nodemap(s) left (default); deleting again is fine"
        ))
    })
    .await?;
    demo.bar.finish_and_clear();

    println!("\nReport ({where_})");
    println!("{:<46} {:>8}  outcome", "step", "time");
    for step in &demo.steps {
        println!(
            "{:<46} {:>6}ms  {}",
            step.what,
            step.took.as_millis(),
            step.outcome
        );
    }
    println!(
        "quotas: {}",
        if enforced {
            "enforced by the kernel (btrfs qgroups)"
        } else {
            "accounted only"
        }
    );
    Ok(())
}
