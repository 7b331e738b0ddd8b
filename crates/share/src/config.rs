//! The TOML configuration: the options a Manila Lustre deployment has, plus the local
//! backend's root. Unknown keys are errors, so a typo never silently falls back to a default.
//!
//! ```toml
//! backend = "local"                 # or "lustre"
//! fsname = "lustre"                 # 1-8 characters
//! share_prefix = "shares"           # shares are <prefix>/<name> under the filesystem root
//! project_ids = "10000-19999"       # inclusive range the service allocates from
//! export_nids = ["10.0.0.1@tcp"]    # MGS NIDs clients mount from
//! nid_type = "tcp"                  # network of access-rule NIDs: tcp, tcp1, o2ib, o2ib3...
//! trash_ttl_hours = 168
//! root_squash = true                # squash root for read-write rules too
//! activate_nodemaps = false         # run `nodemap_activate 1` when a rule is granted
//!
//! [[tenants]]                      # see crate::tenant; repeat per tenant
//! name = "alpha"                    # a-z 0-9 _, at most 12 characters
//! root = "alpha"                    # under share_prefix (default: the name)
//! ranges = ["10.1.0.0/24", "192.168.0.[1-10]@tcp"]   # CIDRs on nid_type, or NID ranges
//! quota = "10T"                     # cap of the sum of its shares (optional)
//! namespaces = ["team-a"]           # Kubernetes namespaces whose volumes are its
//! deny_unknown = true               # optional, default false
//! squash_uid = 65534                # optional, also squash_gid
//! admin = false                     # optional: root stays root on its nodes
//! idmaps = ["uid:1000:21000"]       # optional: uid|gid|projid:CLIENT:FS (trusted=0 then)
//! rbac = ["file_perms", "fscrypt_admin"]   # optional, applied on Lustre 2.16+
//!
//! [local]
//! root = "/var/lib/lustrekit"
//!
//! [lustre]                          # see backend::lustre::LustreConfig
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend::{DirSpec, Filesystem};
use lustre_model::{FsName, LNet, Nid, ProjectId, ProjectRange, RelPath};
use serde::Deserialize;

use crate::tenant::{self, Tenant, TenantName};
use crate::{Result, ShareError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    Local,
    Lustre,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSection {
    pub root: PathBuf,
}

/// The configuration file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub backend: BackendChoice,
    pub fsname: String,
    #[serde(default = "default_prefix")]
    pub share_prefix: String,
    pub project_ids: String,
    #[serde(default)]
    pub export_nids: Vec<String>,
    #[serde(default = "default_nid_type")]
    pub nid_type: String,
    #[serde(default = "default_trash_ttl_hours")]
    pub trash_ttl_hours: u64,
    #[serde(default = "default_true")]
    pub root_squash: bool,
    #[serde(default)]
    pub activate_nodemaps: bool,
    #[serde(default = "default_mode")]
    pub share_mode: String,
    #[serde(default)]
    pub share_uid: u32,
    #[serde(default)]
    pub share_gid: u32,
    pub local: Option<LocalSection>,
    pub lustre: Option<backend::lustre::LustreConfig>,
    #[serde(default)]
    pub tenants: Vec<TenantSection>,
}

/// One `[[tenants]]` entry, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    pub name: String,
    pub root: Option<String>,
    pub ranges: Vec<String>,
    pub quota: Option<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub deny_unknown: bool,
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
    #[serde(default)]
    pub admin: bool,
    /// Defaults to true without idmaps (client IDs are the filesystem's), false with them.
    pub trusted: Option<bool>,
    #[serde(default)]
    pub idmaps: Vec<String>,
    pub rbac: Option<Vec<String>>,
}

impl TenantSection {
    fn tenant(&self, net: LNet) -> Result<Tenant> {
        let name = TenantName::new(&self.name).map_err(|e| config_error("tenants", e))?;
        let what = |field: &str| format!("tenant {name} {field}");
        let root = RelPath::parse(self.root.as_deref().unwrap_or(&self.name))
            .map_err(|e| config_error(&what("root"), e))?;
        if self.ranges.is_empty() {
            return Err(ShareError::Config(format!(
                "{}: at least one is needed",
                what("ranges")
            )));
        }
        let ranges = self
            .ranges
            .iter()
            .map(|r| tenant::parse_range(r, net).map_err(|e| config_error(&what("ranges"), e)))
            .collect::<Result<Vec<_>>>()?;
        let idmaps = self
            .idmaps
            .iter()
            .map(|m| tenant::parse_idmap(m).map_err(|e| config_error(&what("idmaps"), e)))
            .collect::<Result<Vec<_>>>()?;
        let rbac = match &self.rbac {
            Some(roles) => roles.clone(),
            None => tenant::DEFAULT_RBAC.iter().map(|r| r.to_string()).collect(),
        };
        tenant::check_rbac(&name, &rbac)?;
        let quota_bytes = self
            .quota
            .as_deref()
            .map(|q| crate::sizes::parse_size(q).map_err(|e| config_error(&what("quota"), e)))
            .transpose()?;
        Ok(Tenant {
            root,
            ranges,
            squash_uid: self.squash_uid.unwrap_or_else(tenant::default_squash),
            squash_gid: self.squash_gid.unwrap_or_else(tenant::default_squash),
            deny_unknown: self.deny_unknown,
            admin: self.admin,
            trusted: self.trusted.unwrap_or(idmaps.is_empty()),
            idmaps,
            rbac,
            quota_bytes,
            namespaces: self.namespaces.clone(),
            name,
        })
    }
}

fn default_prefix() -> String {
    "shares".into()
}
fn default_nid_type() -> String {
    "tcp".into()
}
fn default_trash_ttl_hours() -> u64 {
    168
}
fn default_true() -> bool {
    true
}
fn default_mode() -> String {
    "0770".into()
}

/// The validated settings the service runs with.
#[derive(Debug, Clone)]
pub struct ShareSettings {
    pub fsname: FsName,
    pub prefix: RelPath,
    pub project_ids: ProjectRange,
    pub export_nids: Vec<Nid>,
    pub nid_net: LNet,
    pub trash_ttl_secs: u64,
    pub root_squash: bool,
    pub activate_nodemaps: bool,
    pub dir: DirSpec,
    /// Validated against each other (see [`tenant::check_all`]).
    pub tenants: Vec<Tenant>,
}

impl ShareSettings {
    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.name.as_str() == name)
    }

    /// The tenant a Kubernetes namespace belongs to, if any.
    pub fn tenant_of_namespace(&self, namespace: &str) -> Option<&Tenant> {
        self.tenants
            .iter()
            .find(|t| t.namespaces.iter().any(|n| n == namespace))
    }

    /// Whether `dir` holds shares: the prefix, or a tenant's root under it.
    pub fn is_share_parent(&self, dir: &RelPath) -> bool {
        dir == &self.prefix
            || self
                .tenants
                .iter()
                .any(|t| tenant::root_dir(&self.prefix, t).is_ok_and(|root| &root == dir))
    }
}

fn config_error(what: &str, e: impl std::fmt::Display) -> ShareError {
    ShareError::Config(format!("{what}: {e}"))
}

/// Parses `"10000-19999"`.
pub fn parse_project_range(text: &str) -> Result<ProjectRange> {
    let (start, end) = text
        .split_once('-')
        .ok_or_else(|| ShareError::Config(format!("project_ids {text:?}: expected START-END")))?;
    let parse = |s: &str| -> Result<ProjectId> {
        let n: u32 = s
            .trim()
            .parse()
            .map_err(|e| config_error(&format!("project_ids {text:?}"), e))?;
        ProjectId::new(n).map_err(|e| config_error(&format!("project_ids {text:?}"), e))
    };
    ProjectRange::new(parse(start)?, parse(end)?)
        .map_err(|e| config_error(&format!("project_ids {text:?}"), e))
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| ShareError::Config(e.to_string()))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ShareError::Config(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| match e {
            ShareError::Config(m) => ShareError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn settings(&self) -> Result<ShareSettings> {
        let fsname = FsName::new(&self.fsname).map_err(|e| config_error("fsname", e))?;
        let prefix =
            RelPath::parse(&self.share_prefix).map_err(|e| config_error("share_prefix", e))?;
        let export_nids = self
            .export_nids
            .iter()
            .map(|n| {
                n.parse::<Nid>()
                    .map_err(|e| config_error(&format!("export_nids {n:?}"), e))
            })
            .collect::<Result<Vec<_>>>()?;
        let nid_net: LNet = self
            .nid_type
            .parse()
            .map_err(|e| config_error(&format!("nid_type {:?}", self.nid_type), e))?;
        let mode = u32::from_str_radix(self.share_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| {
                ShareError::Config(format!(
                    "share_mode {:?}: not an octal mode",
                    self.share_mode
                ))
            })?;
        let tenants = self
            .tenants
            .iter()
            .map(|t| t.tenant(nid_net))
            .collect::<Result<Vec<_>>>()?;
        tenant::check_all(&tenants)?;
        Ok(ShareSettings {
            tenants,
            fsname,
            prefix,
            project_ids: parse_project_range(&self.project_ids)?,
            export_nids,
            nid_net,
            trash_ttl_secs: self.trash_ttl_hours.saturating_mul(3600),
            root_squash: self.root_squash,
            activate_nodemaps: self.activate_nodemaps,
            dir: DirSpec {
                mode,
                uid: self.share_uid,
                gid: self.share_gid,
            },
        })
    }

    /// Opens the configured backend.
    pub async fn open_backend(&self) -> Result<Arc<dyn Filesystem>> {
        match self.backend {
            BackendChoice::Local => {
                let local = self.local.as_ref().ok_or_else(|| {
                    ShareError::Config(
                        "backend = \"local\" needs a [local] section with root".into(),
                    )
                })?;
                Ok(Arc::new(
                    backend::local::LocalBackend::open(&local.root).await?,
                ))
            }
            BackendChoice::Lustre => {
                let lustre = self.lustre.as_ref().ok_or_else(|| {
                    ShareError::Config("backend = \"lustre\" needs a [lustre] section".into())
                })?;
                if lustre.fsname.as_str() != self.fsname {
                    return Err(ShareError::Config(format!(
                        "fsname {:?} differs from [lustre] fsname {:?}",
                        self.fsname,
                        lustre.fsname.as_str()
                    )));
                }
                Ok(Arc::new(backend::lustre::LustreBackend::new(
                    lustre.clone(),
                )?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
backend = "local"
fsname = "lustre"
project_ids = "10000-19999"
export_nids = ["10.0.0.1@tcp", "10.0.0.2@o2ib"]
nid_type = "o2ib3"
[local]
root = "/tmp/x"
"#;

    #[test]
    fn a_full_config_gives_settings() {
        let settings = Config::from_toml(GOOD).unwrap().settings().unwrap();
        assert_eq!(settings.fsname.as_str(), "lustre");
        assert_eq!(settings.prefix.as_str(), "shares");
        assert_eq!(settings.project_ids.start.get(), 10000);
        assert_eq!(settings.export_nids.len(), 2);
        assert_eq!(settings.nid_net.to_string(), "o2ib3");
        assert_eq!(settings.dir.mode, 0o770);
        assert_eq!(settings.trash_ttl_secs, 168 * 3600);
    }

    fn settings_error(toml: &str) -> String {
        match Config::from_toml(toml).and_then(|c| c.settings()) {
            Ok(_) => panic!("accepted: {toml}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let cases = [
            (GOOD.replace("nid_type", "nid_typo"), "nid_typo"),
            (
                GOOD.replace("\"10000-19999\"", "\"200-100\""),
                "project_ids",
            ),
            (GOOD.replace("\"10000-19999\"", "\"0-100\""), "project_ids"),
            (GOOD.replace("\"10000-19999\"", "\"100\""), "START-END"),
            (GOOD.replace("\"lustre\"", "\"waytoolongname\""), "fsname"),
            (
                GOOD.replace("10.0.0.1@tcp", "10.0.0.300@tcp"),
                "export_nids",
            ),
            (GOOD.replace("o2ib3", "ethernet"), "nid_type"),
            (
                GOOD.replace("root = \"/tmp/x\"", "root = \"/tmp/x\"\nextra = 1"),
                "extra",
            ),
            (format!("{GOOD}\nshare_mode = \"999\""), "share_mode"),
            (
                format!("{GOOD}\nshare_prefix = \"../escape\""),
                "share_prefix",
            ),
        ];
        for (toml, needle) in cases {
            let message = settings_error(&toml);
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
    }

    #[tokio::test]
    async fn a_lustre_config_opens_the_lustre_backend_and_checks_the_fsname() {
        let text = r#"
backend = "lustre"
fsname = "scratch"
project_ids = "10000-19999"
export_nids = ["10.0.0.1@tcp"]
[lustre]
fsname = "scratch"
mgs_nids = ["10.0.0.1@tcp"]
mount_point = "/mnt/scratch"
mds_mount_point = "/lustre/scratch"
lfs = "/opt/lustre/bin/lfs"
[lustre.mgs_host]
host = "mgs1"
key = "/etc/lustrekit/id"
"#;
        let config = Config::from_toml(text).unwrap();
        let fs = config.open_backend().await.unwrap();
        assert_eq!(fs.kind(), backend::BackendKind::Lustre);
        let mismatched =
            Config::from_toml(&text.replacen("fsname = \"scratch\"", "fsname = \"other\"", 1))
                .unwrap();
        let err = mismatched
            .open_backend()
            .await
            .err()
            .expect("fsname mismatch refused");
        assert!(err.to_string().contains("fsname"), "{err}");
        let missing =
            Config::from_toml("backend = \"lustre\"\nfsname = \"x\"\nproject_ids = \"1-2\"\n")
                .unwrap();
        assert!(missing.open_backend().await.is_err());
    }

    const TENANTS: &str = r#"
[[tenants]]
name = "alpha"
ranges = ["10.1.0.0/24", "192.168.0.[1-10]@tcp"]
quota = "10G"
namespaces = ["team-a"]
idmaps = ["uid:1000:21000"]
[[tenants]]
name = "beta"
root = "b/root"
ranges = ["10.2.0.7"]
deny_unknown = true
rbac = []
"#;

    #[test]
    fn tenants_are_read_and_checked() {
        let settings = Config::from_toml(&format!("{GOOD}{TENANTS}"))
            .unwrap()
            .settings()
            .unwrap();
        let alpha = settings.tenant("alpha").unwrap();
        assert_eq!(alpha.root.as_str(), "alpha");
        assert_eq!(alpha.ranges.len(), 2);
        assert_eq!(alpha.ranges[0].start.net.to_string(), "o2ib3");
        assert_eq!(alpha.quota_bytes, Some(10 << 30));
        assert!(!alpha.trusted && !alpha.deny_unknown);
        assert_eq!(alpha.rbac, ["file_perms", "fscrypt_admin"]);
        assert_eq!(
            settings
                .tenant_of_namespace("team-a")
                .unwrap()
                .name
                .as_str(),
            "alpha"
        );
        let beta = settings.tenant("beta").unwrap();
        assert!(beta.trusted && beta.deny_unknown && beta.rbac.is_empty());
        assert!(settings.is_share_parent(&RelPath::parse("shares/b/root").unwrap()));
        assert!(settings.is_share_parent(&RelPath::parse("shares").unwrap()));
        assert!(!settings.is_share_parent(&RelPath::parse("shares/b").unwrap()));
        let cases = [
            (TENANTS.replace("10.2.0.7", "10.1.0.9"), "both claim"),
            (TENANTS.replace("b/root", "alpha"), "roots"),
            (TENANTS.replace("\"beta\"", "\"alpha\""), "twice"),
            (TENANTS.replace("\"beta\"", "\"Beta\""), "tenant name"),
            (TENANTS.replace("uid:1000", "user:1000"), "idmaps"),
            (
                TENANTS.replace("rbac = []", "rbac = [\"quota_ops\"]"),
                "quota_ops",
            ),
            (TENANTS.replace("10G", "lots"), "quota"),
            (TENANTS.replace("10.2.0.7", "10.2.0.300"), "ranges"),
            (TENANTS.replace("b/root", ".lustrekit"), "reserved"),
            (TENANTS.replace("rbac = []", "colour = 1"), "colour"),
        ];
        for (tenants, needle) in cases {
            let message = settings_error(&format!("{GOOD}{tenants}"));
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
    }

    #[test]
    fn project_ranges_parse() {
        let r = parse_project_range("1-1").unwrap();
        assert_eq!(r.len(), 1);
        assert!(parse_project_range("5-").is_err());
        assert!(parse_project_range("x-9").is_err());
        assert!(parse_project_range("1-4294967295").is_err());
    }
}
