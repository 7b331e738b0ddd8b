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
//! destroys the key after the data is gone; a trashed or retained volume keeps it.

use std::collections::HashMap;
use std::time::Duration;

use backend::fscrypt::KeyIdentifier;
use lustre_model::{RelPath, ShareName};
use share::ShareService;
use zeroize::Zeroizing;

use crate::error::{CsiError, Result};
use crate::kmip::{KmipClient, KmipCredentials};
use crate::params::{HsmParams, keys};

/// The only scheme there is.
pub const FSCRYPT: &str = "fscrypt";

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

/// The KMIP client for `endpoint` with the PEM files of a request's `secrets`. A missing
/// key is named; no value is ever quoted.
pub fn kmip_client(
    endpoint: &str,
    secrets: &HashMap<String, String>,
    which: &str,
    timeout: Duration,
) -> Result<KmipClient> {
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
    let credentials = KmipCredentials {
        client_cert_pem: get(secret_keys::CLIENT_CERT)?,
        client_key_pem: Zeroizing::new(get(secret_keys::CLIENT_KEY)?),
        ca_pem: get(secret_keys::CA_CERT)?,
    };
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
    let dir = service
        .settings()
        .prefix
        .join(&ShareName::new(share::META_DIR)?)
        .join(&ShareName::new("kmip-erase")?);
    let file = dir.join(name);
    Ok((dir, file))
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
