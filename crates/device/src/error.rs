use journeyd_wire::CloseCode;

/// What stopped a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("outbox {path}: {source}")]
    Outbox {
        path: String,
        source: std::io::Error,
    },
    #[error("outbox {path}: {detail}")]
    CorruptOutbox { path: String, detail: String },
    #[error("the server refused this device for good ({code:?}): {reason}")]
    Refused { code: CloseCode, reason: String },
    #[error("gave up after {attempts} connection attempts: {last_error}")]
    Unreachable { attempts: u32, last_error: String },
    #[error("tls: {0}")]
    Tls(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("credential: {0}")]
    Credential(String),
}

impl DeviceError {
    /// The close code when the server refused the device for good.
    pub fn refusal(&self) -> Option<CloseCode> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}
