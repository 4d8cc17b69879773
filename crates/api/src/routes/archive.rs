//! The archive, for investigators: search archived journeys, read one straight from its
//! objects (also through the journey track, summary and export routes), and restore one into
//! the hot store for a number of days. Every call is audited by the middleware like any other.

use super::*;

/// Roles that may search, read and restore the archive.
pub(super) const ARCHIVE_READERS: &[Role] = &[Role::Investigator];

fn archive(state: &AppState) -> ApiResult<&crate::ArchiveAccess> {
    state
        .archive
        .as_ref()
        .ok_or_else(|| ApiError::Internal("this node has no archive configured".into()))
}

fn archived_entry(
    state: &AppState,
    caller: &Caller,
    device: u64,
    journey: &str,
) -> ApiResult<(DeviceRecord, JourneyId, journeyd_store::ArchivedJourney)> {
    let d = device_of(state, caller, device)?;
    let j = parse_journey(journey)?;
    let entry = state
        .store
        .archived(d.tenant, d.id, j)?
        .ok_or(ApiError::NotFound)?;
    Ok((d, j, entry))
}

/// A journey's positions read from the archive (investigators only; for anyone else an
/// archived journey is not found... but told why).
pub(super) async fn archived_track(
    state: &AppState,
    caller: &Caller,
    device: u64,
    journey: &str,
) -> ApiResult<(DeviceRecord, JourneyId, Vec<Position>)> {
    let (d, j, entry) = archived_entry(state, caller, device, journey)?;
    if !ARCHIVE_READERS.contains(&caller.role) {
        return Err(ApiError::Forbidden(
            "this journey is archived; an investigator can read or restore it",
        ));
    }
    caller.require(ARCHIVE_READERS)?;
    let objects = &archive(state)?.objects;
    let track = journeyd_archiver::retrieve::fetch_journey(&state.store, objects, &entry, true)
        .await
        .map_err(|e| ApiError::Internal(format!("reading the archive: {e}")))?;
    Ok((d, j, track))
}

fn entry_json(state: &AppState, e: &journeyd_store::ArchivedJourney) -> Value {
    let device = state.store.device(e.device).ok().flatten();
    json!({
        "device": e.device.0,
        "device_name": device.as_ref().map(|d| d.name.clone()),
        "user": device.and_then(|d| d.user),
        "journey": e.journey.to_string(),
        "started_at": e.started_us.map(rfc3339),
        "ended_at": e.ended_us.map(rfc3339),
        "first_fix": rfc3339(e.first_fix_us),
        "last_fix": rfc3339(e.last_fix_us),
        "positions": e.positions,
        "archived_at": rfc3339(e.archived_us),
        "objects": e.parts.iter().map(|p| p.object.clone()).collect::<Vec<_>>(),
        "restored_until": e.restored_until_us.map(rfc3339),
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct ArchiveQuery {
    device: Option<u64>,
    user: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

pub(super) async fn search_archive(
    State(state): St,
    caller: Caller,
    Query(q): Query<ArchiveQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(ARCHIVE_READERS)?;
    let from = parse_opt_time("from", &q.from)?;
    let to = parse_opt_time("to", &q.to)?;
    let mut rows = Vec::new();
    for d in devices_matching(&state, &caller, q.device, q.user.as_deref())? {
        let found =
            journeyd_archiver::retrieve::search(&state.store, caller.tenant, Some(d.id), from, to)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        rows.extend(found);
    }
    rows.sort_by_key(|e| (e.first_fix_us, e.device.0, e.journey));
    let journeys: Vec<Value> = rows.iter().map(|e| entry_json(&state, e)).collect();
    Ok(Json(json!({ "journeys": journeys })))
}

pub(super) async fn archived_journey(
    State(state): St,
    caller: Caller,
    Path((device, journey)): Path<(u64, String)>,
) -> ApiResult<Json<Value>> {
    caller.require(ARCHIVE_READERS)?;
    let (_, _, entry) = archived_entry(&state, &caller, device, &journey)?;
    Ok(Json(json!({ "journey": entry_json(&state, &entry) })))
}

#[derive(Debug, Deserialize)]
pub(super) struct RestoreBody {
    /// Days the restored copy stays hot. Default 7, at most 90.
    days: Option<u32>,
}

pub(super) async fn restore_journey(
    State(state): St,
    caller: Caller,
    Path((device, journey)): Path<(u64, String)>,
    body: Option<Json<RestoreBody>>,
) -> ApiResult<Json<Value>> {
    caller.require(ARCHIVE_READERS)?;
    let days = body.and_then(|Json(b)| b.days).unwrap_or(7);
    if !(1..=90).contains(&days) {
        return Err(ApiError::BadRequest(format!(
            "days: {days}; a restore lasts 1 to 90 days"
        )));
    }
    let (_, _, entry) = archived_entry(&state, &caller, device, &journey)?;
    let objects = &archive(&state)?.objects;
    let now = state.now();
    let until = now + days as i64 * 86_400_000_000;
    let positions = journeyd_archiver::retrieve::restore(&state.store, objects, &entry, until, now)
        .await
        .map_err(|e| ApiError::Internal(format!("restoring from the archive: {e}")))?;
    Ok(Json(json!({
        "device": device,
        "journey": journey,
        "positions": positions,
        "restored_until": rfc3339(until),
    })))
}
