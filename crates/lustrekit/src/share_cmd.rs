//! `lustrekit share ...`: a thin adapter from the command line to the share service.

use std::collections::BTreeMap;
use std::path::Path;

use clap::{Args, Subcommand};
use lustre_model::ShareName;
use share::sizes::parse_size;
use share::{AccessLevel, Config, CreateShare, DeleteMode, Share, ShareService};

use crate::output::{human_bytes, print_json};

#[derive(Args)]
pub struct ShareArgs {
    #[command(subcommand)]
    command: ShareCommand,
}

/// What `<NAME>` says in the help of every share command.
const NAME_HELP: &str =
    "The share's name: one path component (no `/`, not `.` or `..`, at most 255 bytes)";

/// What `--size` says in the help of `create`, `extend` and `shrink`.
const SIZE_HELP: &str = "The size: bytes, or a number with a unit: K, M, G, T (or KiB, MiB, \
GiB, TiB) are powers of 1024, KB, MB, GB, TB powers of 1000 (e.g. `10G`, `512MiB`)";

/// What `--to` says in the help of `access allow` and `access deny`.
const TO_HELP: &str = "The clients: an IP address or a CIDR (e.g. `10.0.0.0/24`)";

#[derive(Subcommand)]
enum ShareCommand {
    /// Create a share of SIZE (e.g. 10G); an existing identical share is returned as is.
    Create {
        #[arg(help = NAME_HELP)]
        name: String,
        #[arg(long, allow_hyphen_values = true, help = SIZE_HELP)]
        size: String,
        /// Optional inode (file count) limit.
        #[arg(long)]
        inodes: Option<u64>,
        /// Labels kept with the share, KEY=VALUE (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Default stripe count of the share's files (-1: every OST). Lustre only.
        #[arg(long, allow_hyphen_values = true)]
        stripe_count: Option<String>,
        /// Default stripe size (a multiple of 64K, like 1M or 4M). Lustre only.
        #[arg(long)]
        stripe_size: Option<String>,
        /// Default OST pool. Lustre only.
        #[arg(long)]
        stripe_pool: Option<String>,
        /// A PFL layout instead: `END:count=N,size=S,pool=P;...;EOF:...`
        /// (e.g. `4M:count=1;EOF:count=-1,size=4M`). Lustre only.
        #[arg(long, conflicts_with_all = ["stripe_count", "stripe_size", "stripe_pool"])]
        stripe_components: Option<String>,
        /// Compress what is written in the share: lz4, gzip or zstd, where the backend
        /// has it (local: btrfs zstd or gzip; Lustre: none released yet).
        #[arg(long)]
        compression: Option<String>,
        /// The compression level (lz4 1-12, gzip 1-9, zstd 1-22).
        #[arg(long, requires = "compression")]
        compression_level: Option<String>,
    },
    /// Delete a share (its quota, nodemaps and tree); with --trash, keep it restorable.
    Delete {
        #[arg(help = NAME_HELP)]
        name: String,
        /// Move it to the trash instead, restorable until its TTL passes.
        #[arg(long)]
        trash: bool,
        /// Hours the trashed share is kept (default from the config).
        #[arg(long, requires = "trash")]
        ttl_hours: Option<u64>,
    },
    /// Grow a share to SIZE.
    Extend {
        #[arg(help = NAME_HELP)]
        name: String,
        #[arg(long, allow_hyphen_values = true, help = SIZE_HELP)]
        size: String,
    },
    /// Shrink a share to SIZE; refused while it uses more.
    Shrink {
        #[arg(help = NAME_HELP)]
        name: String,
        #[arg(long, allow_hyphen_values = true, help = SIZE_HELP)]
        size: String,
    },
    /// List shares.
    List,
    /// Show one share with its usage.
    Show {
        #[arg(help = NAME_HELP)]
        name: String,
    },
    /// Manage access rules (nodemaps).
    Access {
        #[command(subcommand)]
        command: AccessCommand,
    },
    /// Filesystem capacity and how much shares have been given.
    Capacity,
    /// Re-verify every share, repair missing quotas and nodemaps, purge expired trash.
    Ensure,
    /// Adopt an existing share directory that has no lustrekit record (one made by Manila's
    /// own Lustre driver): claim its project ID and take its live quota as the size.
    Adopt {
        /// The share's directory name under the share prefix (for Manila, the share ID); one
        /// path component. The directory must carry a project ID in the configured range that
        /// no other share holds, and a block quota.
        name: String,
    },
    /// Restore the most recently trashed share of NAME.
    Restore {
        #[arg(help = NAME_HELP)]
        name: String,
    },
    /// The trash can.
    Trash {
        #[command(subcommand)]
        command: TrashCommand,
    },
}

#[derive(Subcommand)]
enum AccessCommand {
    /// Grant clients in TO (an IP or CIDR) read-write or read-only access.
    Allow {
        #[arg(help = NAME_HELP)]
        name: String,
        #[arg(long, help = TO_HELP)]
        to: String,
        /// The access: `rw` (read-write) or `ro` (read-only).
        #[arg(long, default_value = "rw")]
        level: String,
    },
    /// Revoke the rule for TO (a rule never granted is not an error).
    Deny {
        #[arg(help = NAME_HELP)]
        name: String,
        #[arg(long, help = TO_HELP)]
        to: String,
    },
    /// List a share's rules.
    List {
        #[arg(help = NAME_HELP)]
        name: String,
    },
}

#[derive(Subcommand)]
enum TrashCommand {
    /// List trashed shares.
    List,
    /// Purge trashed shares whose TTL has passed.
    Purge,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("label {text:?}: expected KEY=VALUE"))
}

fn name(text: &str) -> anyhow::Result<ShareName> {
    ShareName::new(text).map_err(|e| share::ShareError::InvalidArgument(e.to_string()).into())
}

pub async fn open(config: &Path) -> anyhow::Result<ShareService> {
    let config = Config::load(config)?;
    let settings = config.settings()?;
    let fs = config.open_backend().await?;
    Ok(ShareService::open(fs, settings).await?)
}

fn print_share(share: &Share) {
    println!("{}", share.name);
    println!("  path:        {}", share.path.as_str());
    println!("  export:      {}", share.export_location);
    println!("  project id:  {}", share.project_id.get());
    println!(
        "  size:        {} ({} bytes)",
        human_bytes(share.size_bytes),
        share.size_bytes
    );
    if let Some(inodes) = share.inode_limit {
        println!("  inode limit: {inodes}");
    }
    println!("  volume id:   {}", share.volume_id);
    for rule in &share.access {
        println!("  access:      {} {}", rule.to, rule.level.as_str());
    }
}

pub async fn run(config: &Path, json: bool, args: ShareArgs) -> anyhow::Result<()> {
    // Each arm parses what the user typed before opening the service, so bad input changes
    // nothing.
    let service = || open(config);
    match args.command {
        ShareCommand::Create {
            name: n,
            size,
            inodes,
            labels,
            stripe_count,
            stripe_size,
            stripe_pool,
            stripe_components,
            compression,
            compression_level,
        } => {
            let compression = lustre_model::Compression::from_parts(
                compression.as_deref(),
                compression_level.as_deref(),
            )
            .map_err(|e| share::ShareError::InvalidArgument(e.to_string()))?;
            let layout = lustre_model::LayoutSpec::from_parts(
                stripe_count.as_deref(),
                stripe_size.as_deref(),
                stripe_pool.as_deref(),
                stripe_components.as_deref(),
            )
            .map_err(|e| share::ShareError::InvalidArgument(format!("stripe layout: {e}")))?;
            let request = CreateShare {
                name: name(&n)?,
                size_bytes: parse_size(&size)?,
                inode_limit: inodes,
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
                layout,
                compression,
            };
            let share = service().await?.create(request).await?;
            if json {
                print_json(&share)?
            } else {
                print_share(&share)
            }
        }
        ShareCommand::Delete {
            name: n,
            trash,
            ttl_hours,
        } => {
            let n = name(&n)?;
            let mode = if trash {
                DeleteMode::Trash {
                    ttl_secs: ttl_hours.map(|h| h.saturating_mul(3600)),
                }
            } else {
                DeleteMode::Purge
            };
            service().await?.delete(&n, mode).await?;
            if json {
                print_json(&serde_json::json!({ "deleted": n, "trash": trash }))?
            } else if trash {
                println!("{n} moved to the trash");
            } else {
                println!("{n} deleted");
            }
        }
        ShareCommand::Extend { name: n, size } => {
            let (n, size) = (name(&n)?, parse_size(&size)?);
            let share = service().await?.extend(&n, size).await?;
            if json {
                print_json(&share)?
            } else {
                print_share(&share)
            }
        }
        ShareCommand::Shrink { name: n, size } => {
            let (n, size) = (name(&n)?, parse_size(&size)?);
            let share = service().await?.shrink(&n, size).await?;
            if json {
                print_json(&share)?
            } else {
                print_share(&share)
            }
        }
        ShareCommand::List => {
            let shares = service().await?.list().await?;
            if json {
                print_json(&shares)?
            } else {
                println!("{:<32} {:>10} {:>8}  EXPORT", "NAME", "SIZE", "PROJECT");
                for s in &shares {
                    println!(
                        "{:<32} {:>10} {:>8}  {}",
                        s.name,
                        human_bytes(s.size_bytes),
                        s.project_id.get(),
                        s.export_location
                    );
                }
            }
        }
        ShareCommand::Show { name: n } => {
            let n = name(&n)?;
            let service = service().await?;
            let share = service.get(&n).await?;
            let usage = service.usage(&n).await?;
            if json {
                print_json(&serde_json::json!({ "share": share, "usage": usage }))?
            } else {
                print_share(&share);
                println!(
                    "  used:        {} of {}{}{}",
                    human_bytes(usage.used_bytes),
                    human_bytes(usage.limit_bytes),
                    if usage.bytes_exceeded {
                        " (EXCEEDED)"
                    } else {
                        ""
                    },
                    if usage.enforced {
                        ""
                    } else {
                        " (limit accounted, not enforced)"
                    },
                );
                println!("  inodes:      {}", usage.used_inodes);
            }
        }
        ShareCommand::Access { command } => match command {
            AccessCommand::Allow { name: n, to, level } => {
                let (n, level) = (name(&n)?, level.parse::<AccessLevel>()?);
                let share = service().await?.allow(&n, &to, level).await?;
                if json {
                    print_json(&share.access)?
                } else {
                    print_rules(&share)
                }
            }
            AccessCommand::Deny { name: n, to } => {
                let n = name(&n)?;
                let share = service().await?.deny(&n, &to).await?;
                if json {
                    print_json(&share.access)?
                } else {
                    print_rules(&share)
                }
            }
            AccessCommand::List { name: n } => {
                let n = name(&n)?;
                let share = service().await?.get(&n).await?;
                if json {
                    print_json(&share.access)?
                } else {
                    print_rules(&share)
                }
            }
        },
        ShareCommand::Capacity => {
            let c = service().await?.capacity().await?;
            if json {
                print_json(&c)?
            } else {
                println!("total:       {}", human_bytes(c.total_bytes));
                println!("used:        {}", human_bytes(c.used_bytes));
                println!("available:   {}", human_bytes(c.available_bytes));
                println!(
                    "provisioned: {} in {} shares",
                    human_bytes(c.provisioned_bytes),
                    c.share_count
                );
                println!(
                    "quotas:      {}",
                    if c.quota_enforced {
                        "enforced"
                    } else {
                        "accounted only"
                    }
                );
            }
        }
        ShareCommand::Ensure => {
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} ensuring {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let report = service()
                .await?
                .ensure_with_progress(|done, total, share| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                    bar.set_message(share.to_string());
                })
                .await?;
            bar.finish_and_clear();
            if json {
                print_json(&report)?
            } else {
                println!("checked {} shares", report.checked);
                for r in &report.repaired {
                    println!("repaired {}: {}", r.share, r.what);
                }
                for p in &report.problems {
                    println!("PROBLEM {}: {}", p.share, p.problem);
                }
                for t in &report.purged_trash {
                    println!("purged expired trash {t}");
                }
            }
            if !report.problems.is_empty() {
                anyhow::bail!("{} share(s) need attention", report.problems.len());
            }
        }
        ShareCommand::Adopt { name: n } => {
            let n = name(&n)?;
            let config = Config::load(config)?;
            let settings = config.settings()?;
            let fs = config.open_backend().await?;
            let share = ShareService::open_for_adoption(fs, settings)
                .await?
                .adopt(&n)
                .await?;
            if json {
                print_json(&share)?
            } else {
                print_share(&share)
            }
        }
        ShareCommand::Restore { name: n } => {
            let n = name(&n)?;
            let share = service().await?.restore(&n).await?;
            if json {
                print_json(&share)?
            } else {
                print_share(&share)
            }
        }
        ShareCommand::Trash { command } => match command {
            TrashCommand::List => {
                let entries = service().await?.trash_list().await?;
                if json {
                    print_json(&entries)?
                } else {
                    for e in &entries {
                        println!(
                            "{}  {}  expires at {}",
                            e.id,
                            human_bytes(e.size_bytes),
                            e.expires_at
                        );
                    }
                }
            }
            TrashCommand::Purge => {
                let purged = service().await?.purge_expired_trash().await?;
                if json {
                    print_json(&purged)?
                } else {
                    println!("purged {} trashed share(s)", purged.len())
                }
            }
        },
    }
    Ok(())
}

fn print_rules(share: &Share) {
    if share.access.is_empty() {
        println!("{}: no access rules", share.name);
    }
    for rule in &share.access {
        println!(
            "{}: {} {} ({})",
            share.name,
            rule.to,
            rule.level.as_str(),
            rule.nid_range
        );
    }
}
