//! A device's identity towards the server.

use crate::DeviceError;

/// What the server handed out at enrolment: the device id and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub device_id: u64,
    pub secret: [u8; 32],
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// The printable form, `jd1.<device id>.<64 hex digits>`, shown once at enrolment.
    ///
    /// ```
    /// use journeyd_device::Credential;
    ///
    /// let c = Credential { device_id: 7, secret: [0xab; 32] };
    /// let token = c.to_token();
    /// assert!(token.starts_with("jd1.7."));
    /// assert_eq!(Credential::parse(&token).unwrap(), c);
    /// ```
    pub fn to_token(&self) -> String {
        format!("jd1.{}.{}", self.device_id, hex::encode(self.secret))
    }

    pub fn parse(token: &str) -> Result<Self, DeviceError> {
        let bad = |why: &str| {
            DeviceError::Credential(format!("{why}; expected jd1.<device id>.<64 hex digits>"))
        };
        let mut parts = token.trim().split('.');
        if parts.next() != Some("jd1") {
            return Err(bad("missing the jd1 prefix"));
        }
        let device_id = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad device id"))?;
        let secret = parts
            .next()
            .and_then(|s| hex::decode(s).ok())
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| bad("bad secret"))?;
        if parts.next().is_some() {
            return Err(bad("trailing fields"));
        }
        Ok(Self { device_id, secret })
    }
}

/// How a device proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Identity {
    Credential(Credential),
    /// Not enrolled yet: enrol with the company's code under this name, then keep the
    /// credential the server returns.
    Enrol {
        code: [u8; 32],
        name: String,
    },
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Credential(c) => c.fmt(f),
            Self::Enrol { name, .. } => f
                .debug_struct("Enrol")
                .field("name", name)
                .finish_non_exhaustive(),
        }
    }
}

/// Parses a 64-hex-digit enrolment code.
pub fn parse_code(text: &str) -> Result<[u8; 32], DeviceError> {
    hex::decode(text.trim())
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| DeviceError::Credential("an enrolment code is 64 hex digits".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let c = Credential {
            device_id: 42,
            secret: [7; 32],
        };
        assert_eq!(Credential::parse(&c.to_token()).unwrap(), c);
        for bad in [
            "",
            "jd1.x.00",
            "jd2.1.00",
            &format!("jd1.1.{}", "0".repeat(63)),
            &format!("{}.x", c.to_token()),
        ] {
            assert!(Credential::parse(bad).is_err(), "{bad}");
        }
    }
}
