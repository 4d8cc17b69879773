//! Object storage for the archive and backups: S3 (AWS or any S3-compatible store: MinIO,
//! Garage, Ceph) or a local folder, behind one [`ObjectStore`] so that the embedded default and
//! a production bucket run the same code above this crate.
//!
//! Every call retries transient failures (connection refused, timeouts, 5xx, throttling) with
//! exponential backoff, logs each retry and counts it in [`ObjectStats`]. Names are relative
//! (`tenant=1/date=2026-09-30/part-….parquet`); the configured prefix is added here.
//!
//! Never: reads credentials from anywhere but its config (no instance metadata, no profile
//! files), or deletes anything it was not asked to delete by name.

mod local;
mod s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::Digest;

/// Where objects go (config `[archive]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStoreConfig {
    /// A folder on this machine: the embedded default.
    Local {
        dir: PathBuf,
    },
    S3(S3Config),
}

/// An S3 bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Empty for AWS itself; `http://127.0.0.1:3900` for a local S3-compatible server.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Added before every name, e.g. `journeyd/`. May be empty.
    pub prefix: String,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`; most
    /// S3-compatible servers want this.
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Objects larger than this go up in parts of this size (multipart upload). At least 5 MiB.
    pub part_bytes: usize,
    /// Longest one attempt of one call may take before it is abandoned and retried.
    pub attempt_timeout: Duration,
}

/// How often and how patiently a call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What went wrong with an object.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object {name}: {detail} (gave up after {attempts} attempts)")]
    Unavailable {
        name: String,
        detail: String,
        attempts: u32,
    },
    #[error("object {name}: {detail}")]
    Failed { name: String, detail: String },
    #[error("object {name} does not exist")]
    NotFound { name: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("object store config: {0}")]
    Config(String),
}

/// One failed attempt, as a backend reports it.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Worth retrying: the network, a timeout, a 5xx, throttling.
    Transient(String),
    /// Not worth retrying: access denied, a bad request, a missing bucket.
    Permanent(String),
    NotFound,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct ObjectStats {
    pub retries: AtomicU64,
    pub failures: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub bytes_downloaded: AtomicU64,
    pub objects_uploaded: AtomicU64,
}

/// An object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub name: String,
    pub size: u64,
}

/// What an upload wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub size: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
}

enum Backend {
    Local(local::LocalStore),
    S3(s3::S3Store),
}

/// Objects under one prefix of one bucket or folder.
pub struct ObjectStore {
    backend: Backend,
    retry: RetryPolicy,
    stats: Arc<ObjectStats>,
    description: String,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("at", &self.description)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a file, hex, and its size.
pub fn file_digest(path: &Path) -> Result<Uploaded, ObjectError> {
    use std::io::Read;
    let io = |source| ObjectError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Uploaded {
        size,
        sha256: hex::encode(h.finalize()),
    })
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn check_name(name: &str) -> Result<(), ObjectError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        || name.contains('\\');
    if bad {
        return Err(ObjectError::Failed {
            name: name.into(),
            detail: "not a relative object name".into(),
        });
    }
    Ok(())
}

impl ObjectStore {
    pub fn open(config: &ObjectStoreConfig, retry: RetryPolicy) -> Result<Self, ObjectError> {
        let (backend, description) = match config {
            ObjectStoreConfig::Local { dir } => (
                Backend::Local(local::LocalStore::open(dir)?),
                format!("folder {}", dir.display()),
            ),
            ObjectStoreConfig::S3(s3) => (
                Backend::S3(s3::S3Store::new(s3)?),
                format!(
                    "s3://{}/{} at {}",
                    s3.bucket,
                    s3.prefix,
                    if s3.endpoint.is_empty() {
                        "AWS"
                    } else {
                        &s3.endpoint
                    }
                ),
            ),
        };
        Ok(Self {
            backend,
            retry,
            stats: Arc::new(ObjectStats::default()),
            description,
        })
    }

    /// Where the objects are, for logs.
    pub fn describe(&self) -> &str {
        &self.description
    }

    pub fn stats(&self) -> &Arc<ObjectStats> {
        &self.stats
    }

    async fn retrying<T, F, Fut>(
        &self,
        name: &str,
        what: &str,
        mut call: F,
    ) -> Result<T, ObjectError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let mut backoff = self.retry.first_backoff;
        for attempt in 1..=self.retry.attempts.max(1) {
            match call().await {
                Ok(v) => return Ok(v),
                Err(Attempt::NotFound) => {
                    return Err(ObjectError::NotFound { name: name.into() });
                }
                Err(Attempt::Permanent(detail)) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(object = name, call = what, error = %detail, "object store refused the call");
                    return Err(ObjectError::Failed {
                        name: name.into(),
                        detail: format!("{what}: {detail}"),
                    });
                }
                Err(Attempt::Transient(detail)) => {
                    if attempt == self.retry.attempts.max(1) {
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(object = name, call = what, attempts = attempt, error = %detail, at = %self.description, "object store unavailable; giving up for now");
                        return Err(ObjectError::Unavailable {
                            name: name.into(),
                            detail: format!("{what}: {detail}"),
                            attempts: attempt,
                        });
                    }
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(object = name, call = what, attempt, backoff_ms = backoff.as_millis() as u64, error = %detail, at = %self.description, "object store call failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                }
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Uploads a file under `name` (in parts when it is large) and returns its size and digest.
    pub async fn put_file(&self, name: &str, path: &Path) -> Result<Uploaded, ObjectError> {
        check_name(name)?;
        let digest = file_digest(path)?;
        self.retrying(name, "upload", || async {
            match &self.backend {
                Backend::Local(l) => l.put_file(name, path),
                Backend::S3(s) => s.put_file(name, path, digest.size).await,
            }
        })
        .await?;
        self.stats
            .bytes_uploaded
            .fetch_add(digest.size, Ordering::Relaxed);
        self.stats.objects_uploaded.fetch_add(1, Ordering::Relaxed);
        Ok(digest)
    }

    /// The size of an object, or `None` when there is none.
    pub async fn size(&self, name: &str) -> Result<Option<u64>, ObjectError> {
        check_name(name)?;
        match self
            .retrying(name, "head", || async {
                match &self.backend {
                    Backend::Local(l) => l.size(name),
                    Backend::S3(s) => s.size(name).await,
                }
            })
            .await
        {
            Ok(n) => Ok(Some(n)),
            Err(ObjectError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The whole object.
    pub async fn get(&self, name: &str) -> Result<bytes::Bytes, ObjectError> {
        check_name(name)?;
        let b = self
            .retrying(name, "get", || async {
                match &self.backend {
                    Backend::Local(l) => l.get(name),
                    Backend::S3(s) => s.get(name).await,
                }
            })
            .await?;
        self.stats
            .bytes_downloaded
            .fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok(b)
    }

    /// Downloads an object into a file (for large objects such as backups).
    pub async fn get_to_file(&self, name: &str, path: &Path) -> Result<u64, ObjectError> {
        check_name(name)?;
        self.retrying(name, "get", || async {
            match &self.backend {
                Backend::Local(l) => l.get_to_file(name, path),
                Backend::S3(s) => s.get_to_file(name, path).await,
            }
        })
        .await
    }

    /// Objects whose names start with `prefix`, in name order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, ObjectError> {
        let mut out = self
            .retrying(prefix, "list", || async {
                match &self.backend {
                    Backend::Local(l) => l.list(prefix),
                    Backend::S3(s) => s.list(prefix).await,
                }
            })
            .await?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes an object; deleting one that is not there is fine.
    pub async fn delete(&self, name: &str) -> Result<(), ObjectError> {
        check_name(name)?;
        match self
            .retrying(name, "delete", || async {
                match &self.backend {
                    Backend::Local(l) => l.delete(name),
                    Backend::S3(s) => s.delete(name).await,
                }
            })
            .await
        {
            Ok(()) | Err(ObjectError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates the bucket if it does not exist (S3) or the folder (local). For set-up and tests.
    pub async fn ensure_bucket(&self) -> Result<(), ObjectError> {
        match &self.backend {
            Backend::Local(_) => Ok(()),
            Backend::S3(s) => {
                self.retrying("(bucket)", "create bucket", || s.ensure_bucket())
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_folder_keeps_lists_and_deletes_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(
            &ObjectStoreConfig::Local {
                dir: dir.path().join("objects"),
            },
            RetryPolicy::default(),
        )
        .unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"hello").unwrap();
        let up = store
            .put_file("tenant=1/date=2026-01-01/a.parquet", &file)
            .await
            .unwrap();
        assert_eq!(up.size, 5);
        assert_eq!(up.sha256, sha256_hex(b"hello"));
        assert_eq!(
            store
                .size("tenant=1/date=2026-01-01/a.parquet")
                .await
                .unwrap(),
            Some(5)
        );
        assert_eq!(store.size("tenant=1/none").await.unwrap(), None);
        assert_eq!(
            &store
                .get("tenant=1/date=2026-01-01/a.parquet")
                .await
                .unwrap()[..],
            b"hello"
        );
        let listed = store.list("tenant=1/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "tenant=1/date=2026-01-01/a.parquet");
        store
            .delete("tenant=1/date=2026-01-01/a.parquet")
            .await
            .unwrap();
        store
            .delete("tenant=1/date=2026-01-01/a.parquet")
            .await
            .unwrap();
        assert!(store.list("").await.unwrap().is_empty());
        assert!(matches!(
            store.get("../escape").await,
            Err(ObjectError::Failed { .. })
        ));
        assert!(matches!(
            store.get("tenant=1/none").await,
            Err(ObjectError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn an_unreachable_s3_endpoint_is_retried_then_reported() {
        // A port nobody listens on, on loopback.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = ObjectStore::open(
            &ObjectStoreConfig::S3(S3Config {
                endpoint: format!("http://127.0.0.1:{port}"),
                region: "test".into(),
                bucket: "b".into(),
                prefix: String::new(),
                path_style: true,
                access_key_id: "k".into(),
                secret_access_key: "s".into(),
                part_bytes: 8 << 20,
                attempt_timeout: Duration::from_secs(5),
            }),
            RetryPolicy {
                attempts: 3,
                first_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(20),
            },
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = store.put_file("a/b", &file).await.unwrap_err();
        assert!(
            matches!(e, ObjectError::Unavailable { attempts: 3, .. }),
            "{e}"
        );
        assert_eq!(store.stats().retries.load(Ordering::Relaxed), 2);
        assert_eq!(store.stats().failures.load(Ordering::Relaxed), 1);
    }
}
