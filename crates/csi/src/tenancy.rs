//! Tenancy in the CSI driver: which tenant a new volume belongs to (the StorageClass's
//! `tenant`, else its PVC namespace's, from the driver configuration or the namespace's
//! `lustrekit.io/tenant` label through [`NamespaceTenants`]), and the node-side
//! check that refuses a tenant's volume on a node that is not the tenant's, where the
//! servers do not enforce nodemaps themselves (on Lustre the tenant's nodemap refuses the
//! mount; on `local` nothing would).
//!
//! The node takes a volume's tenant from its path (under which tenant root it lies), not
//! from the volume context alone, so a static PV that leaves the context out is checked
//! the same; a context that names another tenant than the path is refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use lustre_model::{IdType, ProjectId, RelPath};
use share::tenant::{self, Tenant};
use share::{ShareService, ShareSettings};

use crate::error::{CsiError, Result};
use crate::params::{ClaimMetadata, keys};
use crate::volume::context;

/// The namespace label naming the tenant of a namespace's volumes.
pub const NAMESPACE_TENANT_LABEL: &str = "lustrekit.io/tenant";

/// What the controller knows of one namespace's [`NAMESPACE_TENANT_LABEL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceLabel {
    /// The namespace carries the label, with this value.
    Tenant(String),
    /// The namespace is known and has no such label.
    Unlabelled,
    /// Not known (yet): the controller's view has not listed namespaces, or has not seen
    /// this one. A volume is not placed on a guess.
    Unknown,
}

/// Where the controller reads namespaces' tenant labels: the binary watches the API server
/// (`lustrekit csi`, in a cluster), tests give a map. Synchronous: a lookup in what the
/// watch has already seen, never a call.
pub trait NamespaceTenants: Send + Sync {
    fn label(&self, namespace: &str) -> NamespaceLabel;
}

impl NamespaceTenants for HashMap<String, NamespaceLabel> {
    fn label(&self, namespace: &str) -> NamespaceLabel {
        self.get(namespace)
            .cloned()
            .unwrap_or(NamespaceLabel::Unknown)
    }
}

/// The tenant of namespace `ns`: its `namespaces` entry in the configuration, or its
/// [`NAMESPACE_TENANT_LABEL`], which must name a tenant of the configuration
/// (FAILED_PRECONDITION naming it if not, or if the two disagree); UNAVAILABLE while the
/// label is not known yet.
fn namespace_tenant<'a>(
    ns: &str,
    settings: &'a ShareSettings,
    labels: Option<&dyn NamespaceTenants>,
) -> Result<Option<&'a Tenant>> {
    let by_config = settings.tenant_of_namespace(ns);
    let by_label = match labels.map(|l| l.label(ns)) {
        None | Some(NamespaceLabel::Unlabelled) => None,
        Some(NamespaceLabel::Unknown) => {
            return Err(CsiError::Unavailable(format!(
                "namespace {ns:?} is not known to the controller yet (its tenant label is read \
                 from a watch of namespaces); retry"
            )));
        }
        Some(NamespaceLabel::Tenant(name)) => Some(settings.tenant(&name).ok_or_else(|| {
            CsiError::FailedPrecondition(format!(
                "namespace {ns:?} is labelled {NAMESPACE_TENANT_LABEL}={name:?}, which is no \
                 tenant of the driver configuration"
            ))
        })?),
    };
    match (by_config, by_label) {
        (Some(config), Some(label)) if config.name != label.name => {
            Err(CsiError::FailedPrecondition(format!(
                "namespace {ns:?} belongs to tenant {} in the driver configuration but is \
                 labelled {NAMESPACE_TENANT_LABEL}={:?}",
                config.name, label.name
            )))
        }
        (config, label) => Ok(config.or(label)),
    }
}

/// The tenant a new volume belongs to: the class's `tenant` parameter, else the tenant of
/// the PVC's namespace (see [`namespace_tenant`]; `labels` is the controller's view of
/// namespace labels, if it has one). A class naming a tenant that the namespace is not in is
/// INVALID_ARGUMENT: the request contradicts itself (the provisioner, the caller, may do all
/// it asks; what it asks cannot be), and a retry cannot mend it, so the final code fits;
/// PERMISSION_DENIED would say the caller lacks a right. A namespace of one tenant never
/// gets another's volumes.
pub fn volume_tenant<'a>(
    parameters: &HashMap<String, String>,
    metadata: &ClaimMetadata,
    settings: &'a ShareSettings,
    labels: Option<&dyn NamespaceTenants>,
) -> Result<Option<&'a Tenant>> {
    let by_namespace = match metadata.pvc_namespace.as_deref() {
        Some(ns) => namespace_tenant(ns, settings, labels)?,
        None => None,
    };
    let Some(name) = parameters.get(keys::TENANT) else {
        return Ok(by_namespace);
    };
    let named = settings.tenant(name).ok_or_else(|| {
        CsiError::invalid(format!(
            "parameter {}={name:?}: no such tenant in the driver configuration",
            keys::TENANT
        ))
    })?;
    match by_namespace {
        Some(other) if other.name != named.name => Err(CsiError::invalid(format!(
            "parameter {}={name:?}, but namespace {:?} belongs to tenant {}",
            keys::TENANT,
            metadata.pvc_namespace.as_deref().unwrap_or_default(),
            other.name
        ))),
        _ => Ok(Some(named)),
    }
}

/// The volume context entry naming a share's tenant (none outside tenants).
pub fn context_entry(share: &share::Share) -> Option<(String, String)> {
    share
        .tenant
        .as_ref()
        .map(|t| (context::TENANT.to_string(), t.clone()))
}

/// The tenant whose root holds `path` (the root itself or anything below it).
pub fn tenant_of_path<'a>(settings: &'a ShareSettings, path: &RelPath) -> Option<&'a Tenant> {
    settings
        .tenants
        .iter()
        .find(|t| tenant::root_dir(&settings.prefix, t).is_ok_and(|root| path.is_within(&root)))
}

/// This node's own interface addresses, in its network namespace.
pub fn node_addresses() -> Result<Vec<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| CsiError::Internal(format!("reading this node's addresses: {e}")))?;
    Ok(addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect())
}

/// Refuses unless one of `addrs` is in the tenant's ranges. The message names the tenant
/// and the node, not the node's addresses nor the tenant's ranges.
pub fn check_node(
    settings: &ShareSettings,
    tenant: &Tenant,
    node_id: &str,
    addrs: &[IpAddr],
) -> Result<()> {
    let own = std::slice::from_ref(tenant);
    if tenant::tenant_of_addresses(own, addrs, settings.nid_net).is_some() {
        return Ok(());
    }
    Err(CsiError::PermissionDenied(format!(
        "the volume belongs to tenant {}, and node {node_id:?} is not one of its nodes",
        tenant.name
    )))
}

/// Where a volume may be published on this node, and how the node names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The tenant fileset the servers root this node's mounts at (its tenant's root), where
    /// they enforce nodemaps; the backend names the share relative to it.
    pub fileset: Option<RelPath>,
    /// The project ID the share's root must show on this node, checked at mount.
    pub expect_project: Option<ProjectId>,
}

/// NodePublishVolume's check. A node belongs to the tenant whose ranges hold one of its
/// addresses (as the servers match its NIDs), and sees that tenant's volumes only:
/// - a tenant's volume on a node that is not the tenant's is refused (PERMISSION_DENIED);
///   on Lustre the nodemap would refuse it too, or root the mount in the other tenant's
///   fileset, where a same-named directory could stand in for the volume;
/// - a tenant's node is refused a volume of no tenant (its nodemap's fileset hides those);
/// - on the tenant's own node, where the servers enforce nodemaps, the share is named
///   relative to the tenant's fileset, and its project ID (as the node sees it through the
///   tenant's idmaps) is checked at mount.
pub async fn check_publish(
    settings: &ShareSettings,
    nodemaps_enforced_by_server: bool,
    node_id: &str,
    path: &RelPath,
    project: Option<ProjectId>,
    ctx: &HashMap<String, String>,
) -> Result<Placement> {
    let tenant = tenant_of_path(settings, path);
    if let Some(named) = ctx.get(context::TENANT)
        && tenant.map(|t| t.name.as_str()) != Some(named.as_str())
    {
        return Err(CsiError::invalid(format!(
            "volume context {}={named:?} does not match the tenant of {}",
            context::TENANT,
            path.as_str()
        )));
    }
    if settings.tenants.is_empty() {
        return Ok(Placement::default());
    }
    // getifaddrs is a netlink round trip: off the async threads.
    let addrs = tokio::task::spawn_blocking(node_addresses)
        .await
        .map_err(|e| CsiError::Internal(format!("reading this node's addresses: {e}")))??;
    placement(
        settings,
        nodemaps_enforced_by_server,
        node_id,
        path,
        project,
        &addrs,
    )
}

/// [`check_publish`] once the node's addresses are known.
pub fn placement(
    settings: &ShareSettings,
    nodemaps_enforced_by_server: bool,
    node_id: &str,
    path: &RelPath,
    project: Option<ProjectId>,
    addrs: &[IpAddr],
) -> Result<Placement> {
    let volume_tenant = tenant_of_path(settings, path);
    let node_tenant = tenant::tenant_of_addresses(&settings.tenants, addrs, settings.nid_net);
    match (volume_tenant, node_tenant) {
        (None, None) => Ok(Placement::default()),
        (Some(volume), Some(node)) if volume.name == node.name => {
            if !nodemaps_enforced_by_server {
                return Ok(Placement::default());
            }
            let root = tenant::root_dir(&settings.prefix, volume)?;
            Ok(Placement {
                fileset: Some(root),
                expect_project: project.and_then(|p| project_seen_by(volume, p)),
            })
        }
        (Some(volume), _) => {
            check_node(settings, volume, node_id, addrs).map(|()| Placement::default())
        }
        (None, Some(node)) => Err(CsiError::PermissionDenied(format!(
            "node {node_id:?} belongs to tenant {}, whose nodes see only its volumes, and this \
             volume ({}) belongs to no tenant",
            node.name,
            path.as_str()
        ))),
    }
}

/// The project ID a tenant's node sees for `project`: the same where the tenant is trusted,
/// else what its `projid` idmap maps it to; `None` where its nodemap would squash it (the
/// squashed ID tells nothing about the directory).
pub fn project_seen_by(tenant: &Tenant, project: ProjectId) -> Option<ProjectId> {
    if tenant.trusted {
        return Some(project);
    }
    tenant
        .idmaps
        .iter()
        .find(|m| m.idtype == IdType::Projid && m.fs_id == project.get())
        .and_then(|m| ProjectId::new(m.client_id).ok())
}

/// How often the controller puts the tenants' roots and nodemaps back to their desired state.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(300);

/// The controller's tenant loop: reconciles now, then every `every`; one task, and a failed
/// round is logged and tried again at the next.
pub async fn keep_tenants(service: Arc<ShareService>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match service.reconcile_tenants().await {
            Ok(report) => tracing::info!(
                tenants = report.tenants.len(),
                changes = report.changes.len(),
                root_project_quota = ?report.root_project_quota,
                enforced_by_server = report.nodemaps_enforced_by_server,
                "tenants reconciled"
            ),
            Err(e) => tracing::warn!(error = %e, "tenant reconcile failed; retrying later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ShareSettings {
        share::Config::from_toml(
            "backend = \"local\"\nfsname = \"fs\"\nproject_ids = \"1-9\"\n[local]\nroot = \"/x\"\n\
             [[tenants]]\nname = \"alpha\"\nranges = [\"10.1.0.0/24\"]\nnamespaces = [\"team-a\"]\n\
             [[tenants]]\nname = \"beta\"\nranges = [\"10.2.0.7\"]\n",
        )
        .unwrap()
        .settings()
        .unwrap()
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_class_or_the_namespace_names_the_tenant() {
        let s = settings();
        let ns = |n: &str| ClaimMetadata {
            pvc_namespace: Some(n.into()),
            ..ClaimMetadata::default()
        };
        let name = |t: Option<&Tenant>| t.map(|t| t.name.to_string());
        let none = ClaimMetadata::default();
        assert_eq!(
            name(volume_tenant(&params(&[]), &none, &s, None).unwrap()),
            None
        );
        assert_eq!(
            name(volume_tenant(&params(&[]), &ns("team-a"), &s, None).unwrap()).as_deref(),
            Some("alpha")
        );
        assert_eq!(
            name(volume_tenant(&params(&[("tenant", "beta")]), &ns("other"), &s, None).unwrap())
                .as_deref(),
            Some("beta")
        );
        assert!(volume_tenant(&params(&[("tenant", "beta")]), &ns("team-a"), &s, None).is_err());
        assert!(volume_tenant(&params(&[("tenant", "gamma")]), &none, &s, None).is_err());
    }

    #[test]
    fn a_namespace_label_names_the_tenant_when_it_is_declared_and_agrees() {
        let s = settings();
        let ns = |n: &str| ClaimMetadata {
            pvc_namespace: Some(n.into()),
            ..ClaimMetadata::default()
        };
        let labels: HashMap<String, NamespaceLabel> = [
            ("team-a", NamespaceLabel::Unlabelled),
            ("team-b", NamespaceLabel::Tenant("beta".into())),
            ("team-c", NamespaceLabel::Tenant("gamma".into())),
            ("team-d", NamespaceLabel::Unlabelled),
            ("team-e", NamespaceLabel::Tenant("alpha".into())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let tenant = |p: &[(&str, &str)], n: &str| {
            volume_tenant(&params(p), &ns(n), &s, Some(&labels))
                .map(|t| t.map(|t| t.name.to_string()))
        };
        // The label, the configuration, or neither.
        assert_eq!(tenant(&[], "team-b").unwrap().as_deref(), Some("beta"));
        assert_eq!(tenant(&[], "team-a").unwrap().as_deref(), Some("alpha"));
        assert_eq!(tenant(&[], "team-d").unwrap(), None);
        // The class agreeing with the label, and disagreeing (INVALID_ARGUMENT).
        assert_eq!(
            tenant(&[("tenant", "beta")], "team-b").unwrap().as_deref(),
            Some("beta")
        );
        let err = tenant(&[("tenant", "alpha")], "team-b").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.to_string().contains("team-b") && err.to_string().contains("beta"));
        // A label naming no declared tenant: FAILED_PRECONDITION naming it.
        let err = tenant(&[], "team-c").unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("\"gamma\""), "{err}");
        // The configuration and the label disagreeing: FAILED_PRECONDITION naming both.
        let mut conflicting = labels.clone();
        conflicting.insert("team-a".into(), NamespaceLabel::Tenant("beta".into()));
        let err = volume_tenant(&params(&[]), &ns("team-a"), &s, Some(&conflicting)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
        assert!(err.to_string().contains("alpha") && err.to_string().contains("beta"));
        // Agreeing is fine.
        conflicting.insert("team-a".into(), NamespaceLabel::Tenant("alpha".into()));
        assert_eq!(
            volume_tenant(&params(&[]), &ns("team-a"), &s, Some(&conflicting))
                .unwrap()
                .map(|t| t.name.as_str()),
            Some("alpha")
        );
        // A namespace the watch has not seen: UNAVAILABLE (retry), never placed on a guess.
        let err = tenant(&[("tenant", "beta")], "new-ns").unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
        // No PVC namespace (no --extra-create-metadata): the class alone.
        let none = ClaimMetadata::default();
        assert_eq!(
            volume_tenant(&params(&[("tenant", "beta")]), &none, &s, Some(&labels))
                .unwrap()
                .map(|t| t.name.as_str()),
            Some("beta")
        );
    }

    #[test]
    fn the_path_names_the_tenant_and_the_node_must_be_its() {
        let s = settings();
        let path = |p: &str| RelPath::parse(p).unwrap();
        assert_eq!(
            tenant_of_path(&s, &path("shares/alpha/pvc-1")).map(|t| t.name.as_str()),
            Some("alpha")
        );
        assert!(tenant_of_path(&s, &path("shares/alphabet/pvc-1")).is_none());
        assert!(tenant_of_path(&s, &path("shares/pvc-1")).is_none());
        let beta = s.tenant("beta").unwrap();
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        check_node(&s, beta, "n1", &[ip("127.0.0.1"), ip("10.2.0.7")]).unwrap();
        let err = check_node(&s, beta, "n1", &[ip("10.1.0.3")]).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("beta") && message.contains("n1"),
            "{message}"
        );
        assert!(!message.contains("10."), "{message}");
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::PermissionDenied
        );
    }

    #[tokio::test]
    async fn a_context_naming_another_tenant_is_refused() {
        let s = settings();
        let path = RelPath::parse("shares/alpha/pvc-1").unwrap();
        let ctx = params(&[(context::TENANT, "beta")]);
        assert!(matches!(
            check_publish(&s, true, "n1", &path, None, &ctx).await,
            Err(CsiError::InvalidArgument(_))
        ));
        // This host's addresses are not 10.1.0.0/24 (the test network is TEST-NET-free), so
        // it is no node of alpha's, on either kind of backend.
        for enforced in [true, false] {
            let err = check_publish(&s, enforced, "n1", &path, None, &HashMap::new())
                .await
                .unwrap_err();
            assert!(matches!(err, CsiError::PermissionDenied(_)), "{err}");
        }
        let addrs = node_addresses().unwrap();
        assert!(!addrs.is_empty());
    }

    fn ip(a: &str) -> IpAddr {
        a.parse().unwrap()
    }

    fn project(id: u32) -> ProjectId {
        ProjectId::new(id).unwrap()
    }

    #[test]
    fn the_tenants_node_names_the_share_from_its_fileset_where_servers_enforce_nodemaps() {
        let s = settings();
        let path = RelPath::parse("shares/alpha/pvc-1").unwrap();
        let alpha_node = [ip("127.0.0.1"), ip("10.1.0.9")];
        let placed = placement(&s, true, "n1", &path, Some(project(7)), &alpha_node).unwrap();
        assert_eq!(
            placed,
            Placement {
                fileset: Some(RelPath::parse("shares/alpha").unwrap()),
                expect_project: Some(project(7)),
            }
        );
        // Where the servers do not enforce nodemaps there is no fileset to name it from.
        assert_eq!(
            placement(&s, false, "n1", &path, Some(project(7)), &alpha_node).unwrap(),
            Placement::default()
        );
        // A volume without a project is placed, unchecked.
        assert_eq!(
            placement(&s, true, "n1", &path, None, &alpha_node)
                .unwrap()
                .expect_project,
            None
        );
    }

    #[test]
    fn another_tenants_node_and_a_tenants_node_for_no_tenants_volume_are_refused() {
        let s = settings();
        let alpha_volume = RelPath::parse("shares/alpha/pvc-1").unwrap();
        let plain_volume = RelPath::parse("shares/pvc-2").unwrap();
        let beta_node = [ip("10.2.0.7")];
        for enforced in [true, false] {
            let err = placement(&s, enforced, "n2", &alpha_volume, None, &beta_node).unwrap_err();
            assert!(err.to_string().contains("alpha"), "{err}");
            assert_eq!(
                tonic::Status::from(err).code(),
                tonic::Code::PermissionDenied
            );
            let err = placement(&s, enforced, "n2", &plain_volume, None, &beta_node).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains("beta") && message.contains("no tenant"),
                "{message}"
            );
            assert_eq!(
                tonic::Status::from(err).code(),
                tonic::Code::PermissionDenied
            );
            // A node of no tenant: a volume of no tenant is fine, a tenant's is not.
            let other = [ip("192.0.2.1")];
            assert_eq!(
                placement(&s, enforced, "n3", &plain_volume, None, &other).unwrap(),
                Placement::default()
            );
            assert!(placement(&s, enforced, "n3", &alpha_volume, None, &other).is_err());
        }
    }

    #[test]
    fn the_project_a_node_sees_goes_through_the_tenants_idmaps() {
        let trusted = settings().tenant("beta").unwrap().clone();
        assert!(trusted.trusted);
        assert_eq!(project_seen_by(&trusted, project(7)), Some(project(7)));
        let mapped = share::Config::from_toml(
            "backend = \"local\"\nfsname = \"fs\"\nproject_ids = \"1-9\"\n[local]\nroot = \"/x\"\n\
             [[tenants]]\nname = \"gamma\"\nranges = [\"10.3.0.0/24\"]\n\
             idmaps = [\"projid:70:7\", \"uid:1000:21000\"]\n",
        )
        .unwrap()
        .settings()
        .unwrap();
        let gamma = mapped.tenant("gamma").unwrap();
        assert!(!gamma.trusted);
        assert_eq!(project_seen_by(gamma, project(7)), Some(project(70)));
        // Not mapped: the nodemap squashes it, and the squashed ID proves nothing.
        assert_eq!(project_seen_by(gamma, project(8)), None);
    }
}
