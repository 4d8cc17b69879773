//! Encryption at rest: one master key per node, one data key per tenant, and the ciphers that use
//! them.
//!
//! ```text
//! master key (operator: key file or JOURNEYD_MASTER_KEY)
//!   └─ wraps ─▶ tenant data key (random, 32 bytes, stored wrapped in the hot store)
//!                 ├─ seals ─▶ hot chunks (XChaCha20-Poly1305, random 192-bit nonce per chunk)
//!                 └─ wraps ─▶ a random key per archive file (AES-256-GCM), which Parquet
//!                             modular encryption uses for the footer and every column
//! master key ── wraps ─▶ a random key per backup (AES-256-GCM segments, see [`stream`])
//! ```
//!
//! Rotating the master key re-wraps every tenant key and rewrites no data. Destroying a tenant's
//! wrapped key makes that tenant's chunks and archive files unreadable, and nobody else's.
//!
//! Hot chunks use XChaCha20-Poly1305 rather than AES-256-GCM because a busy tenant writes tens of
//! thousands of chunks a second under one key for months: random 96-bit GCM nonces would pass the
//! 2^32-messages-per-key bound within days, random 192-bit nonces never do.
//!
//! Never: stores a key in plain form, or logs one.

pub mod parquet_keys;
pub mod stream;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::Digest;

/// Bytes of every key journeyd uses.
pub const KEY_LEN: usize = 32;
/// The environment variable that holds the master key as 64 hex digits.
pub const MASTER_KEY_ENV: &str = "JOURNEYD_MASTER_KEY";

const GCM_TAG: usize = 16;
const XNONCE: usize = 24;
const XTAG: usize = 16;

/// What went wrong with a key or a sealed value.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error(
        "{what} does not open with this key (wrong key, or the bytes were changed); it was sealed under key {sealed_with}, this is key {given}"
    )]
    WrongKey {
        what: String,
        sealed_with: String,
        given: String,
    },
    #[error("{what} does not open: wrong key, or the bytes were changed")]
    Unreadable { what: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

impl KeyError {
    fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Self {
        KeyError::Invalid {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

pub(crate) fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(b)
}

/// Seals `plaintext` with AES-256-GCM under `key`: random nonce ‖ ciphertext ‖ tag.
pub fn gcm_seal(key: &[u8; KEY_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
    let nonce: [u8; NONCE_LEN] = random()?;
    let sealing = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key"));
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + GCM_TAG);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = sealing
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[NONCE_LEN..],
        )
        .map_err(|_| KeyError::invalid("AES-GCM", "plaintext too long"))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens what [`gcm_seal`] sealed; `what` names it in the error.
pub fn gcm_open(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    sealed: &[u8],
    what: &str,
) -> Result<Vec<u8>, KeyError> {
    if sealed.len() < NONCE_LEN + GCM_TAG {
        return Err(KeyError::invalid(
            what,
            format!("{} bytes is too short to be sealed", sealed.len()),
        ));
    }
    let opening = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key"));
    let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().expect("12 bytes");
    let mut buf = sealed[NONCE_LEN..].to_vec();
    let plain = opening
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| KeyError::Unreadable { what: what.into() })?;
    let n = plain.len();
    buf.truncate(n);
    Ok(buf)
}

/// A short public name of a key: the first 16 hex digits of a SHA-256 of it. Safe to log and
/// store; it tells keys apart without revealing them.
fn key_id(domain: &str, key: &[u8; KEY_LEN]) -> String {
    let mut h = sha2::Sha256::new();
    h.update(domain.as_bytes());
    h.update(key);
    hex::encode(&h.finalize()[..8])
}

/// The node's master key. It never touches the disk of the store: the operator keeps it in a key
/// file or the environment (a KMS would fit behind [`MasterKey::wrap`]/[`MasterKey::unwrap`]).
#[derive(Clone)]
pub struct MasterKey {
    key: [u8; KEY_LEN],
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

/// Where the master key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// 64 hex digits in [`MASTER_KEY_ENV`].
    Environment,
    /// A file holding 64 hex digits; `create` makes one (mode 0600) when it is missing.
    File { path: PathBuf, create: bool },
}

impl MasterKey {
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self::from_bytes(random()?))
    }

    pub fn from_bytes(key: [u8; KEY_LEN]) -> Self {
        Self {
            id: key_id("journeyd master key", &key),
            key,
        }
    }

    /// Parses 64 hex digits (surrounding whitespace ignored); `origin` names where they came from.
    pub fn from_hex(text: &str, origin: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = hex::decode(text).map_err(|e| {
            KeyError::invalid(
                origin,
                format!("a master key is 64 hex digits ({e}); make one with `journeyd keys new`"),
            )
        })?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
            KeyError::invalid(
                origin,
                format!(
                    "a master key is 32 bytes (64 hex digits), found {} bytes",
                    b.len()
                ),
            )
        })?;
        Ok(Self::from_bytes(key))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.key)
    }

    /// Loads the key from `source`.
    pub fn load(source: &MasterKeySource) -> Result<Self, KeyError> {
        match source {
            MasterKeySource::Environment => {
                let text = std::env::var(MASTER_KEY_ENV).map_err(|_| {
                    KeyError::invalid(MASTER_KEY_ENV, "is not set (or not valid UTF-8)")
                })?;
                Self::from_hex(&text, MASTER_KEY_ENV)
            }
            MasterKeySource::File { path, create } => match std::fs::read_to_string(path) {
                Ok(text) => Self::from_hex(&text, &path.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && *create => {
                    let key = Self::generate()?;
                    write_secret_file(path, &key.to_hex())?;
                    Ok(key)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(KeyError::invalid(
                    path.display().to_string(),
                    "the master key file is missing, and this store was made with a master key: put the key back (or set JOURNEYD_MASTER_KEY); without it the data cannot be read",
                )),
                Err(source) => Err(KeyError::Io {
                    path: path.clone(),
                    source,
                }),
            },
        }
    }

    /// The key's public name.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn tenant_aad(tenant: u32) -> Vec<u8> {
        format!("journeyd tenant key {tenant}").into_bytes()
    }

    /// Wraps a tenant's data key.
    pub fn wrap(&self, tenant: u32, key: &DataKey, now_us: i64) -> Result<WrappedKey, KeyError> {
        let sealed = gcm_seal(&self.key, &Self::tenant_aad(tenant), &key.key)?;
        Ok(WrappedKey {
            master_key_id: self.id.clone(),
            data_key_id: key.id(),
            wrapped: base64::engine::general_purpose::STANDARD.encode(sealed),
            wrapped_us: now_us,
        })
    }

    /// Unwraps a tenant's data key, checking it is the key the record names.
    pub fn unwrap(&self, tenant: u32, wrapped: &WrappedKey) -> Result<DataKey, KeyError> {
        let what = format!("the data key of tenant {tenant}");
        if wrapped.master_key_id != self.id {
            return Err(KeyError::WrongKey {
                what,
                sealed_with: wrapped.master_key_id.clone(),
                given: self.id.clone(),
            });
        }
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&wrapped.wrapped)
            .map_err(|e| KeyError::invalid(&what, format!("not base64: {e}")))?;
        let plain = gcm_open(&self.key, &Self::tenant_aad(tenant), &sealed, &what)?;
        let key = DataKey::from_slice(&plain, &what)?;
        if key.id() != wrapped.data_key_id {
            return Err(KeyError::invalid(what, "unwraps to a key of another id"));
        }
        Ok(key)
    }

    /// Seals a small secret under the master key itself (e.g. the key of one backup).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        gcm_seal(&self.key, aad, plaintext)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>, KeyError> {
        gcm_open(&self.key, aad, sealed, what)
    }
}

/// Writes a secret to a new file readable by its owner only.
pub fn write_secret_file(path: &Path, text: &str) -> Result<(), KeyError> {
    use std::io::Write;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.write_all(b"\n").map_err(io)?;
    f.sync_all().map_err(io)
}

/// A tenant's data key, as stored: wrapped by the master key named.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrappedKey {
    pub master_key_id: String,
    pub data_key_id: String,
    /// base64 of nonce ‖ AES-256-GCM ciphertext ‖ tag.
    pub wrapped: String,
    pub wrapped_us: i64,
}

/// A 32-byte data key: a tenant's, or one archive file's.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey {
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").field("id", &self.id()).finish()
    }
}

impl DataKey {
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self { key: random()? })
    }

    pub fn from_slice(bytes: &[u8], what: &str) -> Result<Self, KeyError> {
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            KeyError::invalid(
                what,
                format!("a key is 32 bytes, found {} bytes", bytes.len()),
            )
        })?;
        Ok(Self { key })
    }

    /// Parses 64 hex digits, as `journeyd keys export` prints a tenant key.
    pub fn from_hex(text: &str, what: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(text.trim())
            .map_err(|e| KeyError::invalid(what, format!("a key is 64 hex digits ({e})")))?;
        Self::from_slice(&bytes, what)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.key)
    }

    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The key's public name.
    pub fn id(&self) -> String {
        key_id("journeyd data key", &self.key)
    }

    /// The cipher that seals hot chunks under this key.
    pub fn chunk_cipher(&self) -> ChunkCipher {
        ChunkCipher {
            aead: chacha20poly1305::XChaCha20Poly1305::new_from_slice(&self.key)
                .expect("32-byte key"),
        }
    }
}

/// Seals and opens hot-store values under one tenant's key: XChaCha20-Poly1305, a random
/// 24-byte nonce per value, the value's RocksDB key as associated data (so a sealed value moved
/// under another key does not open).
#[derive(Clone)]
pub struct ChunkCipher {
    aead: chacha20poly1305::XChaCha20Poly1305,
}

impl std::fmt::Debug for ChunkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCipher").finish_non_exhaustive()
    }
}

impl ChunkCipher {
    /// Bytes a sealed value adds to its plaintext.
    pub const OVERHEAD: usize = XNONCE + XTAG;

    /// Bytes the caller leaves for the nonce before the plaintext.
    pub const NONCE_LEN: usize = XNONCE;

    /// Seals in place: `buf[at..at + NONCE_LEN]` is room for the nonce (any bytes), the
    /// plaintext follows to the end. Afterwards `buf[at..]` is nonce ‖ ciphertext ‖ tag; nothing
    /// is moved.
    pub fn seal_in_place(&self, aad: &[u8], buf: &mut Vec<u8>, at: usize) -> Result<(), KeyError> {
        if buf.len() < at + XNONCE {
            return Err(KeyError::invalid("chunk", "no room for the nonce"));
        }
        let nonce: [u8; XNONCE] = random()?;
        buf[at..at + XNONCE].copy_from_slice(&nonce);
        let tag = self
            .aead
            .encrypt_inout_detached((&nonce).into(), aad, (&mut buf[at + XNONCE..]).into())
            .map_err(|_| KeyError::invalid("chunk", "too long to seal"))?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Opens a sealed value into `out` (cleared first).
    pub fn open_into(
        &self,
        aad: &[u8],
        sealed: &[u8],
        out: &mut Vec<u8>,
        what: &str,
    ) -> Result<(), KeyError> {
        if sealed.len() < Self::OVERHEAD {
            return Err(KeyError::invalid(
                what,
                format!("{} bytes is too short to be sealed", sealed.len()),
            ));
        }
        let (nonce, rest) = sealed.split_at(XNONCE);
        let (body, tag) = rest.split_at(rest.len() - XTAG);
        out.clear();
        out.extend_from_slice(body);
        let nonce: &[u8; XNONCE] = nonce.try_into().expect("24 bytes");
        let tag: &[u8; XTAG] = tag.try_into().expect("16 bytes");
        self.aead
            .decrypt_inout_detached(nonce.into(), aad, out.as_mut_slice().into(), tag.into())
            .map_err(|_| KeyError::Unreadable { what: what.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_keys_wrap_and_unwrap_only_under_their_master_and_tenant() {
        let master = MasterKey::generate().unwrap();
        let other = MasterKey::generate().unwrap();
        let key = DataKey::generate().unwrap();
        let w = master.wrap(7, &key, 1).unwrap();
        assert_eq!(master.unwrap(7, &w).unwrap(), key);
        assert!(!w.wrapped.contains(&key.to_hex()));
        let e = other.unwrap(7, &w).unwrap_err();
        assert!(e.to_string().contains(master.id()), "{e}");
        // Moved to another tenant's record, it does not open.
        assert!(matches!(
            master.unwrap(8, &w),
            Err(KeyError::Unreadable { .. })
        ));
    }

    #[test]
    fn master_key_files_are_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/master.key");
        let source = MasterKeySource::File {
            path: path.clone(),
            create: true,
        };
        let a = MasterKey::load(&source).unwrap();
        let b = MasterKey::load(&source).unwrap();
        assert_eq!(a.id(), b.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "abc").unwrap();
        let e = MasterKey::load(&source).unwrap_err();
        assert!(e.to_string().contains("master.key"), "{e}");
        let missing = MasterKeySource::File {
            path: dir.path().join("none"),
            create: false,
        };
        assert!(MasterKey::load(&missing).is_err());
    }

    proptest::proptest! {
        #[test]
        fn chunks_seal_and_open(plain in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..500), prefix in 0usize..8) {
            let key = DataKey::generate().unwrap();
            let cipher = key.chunk_cipher();
            let mut buf = vec![9u8; prefix + ChunkCipher::NONCE_LEN];
            buf.extend_from_slice(&plain);
            cipher.seal_in_place(b"key", &mut buf, prefix).unwrap();
            proptest::prop_assert_eq!(buf.len(), prefix + plain.len() + ChunkCipher::OVERHEAD);
            let mut out = Vec::new();
            cipher.open_into(b"key", &buf[prefix..], &mut out, "chunk").unwrap();
            proptest::prop_assert_eq!(&out, &plain);
            proptest::prop_assert!(cipher.open_into(b"other key", &buf[prefix..], &mut out, "chunk").is_err());
            let wrong = DataKey::generate().unwrap().chunk_cipher();
            proptest::prop_assert!(wrong.open_into(b"key", &buf[prefix..], &mut out, "chunk").is_err());
        }

        #[test]
        fn garbage_does_not_open(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            let key = DataKey::generate().unwrap();
            let mut out = Vec::new();
            proptest::prop_assert!(key.chunk_cipher().open_into(b"k", &bytes, &mut out, "chunk").is_err());
            proptest::prop_assert!(gcm_open(key.bytes(), b"k", &bytes, "x").is_err());
        }
    }
}
