//! The plausibility rules every position passes before it is stored.
//!
//! | rule | check | outcome |
//! | --- | --- | --- |
//! | coordinates not finite | latitude or longitude NaN or ±∞ | refused: `not_finite` |
//! | latitude range | outside −90..=90 | refused: `latitude_out_of_range` |
//! | longitude range | outside −180..=180 | refused: `longitude_out_of_range` |
//! | GPS week rollover | fix time + 1024 weeks lands within the device buffer window before `now` (or the future tolerance after it) and the fix is over a year old | kept, time moved forward 1024 weeks, flag `ROLLOVER_CORRECTED` |
//! | before 2000 | fix time before 2000-01-01T00:00:00Z (after the rollover rule) | refused: `time_before_2000` |
//! | future | fix time later than `now` + future tolerance (default 5 min) | refused: `time_in_future` |
//! | same fix time twice in a batch | a second position with the fix time of an earlier one | refused: `duplicate_fix_time` (the first is kept) |
//! | null island | exactly (0, 0) | kept, flag `NULL_ISLAND`: left out of distances, stops and maps |
//! | bad optional field | altitude, speed, heading or accuracy not finite or out of range | field dropped, flag `FIELD_DROPPED` |
//! | unknown bits | optional-field bits this version does not know, a non-zero `quality` | cleared |
//!
//! Nothing is dropped silently: a refusal travels back in the ack with the position's index and
//! reason, and a kept-but-doubtful position carries its flag into every report.

use crate::codes::{QualityFlags, RefusalReason};
use crate::frame::Refusal;
use crate::position::OptionalFields;
use crate::{Micros, Position};

const SECOND_US: i64 = 1_000_000;
const DAY_US: i64 = 86_400 * SECOND_US;
/// 1024 weeks: the span after which a 10-bit GPS week number wraps.
pub const GPS_ROLLOVER_US: i64 = 1024 * 7 * DAY_US;
/// 2000-01-01T00:00:00Z.
pub const YEAR_2000_US: i64 = 946_684_800 * SECOND_US;

/// Tunable limits of the rules (config `ingest.validation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationRules {
    /// How far past the server's clock a fix time may be. Default 5 minutes.
    pub future_tolerance_us: Micros,
    /// How long a device may hold positions before sending them: the window in which a
    /// rollover-shifted fix counts as recent. Default 7 days plus one day of slack.
    pub device_buffer_us: Micros,
}

impl Default for ValidationRules {
    fn default() -> Self {
        Self {
            future_tolerance_us: 5 * 60 * SECOND_US,
            device_buffer_us: 8 * DAY_US,
        }
    }
}

/// The outcome for one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Store it, with these [`QualityFlags`] bits (zero when clean).
    Keep(u32),
    Refuse(RefusalReason),
}

/// The outcome for a whole batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValidatedBatch {
    /// Positions to store, sorted by fix time, with `quality` set.
    pub kept: Vec<Position>,
    /// Refused positions by index in the batch, ascending.
    pub refusals: Vec<Refusal>,
    /// How many kept positions carry a quality flag.
    pub flagged: u32,
}

impl ValidationRules {
    /// Checks one position against every rule, correcting it in place where a rule says so.
    pub fn check(&self, p: &mut Position, now_us: Micros) -> Verdict {
        if !p.lat.is_finite() || !p.lon.is_finite() {
            return Verdict::Refuse(RefusalReason::NotFinite);
        }
        if !(-90.0..=90.0).contains(&p.lat) {
            return Verdict::Refuse(RefusalReason::LatitudeOutOfRange);
        }
        if !(-180.0..=180.0).contains(&p.lon) {
            return Verdict::Refuse(RefusalReason::LongitudeOutOfRange);
        }

        let mut flags = 0;
        p.fields &= OptionalFields::ALL;
        p.quality = 0;

        let latest = now_us.saturating_add(self.future_tolerance_us);
        let shifted = p.fix_time_us.saturating_add(GPS_ROLLOVER_US);
        let earliest_recent = now_us.saturating_sub(self.device_buffer_us);
        if p.fix_time_us < now_us.saturating_sub(365 * DAY_US)
            && (earliest_recent..=latest).contains(&shifted)
        {
            p.fix_time_us = shifted;
            flags |= QualityFlags::ROLLOVER_CORRECTED;
        }
        if p.fix_time_us < YEAR_2000_US {
            return Verdict::Refuse(RefusalReason::TimeBefore2000);
        }
        if p.fix_time_us > latest {
            return Verdict::Refuse(RefusalReason::TimeInFuture);
        }

        if p.lat == 0.0 && p.lon == 0.0 {
            flags |= QualityFlags::NULL_ISLAND;
        }
        flags |= drop_bad_fields(p);
        p.quality = flags;
        Verdict::Keep(flags)
    }

    /// Whether a journey mark's time could be real: from 2000 on, and not past the future
    /// tolerance.
    pub fn is_plausible_time(&self, at_us: Micros, now_us: Micros) -> bool {
        (YEAR_2000_US..=now_us.saturating_add(self.future_tolerance_us)).contains(&at_us)
    }

    /// Checks every position of a batch. Kept positions come back sorted by fix time.
    pub fn check_batch(
        &self,
        positions: impl IntoIterator<Item = Position>,
        now_us: Micros,
    ) -> ValidatedBatch {
        let mut kept: Vec<(u32, Position)> = Vec::new();
        let mut refusals = Vec::new();
        for (index, mut p) in positions.into_iter().enumerate() {
            let index = index as u32;
            match self.check(&mut p, now_us) {
                Verdict::Keep(_) => kept.push((index, p)),
                Verdict::Refuse(reason) => refusals.push(refusal(index, reason)),
            }
        }

        // Sort by (fix time, index): of several positions with one fix time, the first sent
        // stays and the others are refused as duplicates.
        kept.sort_unstable_by_key(|(index, p)| (p.fix_time_us, *index));
        let mut out = Vec::with_capacity(kept.len());
        let mut last_time = None;
        for (index, p) in kept {
            if last_time == Some(p.fix_time_us) {
                refusals.push(refusal(index, RefusalReason::DuplicateFixTime));
                continue;
            }
            last_time = Some(p.fix_time_us);
            out.push(p);
        }
        refusals.sort_unstable_by_key(|r| r.index);
        let flagged = out.iter().filter(|p| p.quality != 0).count() as u32;
        ValidatedBatch {
            kept: out,
            refusals,
            flagged,
        }
    }
}

fn refusal(index: u32, reason: RefusalReason) -> Refusal {
    Refusal {
        index,
        reason: reason as u16,
        reserved: 0,
    }
}

fn drop_bad_fields(p: &mut Position) -> u32 {
    let fields = &mut p.fields;
    let dropped = sanitize(
        fields,
        OptionalFields::ALTITUDE,
        &mut p.altitude_m,
        -12_000.0,
        100_000.0,
    ) | sanitize(
        fields,
        OptionalFields::SPEED,
        &mut p.speed_mps,
        0.0,
        1_500.0,
    ) | sanitize(
        fields,
        OptionalFields::HEADING,
        &mut p.heading_deg,
        0.0,
        360.0,
    ) | sanitize(
        fields,
        OptionalFields::ACCURACY,
        &mut p.accuracy_m,
        0.0,
        1_000_000.0,
    );
    if dropped {
        QualityFlags::FIELD_DROPPED
    } else {
        0
    }
}

/// Zeroes an absent optional field, and drops a present one that is not finite or outside
/// `min..=max`. Returns whether it dropped a field.
fn sanitize(fields: &mut u32, bit: u32, value: &mut f32, min: f32, max: f32) -> bool {
    let present = *fields & bit != 0;
    let good = value.is_finite() && (min..=max).contains(value);
    if present && good {
        return false;
    }
    *fields &= !bit;
    *value = 0.0;
    present
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000 * SECOND_US; // 2026-05-28

    fn check(p: Position) -> (Verdict, Position) {
        let mut p = p;
        let v = ValidationRules::default().check(&mut p, NOW);
        (v, p)
    }

    #[test]
    fn clean_fix_is_kept_unflagged() {
        let (v, _) = check(Position::new(NOW - SECOND_US, 51.5, -0.1).with_speed(3.0));
        assert_eq!(v, Verdict::Keep(0));
    }

    #[test]
    fn coordinates_out_of_range_or_not_finite_are_refused() {
        let cases = [
            (f64::NAN, 0.0, RefusalReason::NotFinite),
            (0.0, f64::INFINITY, RefusalReason::NotFinite),
            (91.0, 0.0, RefusalReason::LatitudeOutOfRange),
            (-90.000001, 0.0, RefusalReason::LatitudeOutOfRange),
            (10.0, -270.6, RefusalReason::LongitudeOutOfRange),
            (10.0, 180.1, RefusalReason::LongitudeOutOfRange),
        ];
        for (lat, lon, reason) in cases {
            assert_eq!(
                check(Position::new(NOW, lat, lon)).0,
                Verdict::Refuse(reason)
            );
        }
        assert_eq!(check(Position::new(NOW, 90.0, -180.0)).0, Verdict::Keep(0));
    }

    #[test]
    fn times_before_2000_and_in_future_are_refused() {
        assert_eq!(
            check(Position::new(0, 1.0, 1.0)).0,
            Verdict::Refuse(RefusalReason::TimeBefore2000)
        );
        assert_eq!(
            check(Position::new(NOW + 3 * 365 * DAY_US, 1.0, 1.0)).0,
            Verdict::Refuse(RefusalReason::TimeInFuture)
        );
        assert_eq!(
            check(Position::new(NOW + 4 * 60 * SECOND_US, 1.0, 1.0)).0,
            Verdict::Keep(0)
        );
    }

    #[test]
    fn rollover_is_corrected_and_flagged() {
        for offset in [-30 * SECOND_US, 0, 30 * SECOND_US, -3 * DAY_US] {
            let original = NOW + offset - GPS_ROLLOVER_US;
            let (v, p) = check(Position::new(original, 1.0, 1.0));
            assert_eq!(v, Verdict::Keep(QualityFlags::ROLLOVER_CORRECTED));
            assert_eq!(p.fix_time_us, original + GPS_ROLLOVER_US);
        }
        // A fix from two years ago is not a rollover: it is old, and kept as it is.
        let (v, p) = check(Position::new(NOW - 2 * 365 * DAY_US, 1.0, 1.0));
        assert_eq!(v, Verdict::Keep(0));
        assert_eq!(p.fix_time_us, NOW - 2 * 365 * DAY_US);
    }

    #[test]
    fn null_island_is_flagged_and_bad_fields_dropped() {
        let (v, _) = check(Position::new(NOW, 0.0, 0.0));
        assert_eq!(v, Verdict::Keep(QualityFlags::NULL_ISLAND));
        let (v, p) = check(
            Position::new(NOW, 1.0, 1.0)
                .with_speed(f32::NAN)
                .with_heading(90.0),
        );
        assert_eq!(v, Verdict::Keep(QualityFlags::FIELD_DROPPED));
        assert_eq!(p.speed(), None);
        assert_eq!(p.heading(), Some(90.0));
    }

    #[test]
    fn batch_sorts_by_fix_time_and_refuses_duplicates() {
        let batch = [
            Position::new(NOW - 2 * SECOND_US, 1.0, 1.0),
            Position::new(NOW - 5 * SECOND_US, 1.0, 1.0),
            Position::new(0, 1.0, 1.0),
            Position::new(NOW - 2 * SECOND_US, 2.0, 2.0),
        ];
        let out = ValidationRules::default().check_batch(batch, NOW);
        let times: Vec<_> = out.kept.iter().map(|p| p.fix_time_us).collect();
        assert_eq!(times, vec![NOW - 5 * SECOND_US, NOW - 2 * SECOND_US]);
        assert_eq!(
            out.kept[1].lat, 1.0,
            "the first of two equal fix times is kept"
        );
        assert_eq!(
            out.refusals,
            vec![
                refusal(2, RefusalReason::TimeBefore2000),
                refusal(3, RefusalReason::DuplicateFixTime)
            ]
        );
    }
}
