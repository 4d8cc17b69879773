//! Distances, times, speeds, stops and gaps of a track. Pure functions of positions in fix-time
//! order; no I/O.
//!
//! - Positions flagged unusable (null island) are left out of everything.
//! - Distance is accuracy-aware: it grows only when a fix lies farther from the last counted
//!   fix than the larger of their accuracies (at least 10 m), so jitter at rest adds nothing.
//! - Two fixes further apart in time than the gap threshold are a gap: no distance is drawn
//!   across it, and it is listed.
//! - A stop is a stretch of at least `stop_min` within `stop_radius_m` of where it began.

use journeyd_wire::Position;
use serde::Serialize;

/// Thresholds of the report.
#[derive(Debug, Clone, Copy)]
pub struct ReportRules {
    pub gap_us: i64,
    pub stop_min_us: i64,
    pub stop_radius_m: f64,
}

/// A span of time, in RFC 3339 UTC with microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    pub from: String,
    pub to: String,
    pub seconds: f64,
}

/// What a report says about a track.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub positions: u64,
    pub flagged_positions: u64,
    pub first_fix: Option<String>,
    pub last_fix: Option<String>,
    pub duration_s: f64,
    pub moving_s: f64,
    pub distance_m: f64,
    pub avg_speed_mps: f64,
    pub max_speed_mps: f64,
    pub stops: Vec<Span>,
    pub gaps: Vec<Span>,
}

const MIN_JITTER_M: f64 = 10.0;
/// Speeds above this (about 1,800 km/h) between fixes are glitches, not travel.
const MAX_PLAUSIBLE_MPS: f64 = 500.0;

/// Great-circle distance in metres (mean Earth radius).
pub fn haversine_m(a: &Position, b: &Position) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dla = la2 - la1;
    let dlo = (b.lon - a.lon).to_radians();
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * h.sqrt().min(1.0).asin()
}

fn tolerance(a: &Position, b: &Position) -> f64 {
    a.accuracy().unwrap_or(0.0).max(b.accuracy().unwrap_or(0.0)) as f64
}

fn span(from_us: i64, to_us: i64) -> Span {
    Span {
        from: crate::routes::rfc3339(from_us),
        to: crate::routes::rfc3339(to_us),
        seconds: (to_us - from_us) as f64 / 1e6,
    }
}

/// Summarises positions in fix-time order.
pub fn summarize(positions: &[Position], rules: &ReportRules) -> Summary {
    let usable: Vec<&Position> = positions
        .iter()
        .filter(|p| p.quality().is_usable_for_track())
        .collect();
    let flagged = (positions.len() - usable.len()) as u64;
    let mut s = Summary {
        positions: positions.len() as u64,
        flagged_positions: flagged,
        first_fix: usable
            .first()
            .map(|p| crate::routes::rfc3339(p.fix_time_us)),
        last_fix: usable.last().map(|p| crate::routes::rfc3339(p.fix_time_us)),
        duration_s: 0.0,
        moving_s: 0.0,
        distance_m: 0.0,
        avg_speed_mps: 0.0,
        max_speed_mps: 0.0,
        stops: Vec::new(),
        gaps: Vec::new(),
    };
    let (Some(first), Some(last)) = (usable.first(), usable.last()) else {
        return s;
    };
    s.duration_s = (last.fix_time_us - first.fix_time_us) as f64 / 1e6;

    let mut anchor = *first;
    let mut stop_start = *first;
    for pair in usable.windows(2) {
        let (prev, p) = (pair[0], pair[1]);
        let dt_us = p.fix_time_us - prev.fix_time_us;
        if dt_us > rules.gap_us {
            s.gaps.push(span(prev.fix_time_us, p.fix_time_us));
            close_stop(&mut s, stop_start, prev, rules);
            anchor = p;
            stop_start = p;
            continue;
        }
        if let Some(v) = p.speed() {
            s.max_speed_mps = s.max_speed_mps.max(v as f64);
        }
        let moved = haversine_m(anchor, p);
        if moved > tolerance(anchor, p).max(MIN_JITTER_M) {
            let seconds = (p.fix_time_us - anchor.fix_time_us) as f64 / 1e6;
            if seconds <= 0.0 || moved / seconds <= MAX_PLAUSIBLE_MPS {
                s.distance_m += moved;
                s.moving_s += seconds;
                if p.speed().is_none() && seconds > 0.0 {
                    s.max_speed_mps = s.max_speed_mps.max(moved / seconds);
                }
                anchor = p;
            }
        }
        if haversine_m(stop_start, p) > rules.stop_radius_m {
            close_stop(&mut s, stop_start, prev, rules);
            stop_start = p;
        }
    }
    close_stop(&mut s, stop_start, last, rules);
    if s.moving_s > 0.0 {
        s.avg_speed_mps = s.distance_m / s.moving_s;
    }
    s
}

fn close_stop(s: &mut Summary, start: &Position, end: &Position, rules: &ReportRules) {
    if end.fix_time_us - start.fix_time_us >= rules.stop_min_us {
        s.stops.push(span(start.fix_time_us, end.fix_time_us));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_780_000_000_000_000;
    const S: i64 = 1_000_000;
    const RULES: ReportRules = ReportRules {
        gap_us: 300 * S,
        stop_min_us: 180 * S,
        stop_radius_m: 50.0,
    };

    #[test]
    fn distance_follows_fix_order() {
        let ps = [
            Position::new(T, 10.0, 10.0),
            Position::new(T + 60 * S, 10.009, 10.0),
            Position::new(T + 120 * S, 10.018, 10.0),
        ];
        let s = summarize(&ps, &RULES);
        assert!((s.distance_m - 2001.5).abs() < 5.0, "{}", s.distance_m);
        assert_eq!(s.duration_s, 120.0);
    }

    #[test]
    fn jitter_at_rest_adds_nothing_and_is_one_stop() {
        let ps: Vec<Position> = (0..60)
            .map(|i| {
                let wobble = ((i * 7919) % 13) as f64 * 1e-5;
                Position::new(T + i * 10 * S, 51.0 + wobble, -1.0 - wobble)
                    .with_accuracy(20.0)
                    .with_speed(0.4)
            })
            .collect();
        let s = summarize(&ps, &RULES);
        assert!(s.distance_m < 1.0, "{}", s.distance_m);
        assert_eq!(s.stops.len(), 1);
    }

    #[test]
    fn gaps_are_not_driven() {
        let ps = [
            Position::new(T, 10.0, 10.0),
            Position::new(T + 60 * S, 10.001, 10.0),
            Position::new(T + 3600 * S, 11.0, 11.0),
            Position::new(T + 3660 * S, 11.001, 11.0),
        ];
        let s = summarize(&ps, &RULES);
        assert_eq!(s.gaps.len(), 1);
        assert!(s.distance_m < 300.0, "{}", s.distance_m);
    }

    #[test]
    fn flagged_positions_are_left_out() {
        let mut null = Position::new(T + 60 * S, 0.0, 0.0);
        null.quality = journeyd_wire::QualityFlags::NULL_ISLAND;
        let ps = [
            Position::new(T, 6.5, 3.4),
            null,
            Position::new(T + 120 * S, 6.5, 3.401),
        ];
        let s = summarize(&ps, &RULES);
        assert_eq!(s.flagged_positions, 1);
        assert!(s.distance_m < 200.0, "{}", s.distance_m);
    }
}
