//! Every number the protocol uses to say why: ack statuses, per-position refusal reasons,
//! quality flags on stored positions, and QUIC close codes.

/// What the server did with a sequenced frame; carried in [`crate::Ack::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum AckStatus {
    /// Durably stored (the write-ahead log is synced). The device deletes its copy. Positions
    /// listed in the ack's refusals were not stored and must not be resent.
    Stored = 0,
    /// Not stored, for a passing reason (server overloaded, store failing). Resend the same
    /// frame, same sequence number, after `retry_after_ms`.
    RetryLater = 1,
    /// Not stored: the batch holds more positions than `max_batch_positions`. Split it into
    /// batches of at most that many positions, under new sequence numbers, and send those.
    SplitAndResend = 2,
    /// Not stored and never will be (a journey start or end with an impossible time, or
    /// positions outside a journey when the company tracks only during journeys). Delete it;
    /// resending gives the same answer.
    Rejected = 3,
}

impl AckStatus {
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0 => Self::Stored,
            1 => Self::RetryLater,
            2 => Self::SplitAndResend,
            3 => Self::Rejected,
            _ => return None,
        })
    }
}

/// Why one position of a batch was refused; carried per position in [`crate::Refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum RefusalReason {
    /// Latitude or longitude is NaN or infinite.
    NotFinite = 1,
    /// Latitude outside −90..=90.
    LatitudeOutOfRange = 2,
    /// Longitude outside −180..=180.
    LongitudeOutOfRange = 3,
    /// Fix time before 2000-01-01T00:00:00Z (epoch zero, unset clocks).
    TimeBefore2000 = 4,
    /// Fix time further in the future than the server's tolerance.
    TimeInFuture = 5,
    /// Another position of the same batch has the same fix time; the first is kept.
    DuplicateFixTime = 6,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 6] = [
        Self::NotFinite,
        Self::LatitudeOutOfRange,
        Self::LongitudeOutOfRange,
        Self::TimeBefore2000,
        Self::TimeInFuture,
        Self::DuplicateFixTime,
    ];

    pub fn from_u16(v: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u16 == v)
    }

    /// A stable snake_case name, for logs, metrics and summaries.
    pub fn name(self) -> &'static str {
        match self {
            Self::NotFinite => "not_finite",
            Self::LatitudeOutOfRange => "latitude_out_of_range",
            Self::LongitudeOutOfRange => "longitude_out_of_range",
            Self::TimeBefore2000 => "time_before_2000",
            Self::TimeInFuture => "time_in_future",
            Self::DuplicateFixTime => "duplicate_fix_time",
        }
    }
}

/// Flags the server sets on a position it keeps but does not fully trust. Stored with the
/// position; reports leave flagged positions out of distances, stops and maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct QualityFlags(pub u32);

impl QualityFlags {
    /// Exactly (0, 0): almost always a receiver with no fix, not a place in the Gulf of Guinea.
    pub const NULL_ISLAND: u32 = 1 << 0;
    /// The fix time was exactly 1024 weeks early (GPS week-number rollover) and was moved
    /// forward by 1024 weeks.
    pub const ROLLOVER_CORRECTED: u32 = 1 << 1;
    /// An optional field (altitude, speed, heading, accuracy) was not finite or out of range
    /// and was dropped; the position itself is good.
    pub const FIELD_DROPPED: u32 = 1 << 2;

    /// Flags that make a position unfit for distance, stops and maps.
    pub const EXCLUDE_FROM_TRACK: u32 = Self::NULL_ISLAND;

    pub fn contains(self, flag: u32) -> bool {
        self.0 & flag != 0
    }

    pub fn is_usable_for_track(self) -> bool {
        self.0 & Self::EXCLUDE_FROM_TRACK == 0
    }
}

/// QUIC application close codes. A device SDK must not reconnect after a non-retryable one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CloseCode {
    /// Orderly close by either side.
    Normal = 0,
    /// A frame could not be decoded; the reason text says what was wrong.
    MalformedFrame = 0x10,
    /// A frame arrived that is not allowed in this state (e.g. a batch before hello).
    ProtocolViolation = 0x11,
    /// The hello named a protocol version this server does not speak.
    UnsupportedVersion = 0x12,
    /// Unknown device or wrong secret, or an unknown enrolment code. Not retryable.
    BadCredential = 0x20,
    /// The device is blocked by its company's admin. Not retryable.
    DeviceBlocked = 0x21,
    /// The server is shutting down; reconnect with backoff.
    ShuttingDown = 0x30,
    /// The server cannot serve this connection now (its store failed during the hello);
    /// retry with backoff. (A server at its connection limit refuses at the QUIC level.)
    Busy = 0x31,
    /// The server gave up waiting for the hello.
    HelloTimeout = 0x32,
}

impl CloseCode {
    pub const ALL: [CloseCode; 9] = [
        Self::Normal,
        Self::MalformedFrame,
        Self::ProtocolViolation,
        Self::UnsupportedVersion,
        Self::BadCredential,
        Self::DeviceBlocked,
        Self::ShuttingDown,
        Self::Busy,
        Self::HelloTimeout,
    ];

    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u32 == v)
    }

    /// Whether a device may reconnect after this close (with backoff).
    pub fn is_retryable(self) -> bool {
        !matches!(
            self,
            Self::BadCredential | Self::DeviceBlocked | Self::UnsupportedVersion
        )
    }
}
