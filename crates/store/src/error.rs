/// What went wrong in the hot store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt {what} under key {key}: {detail}")]
    Corrupt {
        what: &'static str,
        key: String,
        detail: String,
    },
    #[error("the writer has stopped")]
    WriterStopped,
    #[error("write refused: {0}")]
    Injected(&'static str),
    #[error("group commit failed: {message}")]
    WriteFailed { retryable: bool, message: String },
    #[error("unknown tenant {0}")]
    UnknownTenant(u32),
    #[error("unknown device {0}")]
    UnknownDevice(u64),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Key(#[from] journeyd_keys::KeyError),
    #[error(
        "tenant {0} has no data key (it was destroyed): its positions cannot be read or written"
    )]
    NoTenantKey(u32),
}

impl StoreError {
    /// Whether the same write may succeed later (disk full, I/O error, a stopped writer during
    /// restart) rather than never (corrupt data).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::WriteFailed { retryable, .. } => *retryable,
            _ => !matches!(
                self,
                Self::Corrupt { .. }
                    | Self::UnknownTenant(_)
                    | Self::UnknownDevice(_)
                    | Self::Invalid(_)
                    | Self::Key(_)
                    | Self::NoTenantKey(_)
            ),
        }
    }

    pub(crate) fn corrupt(what: &'static str, key: &[u8], detail: impl Into<String>) -> Self {
        Self::Corrupt {
            what,
            key: hex(key),
            detail: detail.into(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
