//! The command line of `lustrekit hsm ...`: its options and subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use lustre_model::ByteSize;

/// `lustrekit hsm ...`.
#[derive(Debug, Args)]
pub struct HsmArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: HsmCommand,
}

/// Options every `hsm` command takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The archive store: `file:///dir`, `s3://bucket/prefix?endpoint=...`,
    /// `az://container/prefix?use_emulator=true`, `gs://bucket/prefix`.
    #[arg(long, env = "LUSTREKIT_HSM_STORE", global = true)]
    pub store: Option<String>,
    /// The filesystem root object keys are relative to (default: the current directory).
    #[arg(long, env = "LUSTREKIT_HSM_ROOT", global = true)]
    pub root: Option<PathBuf>,
    /// The HSM archive ID recorded on files.
    #[arg(long, default_value_t = 1, global = true)]
    pub archive_id: u32,
    /// Files worked on at once.
    #[arg(long, short = 'j', default_value_t = 8, global = true)]
    pub concurrency: usize,
    /// Parts in flight per file (multipart uploads and ranged GETs).
    #[arg(long, default_value_t = 4, global = true)]
    pub part_concurrency: usize,
    /// Multipart part and ranged-GET size (e.g. `8MiB`; S3 needs at least 5 MiB).
    #[arg(long, default_value = "8MiB", value_parser = parse_size, global = true)]
    pub part_size: u64,
    /// Cap on bytes per second per file copy (e.g. `100MiB`).
    #[arg(long, value_parser = parse_size, global = true)]
    pub bandwidth: Option<u64>,
    /// Stop starting new work once more than this many paths failed.
    #[arg(long, global = true)]
    pub max_errors: Option<usize>,
    /// No progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Which filesystem the files are on: `local` (a directory, `--root`) or `config` (the
    /// backend of the lustrekit configuration file, e.g. a real Lustre through `lfs hsm_*`;
    /// `--root` is then its client mount point).
    #[arg(long = "backend", value_enum, default_value_t = BackendSource::Local, global = true)]
    pub backend_source: BackendSource,
    /// The backend opened by the caller when `--backend config` (the binary fills it in).
    #[arg(skip)]
    pub backend: InjectedBackend,
}

/// What import and export do with entries that already exist: [`hsm::ConflictMode`] on the
/// command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Conflict {
    Fail,
    Skip,
    OverwriteIfDirty,
    /// Replace unless the entry there has the same kind, size and modification time.
    OverwriteIfChanged,
    OverwriteAlways,
}

impl From<Conflict> for hsm::ConflictMode {
    fn from(c: Conflict) -> Self {
        match c {
            Conflict::Fail => Self::Fail,
            Conflict::Skip => Self::Skip,
            Conflict::OverwriteIfDirty => Self::OverwriteIfDirty,
            Conflict::OverwriteIfChanged => Self::OverwriteIfChanged,
            Conflict::OverwriteAlways => Self::OverwriteAlways,
        }
    }
}

/// Where the backend of `hsm` commands comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendSource {
    Local,
    Config,
}

/// A backend opened by the caller, handed to the CLI.
#[derive(Clone, Default)]
pub struct InjectedBackend(pub Option<Arc<dyn backend::Filesystem>>);

impl std::fmt::Debug for InjectedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(fs) => write!(f, "InjectedBackend({})", fs.kind_name()),
            None => f.write_str("InjectedBackend(none)"),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum HsmCommand {
    /// Copy files to the archive and mark them archived.
    Archive(PathArgs),
    /// Free the data of archived, unchanged files (keeping size and metadata). On `local`
    /// it refuses unless a restore daemon watches the filesystem (see `--unguarded`).
    Release(ReleaseArgs),
    /// Bring released files' data back from the archive.
    Restore(PathArgs),
    /// Delete the archived copies.
    Remove(PathArgs),
    /// Mark files dirty (changed since they were archived).
    Dirty(PathArgs),
    /// Print the HSM state, as `lfs hsm_state` does.
    State(PathArgs),
    /// Import a container or prefix into a directory as released stubs.
    Import(ImportArgs),
    /// Archive what is new or changed under a directory since the last export.
    Export(ExportArgs),
    /// Run the policy engine.
    Policy(PolicyArgs),
    /// Restore released files when they are read (fanotify pre-content, `local` backend).
    RestoreDaemon(DaemonArgs),
    /// Serve the Lustre HSM coordinator as a copytool (needs liblustreapi at run time).
    Copytool(CopytoolArgs),
    /// Delete archived versions that no file pins any more and that were set aside longer
    /// ago than the grace period; reports the bytes freed.
    Gc(GcArgs),
}

/// `hsm gc`.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Report what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep versions set aside more recently than this (e.g. `24h`, `30m`, `0s`).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,
}

#[derive(Debug, Clone, Args)]
pub struct PathArgs {
    /// Files (or, with -r, directories).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Work on whole trees.
    #[arg(short = 'r', long)]
    pub recursive: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The directory the stubs go into (made if missing).
    #[arg(default_value = ".")]
    pub target: PathBuf,
    /// Only objects under this prefix (below the store's own prefix).
    #[arg(long)]
    pub prefix: Option<String>,
    /// What to do with entries that already exist.
    #[arg(long, value_enum, default_value_t = Conflict::Fail)]
    pub conflict: Conflict,
    /// Owner of the stubs (default: the target directory's owner). With --preserve-owner,
    /// only of objects whose metadata names none.
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group of the stubs (default: the target directory's group), as --uid.
    #[arg(long)]
    pub gid: Option<u32>,
    /// Take owner and group from object metadata. Without it every entry belongs to the
    /// target directory's owner (or --uid/--gid): an object cannot make a root-owned file.
    #[arg(long)]
    pub preserve_owner: bool,
    /// Keep setuid/setgid bits (and a file's sticky bit) from object metadata. Without it
    /// they are dropped and counted: an object cannot make a setuid program.
    #[arg(long)]
    pub preserve_setid: bool,
    /// Also apply xattrs recorded in objects with this name or namespace (repeatable, e.g.
    /// `security.selinux`, `trusted.`). Without it only `user.*` is applied; the others are
    /// dropped and counted. Our own `trusted.lustrekit.*`/`user.lustrekit.*` never are.
    #[arg(long = "xattr-allow", value_name = "NAME_OR_PREFIX")]
    pub xattr_allow: Vec<String>,
    /// Copy each file's data (ordinary files, checked against the recorded checksum)
    /// instead of making released stubs: a plain copy, with no HSM state.
    #[arg(long)]
    pub with_data: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The directory to export (default: the root).
    pub dir: Option<PathBuf>,
    /// What to do with objects that exist for files we never archived.
    #[arg(long, value_enum, default_value_t = Conflict::Fail)]
    pub conflict: Conflict,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// One pass: archive and release what the rules select (or, dry, list it).
    Run(PolicyRunArgs),
    /// Passes on change events (fanotify on `local`) and on an interval, until stopped.
    Watch(PolicyWatchArgs),
}

/// What `--unguarded` says in the help of `release` and `policy`.
const UNGUARDED_HELP: &str = "Release even when no restore daemon watches the filesystem \
(`local`). RISK: until a daemon watches, a read of a released file returns zeros (its size \
in NUL bytes, with success), not its data. Lustre needs no daemon (its kernel holds reads).";

#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub paths: PathArgs,
    #[arg(long, help = UNGUARDED_HELP)]
    pub unguarded: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PolicyRunArgs {
    /// The policy file (TOML).
    pub config: PathBuf,
    /// List what would be done; change nothing (overrides the file's `dry_run`).
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, help = UNGUARDED_HELP)]
    pub unguarded: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PolicyWatchArgs {
    #[command(flatten)]
    pub run: PolicyRunArgs,
    /// Serve Prometheus metrics at this address (`GET /metrics`).
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
}

/// `restore-daemon`: its watch lock goes to `$LUSTREKIT_RUN_DIR` (default `/run/lustrekit`),
/// where `release` looks for it. To restart without a window, start the new daemon, wait
/// until it says it watches, then stop the old one.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Restores at once.
    #[arg(long, default_value_t = 4)]
    pub restores: usize,
    /// Reads held at once, each an open descriptor (0: derived from the descriptor limit);
    /// more wait in the kernel.
    #[arg(long, default_value_t = 0)]
    pub max_held_events: usize,
    /// How long one restore may take before its reads fail with EIO (e.g. `10m`, `90s`).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub restore_timeout: Duration,
    /// On stop, how long restores in flight may finish (e.g. `30s`).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub stop_grace: Duration,
    /// Fail a read of a released file at once with EAGAIN while it is restored in the
    /// background, instead of making the read wait.
    #[arg(long)]
    pub fail_fast: bool,
    /// Threads reading fanotify events.
    #[arg(long, default_value_t = 4)]
    pub readers: usize,
    /// Serve Prometheus metrics at this address (`GET /metrics`).
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, Clone, Args)]
pub struct CopytoolArgs {
    /// The Lustre client mount point.
    #[arg(long)]
    pub mnt: PathBuf,
    /// Archive IDs served (none: all).
    #[arg(long = "archive")]
    pub archives: Vec<u32>,
    /// The liblustreapi shared object to load.
    #[arg(long, default_value = "liblustreapi.so.1")]
    pub lib: String,
    /// Serve Prometheus metrics at this address (`GET /metrics`).
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
}

/// `8MiB`, `16k`, `2G`, `1000` → bytes, read as every size a user types
/// ([`ByteSize`]: `G` and `GiB` are 2^30, `GB` is 10^9).
fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<ByteSize>()
        .map(ByteSize::bytes)
        .map_err(|e| e.to_string())
}

/// `90s`, `10m`, `1h`, `600` (seconds) → a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: not a duration (e.g. 90s, 10m, 1h)"))?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        other => return Err(format!("`{s}`: unknown unit `{other}` (s, m, h)")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{s}`: too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Top {
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Debug, Subcommand)]
    enum Cmd {
        Hsm(HsmArgs),
    }

    #[test]
    fn command_line_parses() {
        let t = Top::try_parse_from([
            "lk",
            "hsm",
            "archive",
            "-r",
            "a",
            "b",
            "--store",
            "file:///x",
            "-j",
            "3",
            "--json",
        ])
        .expect("parse");
        assert!(t.json);
        let Cmd::Hsm(h) = t.cmd;
        assert_eq!(h.common.store.as_deref(), Some("file:///x"));
        assert_eq!(h.common.concurrency, 3);
        match h.command {
            HsmCommand::Archive(p) => {
                assert!(p.recursive);
                assert_eq!(p.paths.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        let t = Top::try_parse_from([
            "lk",
            "hsm",
            "import",
            "dir",
            "--conflict",
            "overwrite-if-dirty",
            "--max-errors",
            "5",
        ])
        .expect("parse");
        let Cmd::Hsm(h) = t.cmd;
        assert_eq!(h.common.max_errors, Some(5));
        match h.command {
            HsmCommand::Import(i) => assert_eq!(i.conflict, Conflict::OverwriteIfDirty),
            other => panic!("{other:?}"),
        }
        let t = Top::try_parse_from([
            "lk",
            "hsm",
            "policy",
            "watch",
            "p.toml",
            "--metrics-addr",
            "127.0.0.1:9100",
        ])
        .expect("parse");
        let Cmd::Hsm(h) = t.cmd;
        assert!(matches!(
            h.command,
            HsmCommand::Policy(PolicyArgs {
                command: PolicyCommand::Watch(_)
            })
        ));
        assert!(Top::try_parse_from(["lk", "hsm", "archive"]).is_err());
    }

    #[test]
    fn sizes_read_as_every_size_a_user_types() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["lk", "hsm", "state", "x"];
            argv.extend_from_slice(args);
            let Cmd::Hsm(h) = Top::try_parse_from(argv).expect("parse").cmd;
            (h.common.part_size, h.common.bandwidth)
        };
        assert_eq!(parse(&[]), (8 << 20, None));
        assert_eq!(
            parse(&["--part-size", "16MiB", "--bandwidth", "1.5G"]),
            (16 << 20, Some(3 << 29))
        );
        assert_eq!(parse(&["--part-size", "8MB"]), (8_000_000, None));
        assert!(
            Top::try_parse_from(["lk", "hsm", "state", "x", "--part-size", "8 parsecs"]).is_err()
        );
    }

    #[test]
    fn the_command_line_has_the_safety_flags() {
        let Cmd::Hsm(h) = Top::try_parse_from([
            "lk",
            "hsm",
            "import",
            "dir",
            "--preserve-owner",
            "--preserve-setid",
            "--xattr-allow",
            "security.selinux",
            "--xattr-allow",
            "trusted.",
            "--uid",
            "7",
        ])
        .expect("parse")
        .cmd;
        match h.command {
            HsmCommand::Import(i) => {
                assert!(i.preserve_owner && i.preserve_setid);
                assert_eq!(i.xattr_allow, vec!["security.selinux", "trusted."]);
                assert_eq!((i.uid, i.gid), (Some(7), None));
            }
            _ => panic!("not import"),
        }
        let Cmd::Hsm(h) = Top::try_parse_from(["lk", "hsm", "import", "dir"])
            .expect("parse")
            .cmd;
        match h.command {
            HsmCommand::Import(i) => {
                assert!(!i.preserve_owner && !i.preserve_setid && i.xattr_allow.is_empty());
                assert_eq!((i.uid, i.gid), (None, None));
            }
            _ => panic!("not import"),
        }
    }
}
