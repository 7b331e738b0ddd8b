//! Encrypted volumes (`encryption: fscrypt`): what the StorageClass says, what the volume
//! context and the share's labels record, and the KMIP credentials a request's Secret
//! carries.
//!
//! The flow (see README, "Encrypted volumes"): CreateVolume creates (or, on a retry, finds
//! by name) an AES-256 key in the KMIP server, named `lustrekit/<volume name>`, and sets an
//! fscrypt v2 policy for it on the empty share directory; only the KMIP identifier (a label
//! and the context) and the kernel's key identifier (the context) are recorded.
//! NodePublishVolume fetches the key and adds it to the filesystem (held per node, see
//! [`crate::client_tunables`]); the last unpublish on the node removes it. DeleteVolume
//! destroys the key after the data is gone; a retained volume keeps it, and a trashed one
//! until no share record names it (the trash purged): the controller's [`keep_erasing`]
//! destroys it then, with its own credentials. A CreateVolume that fails undoes its share
//! and its key ([`CreateUndo`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backend::fscrypt::KeyIdentifier;
use lustre_model::{RelPath, ShareName};
use share::{DeleteMode, ShareService};
use zeroize::Zeroizing;

use crate::error::{CsiError, Result};
use crate::kmip::{KmipClient, KmipCredentials};
use crate::params::{HsmParams, keys};

/// The only scheme there is.
pub const FSCRYPT: &str = "fscrypt";

/// On a backend whose bind volumes share one client mount per node (`lustre`), an encrypted
/// volume must be one of them: a key is added to the filesystem of that shared mount, and a
/// `direct` volume is a client mount (a filesystem instance) of its own, made after the key
/// is added, which would never see it.
pub fn check_mount_mode(shared_client_mount: bool, mode: backend::MountMode) -> Result<()> {
    if shared_client_mount && mode == backend::MountMode::Direct {
        return Err(CsiError::invalid(format!(
            "{} needs {}=bind on this backend: the key is added to the node's shared client              mount, and a direct volume is a client mount of its own",
            keys::ENCRYPTION,
            keys::MOUNT_MODE
        )));
    }
    Ok(())
}

/// Secret keys (provisioner and node-publish secrets) holding the KMIP client's PEM files.
pub mod secret_keys {
    pub const CLIENT_CERT: &str = "kmipClientCert";
    pub const CLIENT_KEY: &str = "kmipClientKey";
    pub const CA_CERT: &str = "kmipCaCert";
}

/// Volume context keys of an encrypted volume.
pub mod context {
    pub const ENCRYPTION: &str = "encryption";
    pub const KMIP_ENDPOINT: &str = "kmipEndpoint";
    pub const KMIP_KEY_ID: &str = "kmipKeyId";
    pub const KEY_IDENTIFIER: &str = "fscryptKeyIdentifier";
    pub const ALL: &[&str] = &[ENCRYPTION, KMIP_ENDPOINT, KMIP_KEY_ID, KEY_IDENTIFIER];
}

/// Labels on an encrypted volume's share, for DeleteVolume (which gets only the ID).
pub mod labels {
    pub const ENCRYPTION: &str = "csi.lustrekit.io/encryption";
    pub const KMIP_ENDPOINT: &str = "csi.lustrekit.io/kmip-endpoint";
    pub const KMIP_KEY_ID: &str = "csi.lustrekit.io/kmip-key-id";
}

/// What a StorageClass asks of an encrypted volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionParams {
    /// `host:port` of the KMIP server.
    pub kmip_endpoint: String,
}

impl EncryptionParams {
    /// `encryption`, `kmipEndpoint`; with an `hsmStore`, `hsmArchivePlaintext: "true"` must
    /// say that archived copies leave in the clear (the mover reads files through the
    /// unlocked namespace), else the class is refused.
    pub fn parse(
        parameters: &HashMap<String, String>,
        hsm: Option<&HsmParams>,
    ) -> Result<Option<Self>> {
        let get = |k: &str| parameters.get(k).map(|v| v.trim());
        let plaintext_archive = match get(keys::HSM_ARCHIVE_PLAINTEXT) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(CsiError::invalid(format!(
                    "parameter {}={other:?}: expected true or false",
                    keys::HSM_ARCHIVE_PLAINTEXT
                )));
            }
        };
        let Some(scheme) = get(keys::ENCRYPTION) else {
            if get(keys::KMIP_ENDPOINT).is_some() {
                return Err(CsiError::invalid(format!(
                    "parameter {} needs {}: {FSCRYPT}",
                    keys::KMIP_ENDPOINT,
                    keys::ENCRYPTION
                )));
            }
            return Ok(None);
        };
        if scheme != FSCRYPT {
            return Err(CsiError::invalid(format!(
                "parameter {}={scheme:?}: expected {FSCRYPT}",
                keys::ENCRYPTION
            )));
        }
        let endpoint = get(keys::KMIP_ENDPOINT).unwrap_or("");
        let valid = endpoint
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            && !endpoint.contains(['/', '@', '?', ' ']);
        if !valid {
            return Err(CsiError::invalid(format!(
                "parameter {}={endpoint:?}: expected host:port of the KMIP server",
                keys::KMIP_ENDPOINT
            )));
        }
        if hsm.is_some_and(|h| h.import_from.is_some()) {
            // The controller imports before any node holds the key, into a directory it
            // never unlocks: every stub would fail with ENOKEY.
            return Err(CsiError::invalid(format!(
                "{}: {FSCRYPT} with {}: the import would write into the encrypted directory, \
                 which the controller never unlocks",
                keys::ENCRYPTION,
                keys::HSM_IMPORT_FROM
            )));
        }
        if hsm.is_some() && !plaintext_archive {
            return Err(CsiError::invalid(format!(
                "{}: {FSCRYPT} with {}: archiving would send the files' plaintext to the store; \
                 set {}: \"true\" in the StorageClass to allow it",
                keys::ENCRYPTION,
                keys::HSM_STORE,
                keys::HSM_ARCHIVE_PLAINTEXT
            )));
        }
        Ok(Some(Self {
            kmip_endpoint: endpoint.to_string(),
        }))
    }
}

/// The KMIP credentials in a request's `secrets`. A missing key is named; no value is ever
/// quoted.
fn credentials_from(secrets: &HashMap<String, String>, which: &str) -> Result<KmipCredentials> {
    let get = |k: &'static str| {
        secrets
            .get(k)
            .map(|v| v.as_bytes().to_vec())
            .ok_or_else(|| {
                CsiError::invalid(format!(
                    "the {which} secret has no {k}: an encrypted volume needs {}, {} and {} \
                 (PEM) for its KMIP server",
                    secret_keys::CLIENT_CERT,
                    secret_keys::CLIENT_KEY,
                    secret_keys::CA_CERT
                ))
            })
    };
    Ok(KmipCredentials {
        client_cert_pem: get(secret_keys::CLIENT_CERT)?,
        client_key_pem: Zeroizing::new(get(secret_keys::CLIENT_KEY)?),
        ca_pem: get(secret_keys::CA_CERT)?,
    })
}

/// The controller's own KMIP credentials: a directory holding the files `kmipClientCert`,
/// `kmipClientKey` and `kmipCaCert` (a mounted Secret, with the provisioner secret's keys),
/// read afresh each time so a rotated Secret is picked up.
pub async fn credentials_from_dir(dir: &Path) -> Result<KmipCredentials> {
    let read = async |name: &str| {
        let path = dir.join(name);
        tokio::fs::read(&path)
            .await
            .map_err(|e| CsiError::io(&path, e))
    };
    Ok(KmipCredentials {
        client_cert_pem: read(secret_keys::CLIENT_CERT).await?,
        client_key_pem: Zeroizing::new(read(secret_keys::CLIENT_KEY).await?),
        ca_pem: read(secret_keys::CA_CERT).await?,
    })
}

/// The KMIP client for `endpoint` with the PEM files of a request's `secrets`. A missing
/// key is named; no value is ever quoted.
pub fn kmip_client(
    endpoint: &str,
    secrets: &HashMap<String, String>,
    which: &str,
    timeout: Duration,
) -> Result<KmipClient> {
    let credentials = credentials_from(secrets, which)?;
    Ok(KmipClient::new(endpoint, &credentials, timeout)?)
}

/// The name of a volume's key in the KMIP server.
pub fn kmip_key_name(volume_name: &str) -> String {
    format!("lustrekit/{volume_name}")
}

/// The volume context entries of an encrypted volume.
pub fn volume_context(
    params: &EncryptionParams,
    kmip_key_id: &str,
    identifier: &KeyIdentifier,
) -> Vec<(String, String)> {
    vec![
        (context::ENCRYPTION.into(), FSCRYPT.into()),
        (context::KMIP_ENDPOINT.into(), params.kmip_endpoint.clone()),
        (context::KMIP_KEY_ID.into(), kmip_key_id.into()),
        (context::KEY_IDENTIFIER.into(), identifier.to_hex()),
    ]
}

/// What the node needs to unlock a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEncryption {
    pub kmip_endpoint: String,
    pub kmip_key_id: String,
    pub identifier: KeyIdentifier,
}

impl NodeEncryption {
    /// From a volume context: all four keys or none.
    pub fn from_context(ctx: &HashMap<String, String>) -> Result<Option<Self>> {
        let Some(scheme) = ctx.get(context::ENCRYPTION) else {
            if let Some(k) = context::ALL.iter().find(|k| ctx.contains_key(**k)) {
                return Err(CsiError::invalid(format!(
                    "volume context {k} without {}",
                    context::ENCRYPTION
                )));
            }
            return Ok(None);
        };
        if scheme != FSCRYPT {
            return Err(CsiError::invalid(format!(
                "volume context {}={scheme:?}: expected {FSCRYPT}",
                context::ENCRYPTION
            )));
        }
        let need = |k: &str| {
            ctx.get(k)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| CsiError::invalid(format!("volume context: {k} is missing")))
        };
        let text = need(context::KEY_IDENTIFIER)?;
        let identifier = KeyIdentifier::from_hex(&text).ok_or_else(|| {
            CsiError::invalid(format!(
                "volume context {}={text:?}: expected 32 hex digits",
                context::KEY_IDENTIFIER
            ))
        })?;
        Ok(Some(Self {
            kmip_endpoint: need(context::KMIP_ENDPOINT)?,
            kmip_key_id: need(context::KMIP_KEY_ID)?,
            identifier,
        }))
    }

    /// The node hold's name for this key (see [`crate::client_tunables`]).
    pub fn hold_name(&self) -> String {
        hold_name(&self.identifier)
    }
}

/// Where a key waiting for its crypto-erase is recorded, outside the share
/// (`<prefix>/.lustrekit/kmip-erase/<share>`): DeleteVolume writes it before the data goes
/// and removes it once the key is destroyed, so a retry after the key server failed (the
/// share already gone) still destroys the key.
fn erase_marker(service: &ShareService, name: &ShareName) -> Result<(RelPath, RelPath)> {
    let dir = erase_dir(service)?;
    let file = dir.join(name);
    Ok((dir, file))
}

/// `<prefix>/.lustrekit/kmip-erase`: every key waiting for its crypto-erase.
fn erase_dir(service: &ShareService) -> Result<RelPath> {
    Ok(service
        .settings()
        .prefix
        .join(&ShareName::new(share::META_DIR)?)
        .join(&ShareName::new("kmip-erase")?))
}

/// A key to destroy once the data of `volume_id` is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingErase {
    pub volume_id: String,
    pub kmip_endpoint: String,
    pub kmip_key_id: String,
}

impl PendingErase {
    fn text(&self) -> String {
        format!(
            "{} {} {}\n",
            self.volume_id, self.kmip_endpoint, self.kmip_key_id
        )
    }

    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split_whitespace();
        let (volume_id, endpoint, key_id) = (parts.next()?, parts.next()?, parts.next()?);
        parts.next().is_none().then(|| Self {
            volume_id: volume_id.into(),
            kmip_endpoint: endpoint.into(),
            kmip_key_id: key_id.into(),
        })
    }

    /// Records the erase before the data goes.
    pub async fn record(&self, service: &ShareService, name: &ShareName) -> Result<()> {
        let (dir, file) = erase_marker(service, name)?;
        service.backend().ensure_dir(&dir).await?;
        service
            .backend()
            .write_file(&file, self.text().as_bytes())
            .await?;
        Ok(())
    }

    /// The erase recorded for share `name`, if it is for `volume_id`.
    pub async fn find(
        service: &ShareService,
        name: &ShareName,
        volume_id: &str,
    ) -> Result<Option<Self>> {
        let (_, file) = erase_marker(service, name)?;
        let Some(bytes) = service.backend().read_file(&file).await? else {
            return Ok(None);
        };
        Ok(Self::parse(&String::from_utf8_lossy(&bytes)).filter(|p| p.volume_id == volume_id))
    }

    /// Destroys the key with the provisioner `secrets`, then forgets the erase.
    pub async fn finish(
        &self,
        service: &ShareService,
        name: &ShareName,
        secrets: &HashMap<String, String>,
    ) -> Result<()> {
        let client = kmip_client(
            &self.kmip_endpoint,
            secrets,
            "provisioner",
            crate::kmip::DEFAULT_TIMEOUT,
        )?;
        client.destroy_key(&self.kmip_key_id).await?;
        let (_, file) = erase_marker(service, name)?;
        service.backend().remove_file(&file).await?;
        tracing::info!(volume_id = %self.volume_id, kmip_key_id = %self.kmip_key_id,
            "volume key destroyed");
        Ok(())
    }
}

impl PendingErase {
    /// Records, before a volume goes into the trash, that its key is to be destroyed once
    /// no share record (live in any state, or in the trash) names it any more: that is once
    /// the trash is purged, by whoever purges it (the controller, `lustrekit share trash
    /// purge`, `ensure`). A volume restored from the trash names its key again, so the key
    /// stays with it. One marker per key (`trashed-<project>-<key id>`), so trashing two
    /// volumes of one name keeps both.
    pub async fn record_for_trash(
        &self,
        service: &ShareService,
        project: lustre_model::ProjectId,
    ) -> Result<()> {
        let id: String = self
            .kmip_key_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(128)
            .collect();
        let dir = erase_dir(service)?;
        let file = dir.join(&ShareName::new(&format!("trashed-{project}-{id}"))?);
        service.backend().ensure_dir(&dir).await?;
        service
            .backend()
            .write_file(&file, self.text().as_bytes())
            .await?;
        Ok(())
    }

    fn named_by(&self, record: &std::collections::BTreeMap<String, String>) -> bool {
        record.get(labels::KMIP_KEY_ID) == Some(&self.kmip_key_id)
            && record.get(labels::KMIP_ENDPOINT) == Some(&self.kmip_endpoint)
    }
}

/// Whether any share record, live in any state or in the trash, names key `key_id` of
/// `endpoint`: while one does, data under that key may exist, and the key stays.
pub async fn key_in_use(service: &ShareService, endpoint: &str, key_id: &str) -> Result<bool> {
    let key = PendingErase {
        volume_id: String::new(),
        kmip_endpoint: endpoint.into(),
        kmip_key_id: key_id.into(),
    };
    Ok(service
        .all_record_labels()
        .await?
        .iter()
        .any(|l| key.named_by(l)))
}

/// What one round of [`erase_unused_keys`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EraseRound {
    /// KMIP IDs of the keys destroyed (their data was gone).
    pub destroyed: Vec<String>,
    /// Keys recorded for erase that a share (live or trashed) still names.
    pub in_use: usize,
    /// Keys whose data is gone that could not be destroyed this round (no credentials, or
    /// the key server failed); they stay recorded.
    pub left: Vec<String>,
}

/// Destroys every key recorded for erase (see [`PendingErase`]) that no share record names
/// any more, with the controller's own `credentials`, and forgets it: the crypto-erase of
/// purged trash, and of a DeleteVolume whose key server failed. Without credentials the
/// keys are only counted. If any record cannot be read nothing is destroyed.
pub async fn erase_unused_keys(
    service: &ShareService,
    credentials: Option<&KmipCredentials>,
) -> Result<EraseRound> {
    let dir = erase_dir(service)?;
    let files = service.backend().list_dir(&dir).await?;
    let mut round = EraseRound::default();
    if files.is_empty() {
        return Ok(round);
    }
    let in_use = service.all_record_labels().await?;
    for file in files {
        let Ok(name) = ShareName::new(&file) else {
            continue;
        };
        let path = dir.join(&name);
        let Some(bytes) = service.backend().read_file(&path).await? else {
            continue;
        };
        let Some(erase) = PendingErase::parse(&String::from_utf8_lossy(&bytes)) else {
            tracing::warn!(marker = %path.as_str(), "skipping an unreadable key-erase record");
            continue;
        };
        if in_use.iter().any(|l| erase.named_by(l)) {
            round.in_use += 1;
            continue;
        }
        let Some(credentials) = credentials else {
            round.left.push(erase.kmip_key_id);
            continue;
        };
        let destroyed = match KmipClient::new(
            &erase.kmip_endpoint,
            credentials,
            crate::kmip::DEFAULT_TIMEOUT,
        ) {
            Ok(client) => client.destroy_key(&erase.kmip_key_id).await,
            Err(e) => Err(e),
        };
        match destroyed {
            Ok(()) => {
                service.backend().remove_file(&path).await?;
                tracing::info!(volume_id = %erase.volume_id, endpoint = %erase.kmip_endpoint,
                    kmip_key_id = %erase.kmip_key_id, "key of a purged volume destroyed");
                round.destroyed.push(erase.kmip_key_id);
            }
            Err(e) => {
                tracing::warn!(volume_id = %erase.volume_id, kmip_key_id = %erase.kmip_key_id,
                    error = %e, "could not destroy the key of a purged volume; retrying later");
                round.left.push(erase.kmip_key_id);
            }
        }
    }
    Ok(round)
}

/// How often the controller looks for keys whose data is gone (the trash purge's rhythm).
pub const ERASE_EVERY: Duration = crate::server::TRASH_PURGE_INTERVAL;

/// The controller's crypto-erase loop: every `every`, [`erase_unused_keys`] with the
/// credentials read afresh from `credentials_dir` (none: the keys waiting are reported).
/// One task; a failed round is logged and tried again at the next.
pub async fn keep_erasing(
    service: Arc<ShareService>,
    credentials_dir: Option<PathBuf>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let credentials = match &credentials_dir {
            Some(dir) => match credentials_from_dir(dir).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the controller's KMIP credentials");
                    None
                }
            },
            None => None,
        };
        match erase_unused_keys(&service, credentials.as_ref()).await {
            Ok(round) if !round.left.is_empty() => tracing::warn!(
                keys = ?round.left,
                credentials = credentials.is_some(),
                "keys of purged volumes wait in the key server to be destroyed (give the \
                 controller --kmip-credentials-dir)"
            ),
            Ok(round) if !round.destroyed.is_empty() => {
                tracing::info!(keys = ?round.destroyed, "keys of purged volumes destroyed")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "key erase round failed; retrying later"),
        }
    }
}

/// How long undoing a failed CreateVolume (its half-made share, then its key) may take.
pub const UNDO_TIMEOUT: Duration = Duration::from_secs(30);

/// The key a CreateVolume made or found, and what to undo if the call goes no further: the
/// share this call made (purged first) and then the key, unless a share record names it
/// (one made by an earlier call that finished, or one in the trash). Undone in place by
/// [`undo`](Self::undo) on an error, or by a task when the call is dropped (its deadline
/// passed): that task keeps the call's in-flight claims, so a retry waits (ABORTED) until
/// it is done.
pub struct CreateUndo {
    service: Arc<ShareService>,
    client: KmipClient,
    key_id: String,
    request_name: String,
    share: Option<ShareName>,
    claims: Option<crate::inflight::Guard>,
}

impl CreateUndo {
    pub fn new(
        service: Arc<ShareService>,
        client: KmipClient,
        key_id: String,
        request_name: String,
        claims: crate::inflight::Guard,
    ) -> Self {
        Self {
            service,
            client,
            key_id,
            request_name,
            share: None,
            claims: Some(claims),
        }
    }

    /// This call makes (or finishes) share `name` for the volume: undo purges it if its
    /// record is this request's and names this key (so never a share made for another).
    pub fn share_made(&mut self, name: ShareName) {
        self.share = Some(name);
    }

    /// The volume is complete: nothing is undone (the claims go with `self`).
    pub fn keep(mut self) {
        self.key_id.clear();
    }

    /// Undoes what the call made, bounded by [`UNDO_TIMEOUT`], and returns `error` with a
    /// note if the key could not be destroyed (its KMIP ID only). The undo runs as a task
    /// holding the claims, so a call dropped meanwhile (its deadline) does not cut it short.
    pub async fn undo(mut self, error: CsiError) -> CsiError {
        let work = self.work();
        let claims = self.claims.take();
        self.key_id.clear();
        let task = tokio::spawn(async move {
            let _claims = claims;
            work.run().await
        });
        let note = match task.await {
            Ok(Ok(())) => return error,
            Ok(Err(note)) => note,
            Err(e) => format!("undoing what it made failed: {e}"),
        };
        CsiError::Noted {
            source: Box::new(error),
            note,
        }
    }

    fn work(&mut self) -> UndoWork {
        UndoWork {
            service: Arc::clone(&self.service),
            client: self.client.clone(),
            key_id: self.key_id.clone(),
            request_name: self.request_name.clone(),
            share: self.share.take(),
        }
    }
}

impl Drop for CreateUndo {
    fn drop(&mut self) {
        if self.key_id.is_empty() {
            return;
        }
        let work = self.work();
        let claims = self.claims.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _claims = claims;
                    let _ = work.run().await;
                });
            }
            Err(_) => tracing::warn!(kmip_key_id = %work.key_id,
                "a dropped CreateVolume could not undo its key: no runtime"),
        }
    }
}

struct UndoWork {
    service: Arc<ShareService>,
    client: KmipClient,
    key_id: String,
    request_name: String,
    share: Option<ShareName>,
}

impl UndoWork {
    /// Purges the share, then destroys the key unless a record names it. `Err` says what
    /// was left, naming the key by its KMIP ID.
    async fn run(self) -> std::result::Result<(), String> {
        let endpoint = self.client.endpoint().to_string();
        let key_id = self.key_id.clone();
        let left = |why: String| {
            tracing::warn!(endpoint = %endpoint, kmip_key_id = %key_id, reason = %why,
                "the key of a failed CreateVolume is left in the key server");
            format!("its key {key_id} at KMIP server {endpoint} is left there: {why}")
        };
        let work = async {
            let ours = |share: &share::Share| {
                share.labels.get(crate::params::labels::REQUEST_NAME) == Some(&self.request_name)
                    && share.labels.get(labels::KMIP_KEY_ID) == Some(&self.key_id)
            };
            let made = match &self.share {
                Some(name) => self
                    .service
                    .find(name)
                    .await
                    .map_err(|e| format!("cannot read its share {name}: {e}"))?
                    .filter(ours)
                    .map(|_| name),
                None => None,
            };
            if let Some(name) = made {
                self.service
                    .delete(name, DeleteMode::Purge)
                    .await
                    .map_err(|e| format!("its share {name} could not be removed: {e}"))?;
                tracing::info!(share = %name, "the share of a failed CreateVolume removed");
            }
            let used = key_in_use(&self.service, self.client.endpoint(), &self.key_id)
                .await
                .map_err(|e| format!("cannot tell whether a share uses it: {e}"))?;
            if used {
                // A share (finished by an earlier call, or in the trash) holds data under it.
                return Ok(());
            }
            self.client
                .destroy_key(&self.key_id)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(endpoint = %self.client.endpoint(), kmip_key_id = %self.key_id,
                "the key of a failed CreateVolume destroyed");
            Ok(())
        };
        match tokio::time::timeout(UNDO_TIMEOUT, work).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(left(why)),
            Err(_) => Err(left(format!("undo took longer than {UNDO_TIMEOUT:?}"))),
        }
    }
}

const HOLD_PREFIX: &str = "fscrypt-key ";

pub fn hold_name(identifier: &KeyIdentifier) -> String {
    format!("{HOLD_PREFIX}{identifier}")
}

/// The key identifier a hold names, if it is a key's hold.
pub fn held_key(hold: &str) -> Option<KeyIdentifier> {
    KeyIdentifier::from_hex(hold.strip_prefix(HOLD_PREFIX)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encrypted_volume_on_a_shared_client_mount_is_a_bind_volume() {
        use backend::MountMode;
        let err = check_mount_mode(true, MountMode::Direct).expect_err("direct");
        assert!(err.to_string().contains("needs mountMode=bind"), "{err}");
        check_mount_mode(true, MountMode::Bind).expect("bind");
        // `local` mounts are all bind mounts of its root: either mode is fine.
        check_mount_mode(false, MountMode::Direct).expect("local");
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parameters_parse_and_bad_ones_are_refused_by_name() {
        assert_eq!(EncryptionParams::parse(&params(&[]), None).unwrap(), None);
        let p = EncryptionParams::parse(
            &params(&[
                ("encryption", "fscrypt"),
                ("kmipEndpoint", "kms.example:5696"),
            ]),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(p.kmip_endpoint, "kms.example:5696");
        for (bad, named) in [
            (vec![("encryption", "luks")], "encryption"),
            (vec![("encryption", "fscrypt")], "kmipEndpoint"),
            (
                vec![("encryption", "fscrypt"), ("kmipEndpoint", "host")],
                "kmipEndpoint",
            ),
            (
                vec![("encryption", "fscrypt"), ("kmipEndpoint", "u:p@h:1")],
                "kmipEndpoint",
            ),
            (vec![("kmipEndpoint", "h:1")], "kmipEndpoint"),
        ] {
            let err = EncryptionParams::parse(&params(&bad), None).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(err.to_string().contains(named), "{bad:?}: {err}");
        }
    }

    #[test]
    fn an_encrypted_volume_imports_nothing() {
        let p = params(&[
            ("encryption", "fscrypt"),
            ("kmipEndpoint", "kms.example:5696"),
            ("hsmStore", "file:///store"),
            ("hsmArchivePlaintext", "true"),
            ("hsmImportFrom", "/"),
        ]);
        let hsm = HsmParams::parse(&p).unwrap();
        let err = EncryptionParams::parse(&p, hsm.as_ref()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.to_string().contains("hsmImportFrom"), "{err}");
        let mut p = p;
        p.remove("hsmImportFrom");
        let hsm = HsmParams::parse(&p).unwrap();
        assert!(EncryptionParams::parse(&p, hsm.as_ref()).unwrap().is_some());
    }

    #[test]
    fn context_round_trips_and_holds_name_the_key() {
        let id = KeyIdentifier([7; 16]);
        let p = EncryptionParams {
            kmip_endpoint: "h:1".into(),
        };
        let ctx: HashMap<String, String> = volume_context(&p, "42", &id).into_iter().collect();
        let node = NodeEncryption::from_context(&ctx).unwrap().unwrap();
        assert_eq!(node.identifier, id);
        assert_eq!(node.kmip_key_id, "42");
        assert_eq!(held_key(&node.hold_name()), Some(id));
        assert_eq!(held_key("llite.max_read_ahead_mb"), None);
        let mut partial = ctx.clone();
        partial.remove(context::ENCRYPTION);
        assert!(NodeEncryption::from_context(&partial).is_err());
        assert_eq!(NodeEncryption::from_context(&HashMap::new()).unwrap(), None);
    }

    #[test]
    fn missing_secrets_are_named_and_values_never_quoted() {
        let secrets = HashMap::from([(
            secret_keys::CLIENT_KEY.to_string(),
            "-----BEGIN PRIVATE KEY-----SECRETBYTES".to_string(),
        )]);
        let err = kmip_client("h:1", &secrets, "node publish", Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains(secret_keys::CLIENT_CERT), "{err}");
        assert!(!err.contains("SECRETBYTES"), "{err}");
    }
}
