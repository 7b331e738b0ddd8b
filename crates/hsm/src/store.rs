//! The archive store: an `object_store` backend chosen by a URL-like spec, plus what the
//! mover needs on top (metadata on every store, streaming uploads, ranged reads).
//!
//! Specs:
//! - `file:///abs/dir` (or a plain absolute path): a local directory, the embedded default;
//! - `s3://bucket[/prefix]?endpoint=http://127.0.0.1:3900&region=garage&access_key_id=..&secret_access_key=..`;
//! - `az://container[/prefix]?use_emulator=true` or `?account_name=..&access_key=..&endpoint=..`;
//! - `gs://bucket[/prefix]?service_account=..`.
//!
//! Query keys are the `object_store` builder config keys (`AmazonS3ConfigKey`,
//! `AzureConfigKey`, `GoogleConfigKey`), and the builders also read the usual environment
//! variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`). An `http://` endpoint allows plain HTTP.
//!
//! The local directory store cannot hold object metadata, so there the metadata of `key`
//! lives in a sidecar object `.lustrekit-meta/<key>.meta` (JSON) at the store root, which
//! listings skip. Cloud stores keep it in the object's own user metadata.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::{Path as ObjPath, PathPart};
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, GetOptions, ObjectMeta,
    ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};
use serde::{Deserialize, Serialize};

use crate::error::{HsmError, Result};
use crate::meta::MetaMap;

// The store's reserved roots: objects of its own below them, never a file's archived copy
// (`ArchiveStore::rel_of` skips them, so import and export never see them).

/// The sidecar tree of stores without native metadata, at the store root.
pub const SIDECAR_ROOT: &str = ".lustrekit-meta";
/// Where the copytool keeps `fid → key` records, at the store root.
pub const FID_INDEX_ROOT: &str = ".lustrekit-fid";
/// Where versions a stub may still pin are copied before their key is overwritten, under
/// the store prefix: `<prefix>/.lustrekit-versions/<version ID>` (see [`crate::pin`]).
pub const VERSIONS_ROOT: &str = ".lustrekit-versions";

/// How the store client retries failed requests (connection refused, 5xx, timeouts).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Give up on one request after this long, whatever the retry count.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            timeout: Duration::from_secs(180),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// What a HEAD tells about an object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub size: u64,
    pub last_modified_ns: i64,
    pub e_tag: Option<String>,
    pub meta: MetaMap,
}

impl ObjectInfo {
    /// The version ID of this object at `key`: ours from its metadata, else one derived
    /// from what identifies the write.
    pub fn version_id(&self, key: &ObjPath) -> String {
        match self.meta.get(crate::pin::K_VERSION) {
            Some(v) if crate::pin::valid_version(v) => v.clone(),
            _ => crate::pin::foreign_version_id(
                key.as_ref(),
                self.e_tag.as_deref(),
                self.size,
                self.last_modified_ns,
            ),
        }
    }
}

/// Where a pinned version was found.
#[derive(Debug, Clone)]
pub struct PinnedSource {
    pub key: ObjPath,
    pub info: ObjectInfo,
    /// The ETag every ranged GET must still match (`None`: the checksum alone decides).
    pub if_match: Option<String>,
    /// False when neither the pinned key nor the copy aside holds the pinned version, and
    /// the key's current object is tried anyway (the pinned checksum then decides).
    pub exact: bool,
}

/// What [`ArchiveStore::preserve`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Preserved {
    /// Requests made (HEADs and copies).
    pub requests: u32,
    /// Whether a version was copied aside.
    pub copied: bool,
}

/// An archive store with its prefix.
#[derive(Debug, Clone)]
pub struct ArchiveStore {
    inner: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    name: String,
    native_metadata: bool,
    /// Whether a create-only PUT is known to be refused on a taken key here (so
    /// [`put_keeping`](Self::put_keeping) can skip the HEAD). Not trusted for S3-compatible
    /// stores unless the spec asks for it: some ignore `If-None-Match` and overwrite.
    create_only_put: bool,
}

fn spec_err(spec: &str, why: impl ToString) -> HsmError {
    HsmError::StoreSpec {
        spec: redact(spec),
        why: why.to_string(),
    }
}

/// `message` with every one of `secrets` in it (values of at least 4 bytes) replaced by
/// `<redacted>`: a store client's error may quote a request, and a SAS token rides in its URL.
/// Longest first, so a value that contains another is replaced whole.
pub fn scrub<'a>(message: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut values: Vec<&str> = secrets.into_iter().filter(|v| v.len() >= 4).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = message.to_string();
    for value in values {
        out = out.replace(value, "<redacted>");
    }
    out
}

/// The spec without its query (which may hold keys).
fn redact(spec: &str) -> String {
    spec.split('?').next().unwrap_or(spec).to_string()
}

fn parse_prefix(spec: &str, p: &str) -> Result<ObjPath> {
    let p = p.trim_matches('/');
    if p.is_empty() {
        return Ok(ObjPath::default());
    }
    ObjPath::parse(p).map_err(|e| spec_err(spec, e))
}

impl ArchiveStore {
    /// Opens the store a spec names; see the module doc.
    pub fn open(spec: &str, retry: &RetryPolicy) -> Result<Self> {
        Self::open_with(spec, retry, &[])
    }

    /// [`open`](Self::open) with more configuration for the cloud store's builder, applied
    /// after the spec's own query: credentials kept out of the spec (a Kubernetes Secret's
    /// keys, such as `azure_storage_account_key` or `aws_secret_access_key`). Their values
    /// never reach a name, a log or an error; an unknown key is refused by name.
    pub fn open_with(
        spec: &str,
        retry: &RetryPolicy,
        options: &[(String, String)],
    ) -> Result<Self> {
        let spec = spec.trim();
        let local = spec.starts_with('/') || spec.starts_with("file:");
        if local && !options.is_empty() {
            return Err(spec_err(
                spec,
                "a local store takes no options (were credentials meant for a cloud store?)",
            ));
        }
        if spec.starts_with('/') {
            return Self::local(spec, std::path::Path::new(spec));
        }
        let option_err = |key: &str, store: &str| {
            spec_err(
                spec,
                format!("option `{key}` is not one the {store} store knows"),
            )
        };
        let url = url::Url::parse(spec).map_err(|e| spec_err(spec, e))?;
        let retry_config = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: retry.initial_backoff,
                max_backoff: retry.max_backoff,
                base: 2.0,
            },
            max_retries: retry.max_retries,
            retry_timeout: retry.timeout,
        };
        let query: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let insecure = query
            .iter()
            .any(|(k, v)| k.contains("endpoint") && v.starts_with("http://"))
            || query
                .iter()
                .any(|(k, v)| k.contains("use_emulator") && v == "true");
        let client = ClientOptions::new()
            .with_allow_http(insecure)
            .with_connect_timeout(retry.connect_timeout)
            .with_timeout(retry.timeout);
        let bucket = url.host_str().unwrap_or_default().to_string();
        let prefix = parse_prefix(spec, url.path())?;
        let name = redact(spec);
        let inner: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|()| spec_err(spec, "not a local path"))?;
                return Self::local(spec, &dir);
            }
            "s3" | "s3a" => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_retry(retry_config)
                    .with_client_options(client);
                for (k, v) in &query {
                    let key = k.parse().map_err(|e| spec_err(spec, e))?;
                    b = b.with_config(key, v);
                }
                for (k, v) in options {
                    let key = k.parse().map_err(|_| option_err(k, "S3"))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build().map_err(|e| spec_err(spec, e))?)
            }
            "az" | "azure" | "abfs" => {
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_container_name(&bucket)
                    .with_retry(retry_config)
                    .with_client_options(client);
                for (k, v) in &query {
                    let key = k.parse().map_err(|e| spec_err(spec, e))?;
                    b = b.with_config(key, v);
                }
                for (k, v) in options {
                    let key = k.parse().map_err(|_| option_err(k, "Azure"))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build().map_err(|e| spec_err(spec, e))?)
            }
            "gs" | "gcs" => {
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&bucket)
                    .with_retry(retry_config)
                    .with_client_options(client);
                for (k, v) in &query {
                    let key = k.parse().map_err(|e| spec_err(spec, e))?;
                    b = b.with_config(key, v);
                }
                for (k, v) in options {
                    let key = k.parse().map_err(|_| option_err(k, "GCS"))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build().map_err(|e| spec_err(spec, e))?)
            }
            other => return Err(spec_err(spec, format!("unknown scheme `{other}`"))),
        };
        // S3-compatible servers differ: only an explicit `conditional_put=etag` in the spec
        // says this one refuses a create-only PUT on a taken key.
        let create_only_put = match url.scheme() {
            "s3" | "s3a" => query
                .iter()
                .any(|(k, v)| k.contains("conditional_put") && v.eq_ignore_ascii_case("etag")),
            _ => true,
        };
        Ok(Self {
            inner,
            prefix,
            name,
            native_metadata: true,
            create_only_put,
        })
    }

    fn local(spec: &str, dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| HsmError::io(dir, e))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| spec_err(spec, e))?
            .with_automatic_cleanup(true)
            // An archive is the only copy once its file is released: it must survive a
            // power cut, object and metadata sidecar alike.
            .with_fsync(true);
        Ok(Self {
            inner: Arc::new(store),
            prefix: ObjPath::default(),
            name: format!("file://{}", dir.display()),
            native_metadata: false,
            create_only_put: true,
        })
    }

    /// Wraps any `object_store` backend. `native_metadata` says whether it keeps user
    /// metadata (cloud stores do; the local filesystem does not).
    pub fn from_object_store(
        inner: Arc<dyn ObjectStore>,
        prefix: ObjPath,
        name: impl Into<String>,
        native_metadata: bool,
    ) -> Self {
        Self {
            inner,
            prefix,
            name: name.into(),
            native_metadata,
            create_only_put: false,
        }
    }

    /// Says that this store refuses a create-only PUT on a taken key (see
    /// [`put_keeping`](Self::put_keeping)); only for stores known to.
    pub fn with_create_only_put(mut self, honoured: bool) -> Self {
        self.create_only_put = honoured;
        self
    }

    /// The store's name for messages (no secrets).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn prefix(&self) -> &ObjPath {
        &self.prefix
    }

    /// The key of a path relative to the namespace root: `<prefix>/<components>`.
    pub fn key_for(&self, rel_components: &[&str]) -> ObjPath {
        let mut parts: Vec<PathPart<'static>> = self
            .prefix
            .parts()
            .map(|p| PathPart::from(p.as_ref().to_owned()))
            .collect();
        // `PathPart::from` escapes what object keys cannot hold, so no component can
        // become a delimiter or `..`.
        parts.extend(rel_components.iter().map(|c| PathPart::from(c.to_string())));
        ObjPath::from_iter(parts)
    }

    /// The components of `key` below the prefix, percent-decoded (the inverse of
    /// [`key_for`](Self::key_for)), or `None` when the key is not under the prefix or
    /// belongs to our sidecar tree. A segment that is not UTF-8 once decoded comes back
    /// as `Err` so the caller can report it.
    pub fn rel_of(&self, key: &ObjPath) -> Option<Vec<std::result::Result<String, String>>> {
        let s: &str = key.as_ref();
        for root in [SIDECAR_ROOT, FID_INDEX_ROOT] {
            if s == root || s.starts_with(&format!("{root}/")) {
                return None;
            }
        }
        let rest = if self.prefix.as_ref().is_empty() {
            s
        } else {
            s.strip_prefix(self.prefix.as_ref())?.strip_prefix('/')?
        };
        for root in [VERSIONS_ROOT, FID_INDEX_ROOT] {
            if rest == root || rest.starts_with(&format!("{root}/")) {
                return None;
            }
        }
        Some(
            rest.split('/')
                .map(|seg| {
                    percent_encoding::percent_decode_str(seg)
                        .decode_utf8()
                        .map(|c| c.into_owned())
                        .map_err(|_| seg.to_string())
                })
                .collect(),
        )
    }

    fn err(&self, op: &'static str, key: &ObjPath, source: object_store::Error) -> HsmError {
        HsmError::Store {
            store: self.name.clone(),
            op,
            key: key.to_string(),
            source: Box::new(source),
        }
    }

    fn sidecar(key: &ObjPath) -> ObjPath {
        // The key's segments are already valid; `parse` keeps them as they are.
        ObjPath::parse(format!("{SIDECAR_ROOT}/{key}.meta"))
            .unwrap_or_else(|_| ObjPath::from(SIDECAR_ROOT))
    }

    fn attributes(&self, meta: &MetaMap) -> Attributes {
        if !self.native_metadata {
            return Attributes::new();
        }
        meta.iter()
            .map(|(k, v)| {
                (
                    Attribute::Metadata(k.clone().into()),
                    AttributeValue::from(v.clone()),
                )
            })
            .collect()
    }

    async fn put_sidecar(&self, key: &ObjPath, meta: &MetaMap) -> Result<()> {
        if self.native_metadata {
            return Ok(());
        }
        let json = serde_json::to_vec(meta).map_err(|e| HsmError::Metadata {
            key: key.to_string(),
            field: "*".into(),
            why: e.to_string(),
        })?;
        let side = Self::sidecar(key);
        self.inner
            .put(&side, PutPayload::from(json))
            .await
            .map_err(|e| self.err("put", &side, e))?;
        Ok(())
    }

    /// Writes a whole small object with its metadata; returns its ETag when the store
    /// gives one.
    pub async fn put(&self, key: &ObjPath, data: Bytes, meta: &MetaMap) -> Result<Option<String>> {
        let opts = PutOptions {
            attributes: self.attributes(meta),
            ..Default::default()
        };
        let res = self
            .inner
            .put_opts(key, PutPayload::from(data), opts)
            .await
            .map_err(|e| self.err("put", key, e))?;
        self.put_sidecar(key, meta).await?;
        Ok(res.e_tag)
    }

    /// Writes a file's new version at `key` without losing the version there: first a
    /// create-only PUT where the store is known to refuse one on a taken key (Azure, GCS,
    /// the local store, S3 with `conditional_put=etag` in the spec), so the usual first
    /// archive costs no extra request; when the key is taken, or the store is not known to
    /// refuse (S3-compatible servers by default: some ignore `If-None-Match` and would
    /// overwrite), the version there is kept aside ([`preserve`](Self::preserve)) first.
    pub async fn put_keeping(
        &self,
        key: &ObjPath,
        data: Bytes,
        meta: &MetaMap,
        own_version: Option<&str>,
    ) -> Result<Option<String>> {
        if !self.create_only_put {
            self.preserve(key, own_version).await?;
            return self.put(key, data, meta).await;
        }
        let opts = PutOptions {
            mode: object_store::PutMode::Create,
            attributes: self.attributes(meta),
            ..Default::default()
        };
        match self
            .inner
            .put_opts(key, PutPayload::from(data.clone()), opts)
            .await
        {
            Ok(res) => {
                self.put_sidecar(key, meta).await?;
                return Ok(res.e_tag);
            }
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. },
            ) => {}
            Err(e) => return Err(self.err("put", key, e)),
        }
        self.preserve(key, own_version).await?;
        self.put(key, data, meta).await
    }

    /// Starts a multipart upload. Metadata that is only known at the end (the checksum) is
    /// a problem for stores that take it at the start, so the metadata here is the full
    /// set and the caller streams the content through [`Upload::write`].
    pub async fn start_upload(
        &self,
        key: &ObjPath,
        meta: &MetaMap,
        part_size: usize,
    ) -> Result<Upload> {
        let opts = PutMultipartOptions {
            attributes: self.attributes(meta),
            ..Default::default()
        };
        let up = self
            .inner
            .put_multipart_opts(key, opts)
            .await
            .map_err(|e| self.err("start multipart upload", key, e))?;
        Ok(Upload {
            writer: Some(WriteMultipart::new_with_chunk_size(up, part_size)),
            key: key.clone(),
        })
    }

    /// Finishes an upload: completes the multipart and writes the sidecar (local store);
    /// returns the ETag when the store gives one.
    pub async fn finish_upload(&self, mut up: Upload, meta: &MetaMap) -> Result<Option<String>> {
        let mut e_tag = None;
        if let Some(w) = up.writer.take() {
            e_tag = w
                .finish()
                .await
                .map_err(|e| self.err("complete multipart upload", &up.key, e))?
                .e_tag;
        }
        self.put_sidecar(&up.key, meta).await?;
        Ok(e_tag)
    }

    /// Replaces the metadata of an existing object (a server-side copy onto itself for
    /// cloud stores is not portable, so callers re-put small objects; for the local store
    /// only the sidecar changes).
    pub async fn head(&self, key: &ObjPath) -> Result<Option<ObjectInfo>> {
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        let res = match self.inner.get_opts(key, opts).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("head", key, e)),
        };
        let mut meta = MetaMap::new();
        for (k, v) in res.attributes.iter() {
            if let Attribute::Metadata(name) = k {
                meta.insert(name.to_string(), v.as_ref().to_string());
            }
        }
        if !self.native_metadata {
            meta = self.read_sidecar(key).await?.unwrap_or_default();
        }
        Ok(Some(ObjectInfo {
            size: res.meta.size,
            last_modified_ns: res.meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
            e_tag: res.meta.e_tag,
            meta,
        }))
    }

    async fn read_sidecar(&self, key: &ObjPath) -> Result<Option<MetaMap>> {
        let side = Self::sidecar(key);
        match self.inner.get(&side).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| self.err("get", &side, e))?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| HsmError::Metadata {
                        key: key.to_string(),
                        field: "sidecar".into(),
                        why: e.to_string(),
                    })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("get", &side, e)),
        }
    }

    /// Metadata of an entry that may have no data object (a directory on the local store).
    pub async fn sidecar_only(&self, key: &ObjPath) -> Result<Option<MetaMap>> {
        if self.native_metadata {
            return Ok(None);
        }
        self.read_sidecar(key).await
    }

    /// Whether directories need a data object (cloud: an empty blob with
    /// `hdi_isfolder=true`; local: the sidecar alone, since a file and a directory cannot
    /// share a name on disk).
    pub fn folder_blobs(&self) -> bool {
        self.native_metadata
    }

    /// Writes the metadata of a directory.
    pub async fn put_folder(&self, key: &ObjPath, meta: &MetaMap) -> Result<()> {
        if self.native_metadata {
            self.put(key, Bytes::new(), meta).await.map(drop)
        } else {
            self.put_sidecar(key, meta).await
        }
    }

    pub async fn get_range(&self, key: &ObjPath, range: Range<u64>) -> Result<Bytes> {
        self.inner
            .get_range(key, range)
            .await
            .map_err(|e| self.err("get", key, e))
    }

    /// A ranged GET that fails unless the object still has ETag `if_match` (when given):
    /// a version replaced mid-restore is never mixed into the data.
    pub async fn get_range_if(
        &self,
        key: &ObjPath,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        let Some(etag) = if_match else {
            return self.get_range(key, range).await;
        };
        let opts = GetOptions {
            range: Some(range.into()),
            if_match: Some(etag.to_string()),
            ..Default::default()
        };
        let res = self
            .inner
            .get_opts(key, opts)
            .await
            .map_err(|e| self.err("get", key, e))?;
        res.bytes().await.map_err(|e| self.err("get", key, e))
    }

    /// The key a version is kept at once copied aside.
    pub fn aside_key(&self, version: &str) -> ObjPath {
        self.key_for(&[VERSIONS_ROOT, version])
    }

    /// The key of a Lustre copytool's FID record, under the store prefix (filesystems that
    /// share a bucket have their own FIDs): `<prefix>/.lustrekit-fid/<name>`.
    pub fn fid_index_key(&self, name: &str) -> ObjPath {
        self.key_for(&[FID_INDEX_ROOT, name])
    }

    /// The root of the Lustre copytool's FID records.
    pub fn fid_index_root(&self) -> ObjPath {
        self.key_for(&[FID_INDEX_ROOT])
    }

    /// The root of the versions kept aside.
    pub fn versions_root(&self) -> ObjPath {
        self.key_for(&[VERSIONS_ROOT])
    }

    /// Before `key` is overwritten: copies the version it holds aside (object and
    /// metadata), unless it is `own_version`, the archiving file's own previous version,
    /// which no other stub pins. A version already aside is not copied again.
    pub async fn preserve(&self, key: &ObjPath, own_version: Option<&str>) -> Result<Preserved> {
        let mut done = Preserved {
            requests: 1,
            copied: false,
        };
        let Some(info) = self.head(key).await? else {
            return Ok(done);
        };
        // Only file objects hold a stub's data; directory and symlink objects are never
        // pinned.
        if crate::meta::FileMeta::from_map(&info.meta, 0, 0, 0).kind != crate::meta::EntryKind::File
        {
            return Ok(done);
        }
        let version = info.version_id(key);
        if own_version == Some(version.as_str()) {
            return Ok(done);
        }
        let aside = self.aside_key(&version);
        done.requests += 1;
        let opts = object_store::CopyOptions {
            mode: object_store::CopyMode::Create,
            ..Default::default()
        };
        match self.inner.copy_opts(key, &aside, opts).await {
            Ok(()) => done.copied = true,
            Err(object_store::Error::AlreadyExists { .. }) => return Ok(done),
            // Stores without create-only copies: look, then copy.
            Err(
                object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. },
            ) => {
                done.requests += 1;
                if self.head(&aside).await?.is_none() {
                    self.inner
                        .copy(key, &aside)
                        .await
                        .map_err(|e| self.err("copy", key, e))?;
                    done.copied = true;
                }
            }
            Err(e) => return Err(self.err("copy", key, e)),
        }
        if !self.native_metadata {
            let mut meta = info.meta.clone();
            meta.insert(crate::pin::K_VERSION.into(), version);
            self.put_sidecar(&aside, &meta).await?;
        }
        tracing::info!(key = %key, aside = %aside, "kept the version a stub may pin");
        Ok(done)
    }

    /// Finds the version `pin` names: at its key while the ETag (or our version ID) still
    /// matches, else in the copy aside, else (not exact) whatever the key holds now, for
    /// the pinned checksum to judge.
    pub async fn locate_pinned(&self, pin: &crate::pin::Pin) -> Result<PinnedSource> {
        let key = pin.object_key()?;
        let at_key = self.head(&key).await?;
        if let Some(info) = &at_key {
            let same = match (&pin.etag, &info.e_tag) {
                (Some(want), Some(have)) => want == have,
                _ => info.version_id(&key) == pin.version,
            };
            if same {
                return Ok(PinnedSource {
                    if_match: pin.etag.clone(),
                    key,
                    info: info.clone(),
                    exact: true,
                });
            }
        }
        let aside = self.aside_key(&pin.version);
        if let Some(info) = self.head(&aside).await? {
            return Ok(PinnedSource {
                if_match: info.e_tag.clone(),
                key: aside,
                info,
                exact: true,
            });
        }
        match at_key {
            Some(info) => Ok(PinnedSource {
                key,
                info,
                if_match: None,
                exact: false,
            }),
            None => Err(HsmError::NoArchive {
                store: self.name.clone(),
                key: pin.key.clone(),
            }),
        }
    }

    /// Deletes an object and its sidecar; absent is fine.
    pub async fn delete(&self, key: &ObjPath) -> Result<()> {
        for k in [key.clone(), Self::sidecar(key)] {
            if k != *key && self.native_metadata {
                continue;
            }
            match self.inner.delete(&k).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err("delete", &k, e)),
            }
        }
        Ok(())
    }

    /// Whether the store answers and lets us in: one listing request under the prefix.
    /// A tree copy checks this first, so a wrong key or an unreachable store is one clear
    /// error rather than one per file.
    pub async fn check_access(&self) -> Result<()> {
        let key = self.prefix.clone();
        self.inner
            .list_with_delimiter(if key.as_ref().is_empty() {
                None
            } else {
                Some(&key)
            })
            .await
            .map(|_| ())
            .map_err(|e| self.err("list", &key, e))
    }

    /// Every object under `prefix` (the store prefix when `None`), sidecars excluded.
    pub fn list(&self, prefix: Option<&ObjPath>) -> BoxStream<'static, Result<ObjectMeta>> {
        let prefix = prefix.cloned().unwrap_or_else(|| self.prefix.clone());
        let name = self.name.clone();
        let p = prefix.clone();
        self.inner
            .list(if prefix.as_ref().is_empty() {
                None
            } else {
                Some(&prefix)
            })
            .filter_map(move |r| {
                let name = name.clone();
                let p = p.clone();
                async move {
                    match r {
                        Ok(m) => {
                            let s: &str = m.location.as_ref();
                            if s.starts_with(&format!("{SIDECAR_ROOT}/")) {
                                None
                            } else {
                                Some(Ok(m))
                            }
                        }
                        Err(e) => Some(Err(HsmError::Store {
                            store: name,
                            op: "list",
                            key: p.to_string(),
                            source: Box::new(e),
                        })),
                    }
                }
            })
            .boxed()
    }

    /// Keys that have a sidecar (local store), below `under` (a key, path segment by
    /// path segment) or all of them: the sidecar tree below that key alone is listed.
    pub fn list_sidecars(&self, under: Option<&ObjPath>) -> BoxStream<'static, Result<ObjPath>> {
        if self.native_metadata {
            return futures::stream::empty().boxed();
        }
        let mut root = ObjPath::from(SIDECAR_ROOT);
        for part in under.into_iter().flat_map(|k| k.parts()) {
            root = root.join(part);
        }
        let name = self.name.clone();
        self.inner
            .list(Some(&root))
            .map(move |r| match r {
                Ok(m) => {
                    let s: &str = m.location.as_ref();
                    let key = s
                        .strip_prefix(&format!("{SIDECAR_ROOT}/"))
                        .and_then(|k| k.strip_suffix(".meta"))
                        .unwrap_or_default();
                    ObjPath::parse(key).map_err(|e| HsmError::Store {
                        store: name.clone(),
                        op: "list",
                        key: s.to_string(),
                        source: Box::new(e.into()),
                    })
                }
                Err(e) => Err(HsmError::Store {
                    store: name.clone(),
                    op: "list",
                    key: SIDECAR_ROOT.into(),
                    source: Box::new(e),
                }),
            })
            .boxed()
    }

    /// Direct access for tests and tools.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }
}

/// A multipart upload in progress: bounded memory (one part buffered plus the parts in
/// flight) and bounded concurrency.
pub struct Upload {
    writer: Option<WriteMultipart>,
    key: ObjPath,
}

impl Upload {
    /// Queues `data`, first waiting until fewer than `max_in_flight` parts are uploading.
    pub async fn write(
        &mut self,
        store: &ArchiveStore,
        data: Bytes,
        max_in_flight: usize,
    ) -> Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.wait_for_capacity(max_in_flight)
                .await
                .map_err(|e| store.err("upload part", &self.key, e))?;
            w.put(data);
        }
        Ok(())
    }

    /// Aborts the upload (best effort).
    pub async fn abort(mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.abort().await;
        }
    }
}
