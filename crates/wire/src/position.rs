//! One GPS fix as it travels on the wire and rests in the hot store.

use rkyv::{Archive, Deserialize, Serialize};

use crate::Micros;

/// Which optional fields of a [`Position`] hold a value (bit set) rather than nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OptionalFields;

impl OptionalFields {
    pub const ALTITUDE: u32 = 1 << 0;
    pub const SPEED: u32 = 1 << 1;
    pub const HEADING: u32 = 1 << 2;
    pub const ACCURACY: u32 = 1 << 3;
    pub const ALL: u32 = Self::ALTITUDE | Self::SPEED | Self::HEADING | Self::ACCURACY;
}

/// A GPS fix: 48 bytes, plain numbers only, so validating an archived batch costs the same
/// whatever it holds.
///
/// ```
/// use journeyd_wire::Position;
///
/// // 2024-03-10T12:00:00.123456Z in Westminster, 4.5 m accuracy, no speed reported.
/// let p = Position::new(1_710_072_000_123_456, 51.5007, -0.1246).with_accuracy(4.5);
/// assert_eq!(p.accuracy(), Some(4.5));
/// assert_eq!(p.speed(), None);
/// ```
///
/// Latitude and longitude are WGS 84 degrees as f64 (no precision lost to fixed point). The
/// optional fields are present only where their bit is set in `fields`; absent ones are zero.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Position {
    /// When the receiver took the fix, microseconds since the Unix epoch, UTC.
    pub fix_time_us: Micros,
    pub lat: f64,
    pub lon: f64,
    /// Metres above the WGS 84 ellipsoid or mean sea level, as the receiver reports it.
    pub altitude_m: f32,
    /// Ground speed, metres per second.
    pub speed_mps: f32,
    /// Course over ground, degrees clockwise from true north, 0..360.
    pub heading_deg: f32,
    /// Horizontal accuracy (radius of 68 % confidence), metres.
    pub accuracy_m: f32,
    /// [`OptionalFields`] bits.
    pub fields: u32,
    /// [`crate::QualityFlags`] the server set. Devices send zero.
    pub quality: u32,
}

impl Position {
    /// A fix with time and coordinates and no optional fields.
    pub fn new(fix_time_us: Micros, lat: f64, lon: f64) -> Self {
        Self {
            fix_time_us,
            lat,
            lon,
            altitude_m: 0.0,
            speed_mps: 0.0,
            heading_deg: 0.0,
            accuracy_m: 0.0,
            fields: 0,
            quality: 0,
        }
    }

    pub fn with_altitude(mut self, v: f32) -> Self {
        self.altitude_m = v;
        self.fields |= OptionalFields::ALTITUDE;
        self
    }

    pub fn with_speed(mut self, v: f32) -> Self {
        self.speed_mps = v;
        self.fields |= OptionalFields::SPEED;
        self
    }

    pub fn with_heading(mut self, v: f32) -> Self {
        self.heading_deg = v;
        self.fields |= OptionalFields::HEADING;
        self
    }

    pub fn with_accuracy(mut self, v: f32) -> Self {
        self.accuracy_m = v;
        self.fields |= OptionalFields::ACCURACY;
        self
    }

    fn optional(&self, bit: u32, v: f32) -> Option<f32> {
        (self.fields & bit != 0).then_some(v)
    }

    pub fn altitude(&self) -> Option<f32> {
        self.optional(OptionalFields::ALTITUDE, self.altitude_m)
    }

    pub fn speed(&self) -> Option<f32> {
        self.optional(OptionalFields::SPEED, self.speed_mps)
    }

    pub fn heading(&self) -> Option<f32> {
        self.optional(OptionalFields::HEADING, self.heading_deg)
    }

    pub fn accuracy(&self) -> Option<f32> {
        self.optional(OptionalFields::ACCURACY, self.accuracy_m)
    }

    pub fn quality(&self) -> crate::QualityFlags {
        crate::QualityFlags(self.quality)
    }
}

impl Position {
    /// The 48-byte little-endian form: the same bytes as the archived position on the wire
    /// (schemas/wire-v1.md), which the hot store also keeps in its chunks.
    pub fn to_le_bytes(&self) -> [u8; ARCHIVED_POSITION_SIZE] {
        let mut b = [0u8; ARCHIVED_POSITION_SIZE];
        b[0..8].copy_from_slice(&self.fix_time_us.to_le_bytes());
        b[8..16].copy_from_slice(&self.lat.to_le_bytes());
        b[16..24].copy_from_slice(&self.lon.to_le_bytes());
        b[24..28].copy_from_slice(&self.altitude_m.to_le_bytes());
        b[28..32].copy_from_slice(&self.speed_mps.to_le_bytes());
        b[32..36].copy_from_slice(&self.heading_deg.to_le_bytes());
        b[36..40].copy_from_slice(&self.accuracy_m.to_le_bytes());
        b[40..44].copy_from_slice(&self.fields.to_le_bytes());
        b[44..48].copy_from_slice(&self.quality.to_le_bytes());
        b
    }

    /// Reads the 48-byte little-endian form.
    pub fn from_le_bytes(b: &[u8; ARCHIVED_POSITION_SIZE]) -> Self {
        let word4 = |at: usize| [b[at], b[at + 1], b[at + 2], b[at + 3]];
        let word8 = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            w
        };
        Self {
            fix_time_us: i64::from_le_bytes(word8(0)),
            lat: f64::from_le_bytes(word8(8)),
            lon: f64::from_le_bytes(word8(16)),
            altitude_m: f32::from_le_bytes(word4(24)),
            speed_mps: f32::from_le_bytes(word4(28)),
            heading_deg: f32::from_le_bytes(word4(32)),
            accuracy_m: f32::from_le_bytes(word4(36)),
            fields: u32::from_le_bytes(word4(40)),
            quality: u32::from_le_bytes(word4(44)),
        }
    }
}

impl ArchivedPosition {
    /// Copies the archived fix into a native one.
    pub fn to_native(&self) -> Position {
        Position {
            fix_time_us: self.fix_time_us.to_native(),
            lat: self.lat.to_native(),
            lon: self.lon.to_native(),
            altitude_m: self.altitude_m.to_native(),
            speed_mps: self.speed_mps.to_native(),
            heading_deg: self.heading_deg.to_native(),
            accuracy_m: self.accuracy_m.to_native(),
            fields: self.fields.to_native(),
            quality: self.quality.to_native(),
        }
    }
}

/// The size of one archived position, which `schemas/wire-v1.md` documents.
pub const ARCHIVED_POSITION_SIZE: usize = 48;

const _: () = assert!(size_of::<ArchivedPosition>() == ARCHIVED_POSITION_SIZE);
