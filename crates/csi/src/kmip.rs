//! Volume encryption keys in a KMIP server: create an AES-256 key per volume, fetch it, and
//! destroy it (crypto-erase). TLS 1.2+ with a client certificate, every call bounded by a
//! timeout; a server that cannot be reached is [`KmipError::Unavailable`].
//!
//! The messages are `kmip-protocol`'s (NLnet Labs, tested against PyKMIP): its request
//! types and TTLV (de)serializer, on the blocking pool, over a rustls stream we build (its
//! client module comes only with TLS features that pull older rustls or OpenSSL). We read
//! each response into a buffer that is zeroed when dropped, fetched keys go straight into a
//! [`SecretKey`] (locked, zeroed on drop), and the deserialized copy is zeroed too. No key byte reaches a log, an error or a metric: errors carry the
//! endpoint, the key's KMIP identifier and the server's message only.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use backend::fscrypt::SecretKey;
use kmip_protocol::types::common::{
    AttributeName, AttributeValue, CompromiseOccurrenceDate, CryptographicAlgorithm,
    CryptographicUsageMask, KeyCompressionType, KeyFormatType, KeyMaterial, ObjectType,
    RevocationReasonCode, State, UniqueIdentifier,
};
use kmip_protocol::types::request::{
    Attribute, KeyWrappingSpecification, RequestPayload, RevocationReason, TemplateAttribute,
};
use kmip_protocol::types::response::{
    ManagedObject, ResponseMessage, ResponsePayload, ResultReason, ResultStatus,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use zeroize::Zeroizing;

/// How long one KMIP call may take, connect to answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a KMIP call failed. Never carries key material or the client's private key.
#[derive(Debug, thiserror::Error)]
pub enum KmipError {
    /// The server could not be reached or dropped the connection: retry later.
    #[error("KMIP server {endpoint} is unavailable: {message}")]
    Unavailable { endpoint: String, message: String },
    /// The key is gone from the server (destroyed, or never there).
    #[error("KMIP server {endpoint}: key {key_id} does not exist (destroyed?)")]
    KeyNotFound { endpoint: String, key_id: String },
    /// The key exists but may not be used (revoked, compromised, not yet active).
    #[error(
        "KMIP server {endpoint}: key {key_id} is {state}, not active (revoked?); it is not used"
    )]
    KeyNotActive {
        endpoint: String,
        key_id: String,
        state: String,
    },
    /// The endpoint, certificates or key given to us are unusable.
    #[error("KMIP credentials for {endpoint}: {message}")]
    Credentials { endpoint: String, message: String },
    /// The TLS handshake failed (a certificate refused on either side).
    #[error("KMIP server {endpoint}: TLS: {message}")]
    Tls { endpoint: String, message: String },
    /// The server answered with a failure, or an answer we cannot use.
    #[error("KMIP server {endpoint}: {operation}: {message}")]
    Server {
        endpoint: String,
        operation: &'static str,
        message: String,
    },
}

/// The PEM files a Secret carries for a KMIP connection. `Debug` shows no key.
#[derive(Clone)]
pub struct KmipCredentials {
    pub client_cert_pem: Vec<u8>,
    pub client_key_pem: Zeroizing<Vec<u8>>,
    pub ca_pem: Vec<u8>,
}

impl std::fmt::Debug for KmipCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KmipCredentials { .. }")
    }
}

/// A volume key's KMIP identifier, and whether the call that returned it made the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeKeyId {
    pub id: String,
    pub created: bool,
}

/// A KMIP server at `host:port` with a client certificate. Each call opens its own
/// connection (a publish fetches one key; nothing to keep open between them).
#[derive(Clone)]
pub struct KmipClient {
    endpoint: String,
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl std::fmt::Debug for KmipClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KmipClient({})", self.endpoint)
    }
}

impl KmipClient {
    pub fn new(
        endpoint: &str,
        credentials: &KmipCredentials,
        timeout: Duration,
    ) -> Result<Self, KmipError> {
        let bad = |message: String| KmipError::Credentials {
            endpoint: endpoint.to_string(),
            message,
        };
        let (host, port) = endpoint
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| bad("expected host:port".into()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&credentials.ca_pem) {
            let cert = cert.map_err(|e| bad(format!("CA certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad("no CA certificate".into()));
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&credentials.client_cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("client certificate: {e}")))?;
        if chain.is_empty() {
            return Err(bad("no client certificate".into()));
        }
        // The parser's message names the PEM section, never its bytes.
        let key = PrivateKeyDer::from_pem_slice(&credentials.client_key_pem)
            .map_err(|e| bad(format!("client key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad(format!("client certificate and key: {e}")))?;
        Ok(Self {
            endpoint: endpoint.to_string(),
            host: host.to_string(),
            port,
            tls: Arc::new(tls),
            timeout,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates an active AES-256 key named `name` (the volume it is for) and returns its
    /// KMIP identifier. A key of that name already active on the server is reused, so a
    /// retried CreateVolume makes no second key.
    pub async fn create_key(&self, name: &str) -> Result<String, KmipError> {
        Ok(self.find_or_create_key(name).await?.id)
    }

    /// [`create_key`](Self::create_key), saying whether this call made the key or found
    /// it by its name.
    pub async fn find_or_create_key(&self, name: &str) -> Result<VolumeKeyId, KmipError> {
        let name = name.to_string();
        self.call("create", move |c| {
            if let Some(id) = c.locate_active(&name)? {
                return Ok(VolumeKeyId { id, created: false });
            }
            let template = TemplateAttribute::unnamed(vec![
                Attribute::CryptographicAlgorithm(CryptographicAlgorithm::AES),
                Attribute::CryptographicLength(256),
                Attribute(
                    AttributeName("Cryptographic Usage Mask".into()),
                    None,
                    AttributeValue::Integer(
                        CryptographicUsageMask::Encrypt as i32
                            | CryptographicUsageMask::Decrypt as i32,
                    ),
                ),
                Attribute::Name(name.clone()),
            ]);
            let id = match c.request(
                "create",
                "",
                RequestPayload::Create(ObjectType::SymmetricKey, template),
            )? {
                ResponsePayload::Create(created) => created.unique_identifier.0,
                other => return Err(c.unexpected("create", &other)),
            };
            if let Err(error) = c.request(
                "activate",
                &id,
                RequestPayload::Activate(Some(UniqueIdentifier(id.clone()))),
            ) {
                // A key never activated serves no volume (a retry locates active keys
                // only): it goes now, while it can (a pre-active key may be destroyed).
                let destroy = RequestPayload::Destroy(Some(UniqueIdentifier(id.clone())));
                if let Err(e) = c.request("destroy", &id, destroy) {
                    tracing::warn!(endpoint = %c.endpoint, kmip_key_id = %id, error = %e,
                        "a key that could not be activated is left in the key server");
                }
                return Err(error);
            }
            Ok(VolumeKeyId { id, created: true })
        })
        .await
    }

    /// Fetches key `key_id`, which must be active: a revoked or destroyed key is an error,
    /// never used.
    pub async fn get_key(&self, key_id: &str) -> Result<SecretKey, KmipError> {
        let key_id = key_id.to_string();
        self.call("get", move |c| {
            match c.state(&key_id)? {
                State::Active => {}
                other => {
                    return Err(KmipError::KeyNotActive {
                        endpoint: c.endpoint.clone(),
                        key_id,
                        state: format!("{other:?}"),
                    });
                }
            }
            let payload = RequestPayload::Get(
                Some(UniqueIdentifier(key_id.clone())),
                Option::<KeyFormatType>::None,
                Option::<KeyCompressionType>::None,
                Option::<KeyWrappingSpecification>::None,
            );
            let mut answer = c.request("get", &key_id, payload)?;
            let ResponsePayload::Get(got) = &mut answer else {
                return Err(c.unexpected("get", &answer));
            };
            let ManagedObject::SymmetricKey(key) = &mut got.cryptographic_object else {
                return Err(c.server("get", format!("{key_id} is not a symmetric key")));
            };
            let KeyMaterial::Bytes(bytes) = &mut key.key_block.key_value.key_material else {
                return Err(c.server("get", format!("{key_id}: not raw key bytes")));
            };
            SecretKey::take_from(bytes).map_err(|e| c.server("get", format!("{key_id}: {e}")))
        })
        .await
    }

    /// Revokes key `key_id` (it can no longer be fetched), leaving it on the server.
    pub async fn revoke_key(&self, key_id: &str) -> Result<(), KmipError> {
        let key_id = key_id.to_string();
        self.call("revoke", move |c| c.revoke(&key_id)).await
    }

    /// Destroys key `key_id`: whatever it encrypted is unreadable for good. Revokes it first
    /// where it is still active (servers refuse to destroy an active key). A key already
    /// gone is success.
    pub async fn destroy_key(&self, key_id: &str) -> Result<(), KmipError> {
        let key_id = key_id.to_string();
        self.call("destroy", move |c| {
            match c.state(&key_id) {
                Ok(State::Active) => c.revoke(&key_id)?,
                Ok(_) => {}
                Err(KmipError::KeyNotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
            let payload = RequestPayload::Destroy(Some(UniqueIdentifier(key_id.clone())));
            match c.request("destroy", &key_id, payload) {
                Ok(_) | Err(KmipError::KeyNotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Runs `f` with a fresh connection on the blocking pool, bounded by the timeout.
    async fn call<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut Conn) -> Result<T, KmipError> + Send + 'static,
    ) -> Result<T, KmipError> {
        let this = self.clone();
        let unavailable = |message: String| KmipError::Unavailable {
            endpoint: self.endpoint.clone(),
            message,
        };
        let work = tokio::task::spawn_blocking(move || {
            let stream = this.connect()?;
            f(&mut Conn {
                endpoint: this.endpoint.clone(),
                stream,
            })
        });
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), work).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(unavailable(format!("{operation} task failed: {join}"))),
            Err(_) => Err(unavailable(format!(
                "{operation} got no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// TCP with timeouts, then the TLS handshake done here so its failures are told apart
    /// from an unreachable server.
    fn connect(&self) -> Result<TlsStream, KmipError> {
        let unavailable = |message: String| KmipError::Unavailable {
            endpoint: self.endpoint.clone(),
            message,
        };
        let addrs: Vec<_> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| unavailable(format!("resolving {}: {e}", self.host)))?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut tcp = tcp.ok_or_else(|| {
            unavailable(match last {
                Some(e) => format!("connect: {e}"),
                None => format!("{} resolves to no address", self.host),
            })
        })?;
        tcp.set_read_timeout(Some(self.timeout))
            .and_then(|()| tcp.set_write_timeout(Some(self.timeout)))
            .map_err(|e| unavailable(format!("socket: {e}")))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| KmipError::Credentials {
            endpoint: self.endpoint.clone(),
            message: format!("server name {:?}: {e}", self.host),
        })?;
        let mut conn = rustls::ClientConnection::new(Arc::clone(&self.tls), name).map_err(|e| {
            KmipError::Tls {
                endpoint: self.endpoint.clone(),
                message: e.to_string(),
            }
        })?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut tcp) {
                return Err(
                    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                        Some(tls) => KmipError::Tls {
                            endpoint: self.endpoint.clone(),
                            message: tls.to_string(),
                        },
                        None => unavailable(format!("TLS handshake: {e}")),
                    },
                );
            }
        }
        Ok(rustls::StreamOwned::new(conn, tcp))
    }
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// The largest response we read (a key, a list of identifiers: far less).
const MAX_RESPONSE: usize = 1 << 20;

/// One connection's requests, in order.
struct Conn {
    endpoint: String,
    stream: TlsStream,
}

impl Conn {
    fn unavailable(&self, operation: &str, e: impl std::fmt::Display) -> KmipError {
        KmipError::Unavailable {
            endpoint: self.endpoint.clone(),
            message: format!("{operation}: {e}"),
        }
    }

    /// Sends one request and reads its one answer. `key_id` names the key in errors.
    fn request(
        &mut self,
        operation: &'static str,
        key_id: &str,
        payload: RequestPayload,
    ) -> Result<ResponsePayload, KmipError> {
        let bytes = kmip_protocol::request::to_vec(payload, None)
            .map_err(|e| self.server(operation, format!("encoding the request: {e}")))?;
        self.stream
            .write_all(&bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|e| self.unavailable(operation, e))?;
        // TTLV: a 3-byte tag, a type byte, a 4-byte big-endian length, then the value.
        let mut head = [0u8; 8];
        self.stream
            .read_exact(&mut head)
            .map_err(|e| self.unavailable(operation, e))?;
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if len > MAX_RESPONSE {
            return Err(self.server(operation, format!("a response of {len} bytes")));
        }
        let mut message = Zeroizing::new(vec![0u8; 8 + len]);
        message[..8].copy_from_slice(&head);
        self.stream
            .read_exact(&mut message[8..])
            .map_err(|e| self.unavailable(operation, e))?;
        let response: ResponseMessage = kmip_protocol::response::from_slice(&message)
            .map_err(|e| self.server(operation, format!("decoding the response: {e}")))?;
        let Some(mut item) = response.batch_items.into_iter().next() else {
            return Err(self.server(operation, "an empty response".into()));
        };
        match item.result_status {
            ResultStatus::Success => item
                .payload
                .take()
                .ok_or_else(|| self.server(operation, "a response without a payload".into())),
            _ if matches!(item.result_reason, Some(ResultReason::ItemNotFound)) => {
                Err(KmipError::KeyNotFound {
                    endpoint: self.endpoint.clone(),
                    key_id: key_id.to_string(),
                })
            }
            status => Err(self.server(
                operation,
                format!(
                    "{key_id}: {status:?} ({:?}): {}",
                    item.result_reason,
                    item.result_message.unwrap_or_default()
                ),
            )),
        }
    }

    fn revoke(&mut self, key_id: &str) -> Result<(), KmipError> {
        let payload = RequestPayload::Revoke(
            Some(UniqueIdentifier(key_id.to_string())),
            RevocationReason(RevocationReasonCode::CessationOfOperation, None),
            Option::<CompromiseOccurrenceDate>::None,
        );
        self.request("revoke", key_id, payload).map(drop)
    }

    fn server(&self, operation: &'static str, message: String) -> KmipError {
        KmipError::Server {
            endpoint: self.endpoint.clone(),
            operation,
            message,
        }
    }

    fn unexpected(&self, operation: &'static str, payload: &ResponsePayload) -> KmipError {
        // Only the payload's kind: a Get payload would hold key bytes.
        let kind = match payload {
            ResponsePayload::Get(_) => "Get".to_string(),
            other => format!("{:?}", std::mem::discriminant(other)),
        };
        self.server(operation, format!("unexpected answer {kind}"))
    }

    /// The state of key `key_id`.
    fn state(&mut self, key_id: &str) -> Result<State, KmipError> {
        let payload = RequestPayload::GetAttributes(
            Some(UniqueIdentifier(key_id.to_string())),
            Some(vec![AttributeName("State".into())]),
        );
        let answer = self.request("get attributes", key_id, payload)?;
        let ResponsePayload::GetAttributes(attrs) = answer else {
            return Err(self.unexpected("get attributes", &answer));
        };
        attrs
            .attributes
            .unwrap_or_default()
            .into_iter()
            .find_map(|a| match a.value {
                AttributeValue::State(state) => Some(state),
                _ => None,
            })
            .ok_or_else(|| self.server("get attributes", format!("{key_id}: no State")))
    }

    /// An active key named `name`, if the server has one.
    fn locate_active(&mut self, name: &str) -> Result<Option<String>, KmipError> {
        let answer = self.request(
            "locate",
            "",
            RequestPayload::Locate(vec![Attribute::Name(name.to_string())]),
        )?;
        let ResponsePayload::Locate(found) = answer else {
            return Err(self.unexpected("locate", &answer));
        };
        for id in found.unique_identifiers {
            if self.state(&id.0)? == State::Active {
                return Ok(Some(id.0));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_credentials_are_refused_without_echoing_them() {
        let creds = KmipCredentials {
            client_cert_pem: b"not a cert".to_vec(),
            client_key_pem: Zeroizing::new(b"TOP-SECRET-KEY".to_vec()),
            ca_pem: b"nope".to_vec(),
        };
        assert_eq!(format!("{creds:?}"), "KmipCredentials { .. }");
        for endpoint in ["nohost", "host:notaport", ":5696"] {
            let err = KmipClient::new(endpoint, &creds, DEFAULT_TIMEOUT).unwrap_err();
            assert!(matches!(err, KmipError::Credentials { .. }), "{err}");
        }
        let err = KmipClient::new("127.0.0.1:5696", &creds, DEFAULT_TIMEOUT).unwrap_err();
        assert!(err.to_string().contains("CA certificate"), "{err}");
        assert!(!err.to_string().contains("TOP-SECRET"), "{err}");
    }
}
