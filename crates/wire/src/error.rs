use crate::frame::FrameKind;

/// Why a frame could not be read. Every variant says what was wrong, so a device author can
/// tell from the close reason which byte of their encoder is off.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame header is {0} bytes, expected 16")]
    ShortHeader(usize),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("header flags must be zero, got {0:#x}")]
    NonZeroFlags(u8),
    #[error("{kind:?} body of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        kind: FrameKind,
        len: u32,
        limit: u32,
    },
    #[error("{kind:?} body is invalid: {detail}")]
    InvalidBody { kind: FrameKind, detail: String },
    #[error("{kind:?} body must be empty, got {len} bytes")]
    UnexpectedBody { kind: FrameKind, len: u32 },
}
