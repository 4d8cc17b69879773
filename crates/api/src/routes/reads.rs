//! Journeys, tracks, summaries, daily reports, live positions and exports (reporter and
//! investigator).

use super::*;

// ---- journeys ----

pub(super) fn device_of(state: &AppState, caller: &Caller, id: u64) -> ApiResult<DeviceRecord> {
    match state.store.device(DeviceId(id))? {
        Some(d) if d.tenant == caller.tenant => Ok(d),
        // Another company's device answers exactly as a device that does not exist.
        _ => Err(ApiError::NotFound),
    }
}

pub(super) fn parse_journey(s: &str) -> ApiResult<JourneyId> {
    s.parse().map(JourneyId).map_err(|_| ApiError::NotFound)
}

pub(super) fn journey_of(
    state: &AppState,
    caller: &Caller,
    device: u64,
    journey: &str,
) -> ApiResult<(DeviceRecord, JourneyId, JourneyMeta)> {
    let d = device_of(state, caller, device)?;
    let j = parse_journey(journey)?;
    let meta = state
        .store
        .journey(d.tenant, d.id, j)?
        .ok_or(ApiError::NotFound)?;
    if !visible(state, caller, &d, j)? {
        return Err(ApiError::Forbidden(
            "this journey is past its hot retention, restored from the archive for investigators",
        ));
    }
    Ok((d, j, meta))
}

/// Whether the caller may read a hot journey: a copy restored from the archive is past the
/// company's retention and stays an investigator's.
pub(super) fn visible(
    state: &AppState,
    caller: &Caller,
    d: &DeviceRecord,
    j: JourneyId,
) -> ApiResult<bool> {
    if caller.role == Role::Investigator {
        return Ok(true);
    }
    Ok(state
        .store
        .archived(d.tenant, d.id, j)?
        .is_none_or(|e| e.restored_until_us.is_none()))
}

#[derive(Debug, Serialize)]
pub(super) struct JourneyView {
    device: u64,
    device_name: String,
    user: Option<String>,
    journey: String,
    status: &'static str,
    started_at: Option<String>,
    ended_at: Option<String>,
    end_reason: Option<&'static str>,
    first_fix: Option<String>,
    last_fix: Option<String>,
    positions: u64,
    flagged_positions: u64,
}

pub(super) fn journey_view(
    state: &AppState,
    d: &DeviceRecord,
    j: JourneyId,
    m: &JourneyMeta,
    policy: &TenantPolicy,
) -> JourneyView {
    let silence_us = policy.journey_silence_minutes as i64 * 60_000_000;
    let (status, ended, reason) = match m.ended_us {
        Some(e) => ("closed", Some(e), Some("device")),
        // A journey the device never closed ends at its last fix once it has been silent
        // long enough (case D28).
        None if state.now() - m.last_received_us > silence_us => {
            ("closed", m.last_fix_us, Some("silence"))
        }
        None => ("open", None, None),
    };
    JourneyView {
        device: d.id.0,
        device_name: d.name.clone(),
        user: d.user.clone(),
        journey: j.0.to_string(),
        status,
        started_at: m.started_us.map(rfc3339),
        ended_at: ended.map(rfc3339),
        end_reason: reason,
        first_fix: m.first_fix_us.map(rfc3339),
        last_fix: m.last_fix_us.map(rfc3339),
        positions: m.positions,
        flagged_positions: m.flagged as u64,
    }
}

pub(super) fn policy_of(state: &AppState, caller: &Caller) -> ApiResult<TenantPolicy> {
    Ok(state
        .store
        .tenant(caller.tenant)?
        .map(|t| t.policy)
        .unwrap_or_default())
}

#[derive(Debug, Deserialize)]
pub(super) struct JourneyQuery {
    device: Option<u64>,
    user: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(super) async fn list_journeys(
    State(state): St,
    caller: Caller,
    Query(q): Query<JourneyQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let from = parse_opt_time("from", &q.from)?;
    let to = parse_opt_time("to", &q.to)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let policy = policy_of(&state, &caller)?;
    let mut rows = Vec::new();
    for d in devices_matching(&state, &caller, q.device, q.user.as_deref())? {
        for (j, m) in state.store.journeys(d.tenant, d.id)? {
            let (Some(first), Some(last)) = (m.first_fix_us, m.last_fix_us) else {
                continue;
            };
            if !visible(&state, &caller, &d, j)? {
                continue;
            }
            if from.is_some_and(|f| last < f) || to.is_some_and(|t| first > t) {
                continue;
            }
            let key = (first, d.id.0, j.0);
            if after.is_some_and(|a| key <= a) {
                continue;
            }
            rows.push((key, journey_view(&state, &d, j, &m, &policy)));
        }
    }
    rows.sort_by_key(|(k, _)| *k);
    let next = (rows.len() > limit).then(|| {
        let (f, d, j) = rows[limit - 1].0;
        format!("{f}.{d}.{j}")
    });
    rows.truncate(limit);
    let journeys: Vec<JourneyView> = rows.into_iter().map(|(_, v)| v).collect();
    Ok(Json(json!({"journeys": journeys, "next_cursor": next})))
}

/// The caller's company's devices, narrowed to one device id and/or one user when given.
pub(super) fn devices_matching(
    state: &AppState,
    caller: &Caller,
    device: Option<u64>,
    user: Option<&str>,
) -> ApiResult<Vec<DeviceRecord>> {
    let mut devices = state.store.devices(Some(caller.tenant))?;
    devices.retain(|d| {
        device.is_none_or(|id| id == d.id.0) && user.is_none_or(|u| d.user.as_deref() == Some(u))
    });
    Ok(devices)
}

pub(super) fn parse_cursor(s: &str) -> ApiResult<(i64, u64, u64)> {
    let bad = || ApiError::BadRequest("cursor: not a cursor this API handed out".into());
    let mut it = s.split('.');
    let f = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let d = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let j = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    Ok((f, d, j))
}

pub(super) async fn journey_details(
    State(state): St,
    caller: Caller,
    Path((device, journey)): Path<(u64, String)>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let (d, j, m) = journey_of(&state, &caller, device, &journey)?;
    let policy = policy_of(&state, &caller)?;
    Ok(Json(
        json!({ "journey": journey_view(&state, &d, j, &m, &policy) }),
    ))
}

pub(super) fn position_json(p: &Position) -> Value {
    let mut v = json!({"fix_time": rfc3339(p.fix_time_us), "lat": p.lat, "lon": p.lon});
    let obj = v.as_object_mut().expect("a json object");
    for (bit, name, value) in [
        (OptionalFields::ALTITUDE, "altitude_m", p.altitude_m),
        (OptionalFields::SPEED, "speed_mps", p.speed_mps),
        (OptionalFields::HEADING, "heading_deg", p.heading_deg),
        (OptionalFields::ACCURACY, "accuracy_m", p.accuracy_m),
    ] {
        if p.fields & bit != 0 {
            obj.insert(name.into(), json!(value));
        }
    }
    obj.insert("flags".into(), json!(flag_names(p.quality)));
    v
}

pub(super) fn flag_names(q: u32) -> Vec<&'static str> {
    let f = QualityFlags(q);
    [
        (QualityFlags::NULL_ISLAND, "null_island"),
        (QualityFlags::ROLLOVER_CORRECTED, "rollover_corrected"),
        (QualityFlags::FIELD_DROPPED, "field_dropped"),
    ]
    .into_iter()
    .filter(|(bit, _)| f.contains(*bit))
    .map(|(_, n)| n)
    .collect()
}

#[derive(Debug, Deserialize)]
pub(super) struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

pub(super) async fn journey_track(
    State(state): St,
    caller: Caller,
    Path((device, journey)): Path<(u64, String)>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let from = parse_opt_time("from", &q.from)?.unwrap_or(i64::MIN);
    let to = parse_opt_time("to", &q.to)?.unwrap_or(i64::MAX);
    let (d, j, track) = match journey_of(&state, &caller, device, &journey) {
        Ok((d, j, _)) => {
            let track = state.store.track_between(d.tenant, d.id, j, from, to)?;
            (d, j, track)
        }
        // Not hot: an investigator reads it straight from the archive.
        Err(ApiError::NotFound) => {
            let (d, j, mut track) = archived_track(&state, &caller, device, &journey).await?;
            track.retain(|p| (from..=to).contains(&p.fix_time_us));
            (d, j, track)
        }
        Err(e) => return Err(e),
    };
    let positions: Vec<Value> = track.iter().map(position_json).collect();
    Ok(Json(
        json!({"device": d.id.0, "journey": j.0.to_string(), "positions": positions}),
    ))
}

pub(super) fn rules(state: &AppState) -> ReportRules {
    ReportRules {
        gap_us: state.config.gap.as_micros() as i64,
        stop_min_us: state.config.stop_min.as_micros() as i64,
        stop_radius_m: state.config.stop_radius_m,
    }
}

pub(super) async fn journey_summary(
    State(state): St,
    caller: Caller,
    Path((device, journey)): Path<(u64, String)>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let (d, j, track) = match journey_of(&state, &caller, device, &journey) {
        Ok((d, j, _)) => {
            let track = state.store.track(d.tenant, d.id, j)?;
            (d, j, track)
        }
        Err(ApiError::NotFound) => archived_track(&state, &caller, device, &journey).await?,
        Err(e) => return Err(e),
    };
    let summary = report::summarize(&track, &rules(&state));
    Ok(Json(
        json!({"device": d.id.0, "journey": j.0.to_string(), "summary": summary}),
    ))
}

pub(super) async fn device_day(
    State(state): St,
    caller: Caller,
    Path((device, date)): Path<(u64, String)>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let d = device_of(&state, &caller, device)?;
    let policy = policy_of(&state, &caller)?;
    let tz: chrono_tz::Tz = policy.time_zone.parse().map_err(|_| {
        ApiError::Internal(format!(
            "tenant time zone {} is not known",
            policy.time_zone
        ))
    })?;
    let day = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d")
        .map_err(|e| ApiError::BadRequest(format!("date: {e}; expected YYYY-MM-DD")))?;
    let (start, end) = local_day_bounds(tz, day)?;
    // Only the journeys that touch the day are read, not the device's whole history.
    let mut positions: Vec<Position> = Vec::new();
    for (j, m) in state.store.journeys(d.tenant, d.id)? {
        if let (Some(first), Some(last)) = (m.first_fix_us, m.last_fix_us)
            && last >= start
            && first < end
            && visible(&state, &caller, &d, j)?
        {
            positions.extend(
                state
                    .store
                    .track_between(d.tenant, d.id, j, start, end - 1)?,
            );
        }
    }
    // Journeys may overlap in time; the day reads in fix-time order.
    positions.sort_by_key(|p| p.fix_time_us);
    let summary = report::summarize(&positions, &rules(&state));
    Ok(Json(json!({
        "device": d.id.0,
        "date": date,
        "time_zone": policy.time_zone,
        "from": rfc3339(start),
        "to": rfc3339(end),
        "hours": (end - start) as f64 / 3.6e9,
        "summary": summary,
    })))
}

/// The UTC instants where a local calendar day begins and ends (23 or 25 hours apart on the
/// days clocks change).
pub(crate) fn local_day_bounds(tz: chrono_tz::Tz, day: chrono::NaiveDate) -> ApiResult<(i64, i64)> {
    let start_of = |d: chrono::NaiveDate| -> ApiResult<i64> {
        let midnight = d.and_hms_opt(0, 0, 0).expect("midnight exists");
        // Where midnight is skipped by a clock change, the day starts at the first instant after.
        let local = tz
            .from_local_datetime(&midnight)
            .earliest()
            .or_else(|| {
                tz.from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                    .earliest()
            })
            .ok_or_else(|| ApiError::BadRequest(format!("{d} has no start in {tz}")))?;
        Ok(local.timestamp_micros())
    };
    let next = day
        .succ_opt()
        .ok_or_else(|| ApiError::BadRequest("date out of range".into()))?;
    Ok((start_of(day)?, start_of(next)?))
}

pub(super) async fn live(State(state): St, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let mut out = Vec::new();
    for d in state.store.devices(Some(caller.tenant))? {
        let last = state.store.last_position(d.tenant, d.id)?;
        out.push(json!({"device": d.id.0, "name": d.name, "user": d.user, "blocked": d.blocked, "position": last.as_ref().map(position_json)}));
    }
    Ok(Json(json!({"devices": out})))
}

// ---- exports ----

pub(super) fn stream_export(
    state: Arc<AppState>,
    format: Format,
    title: String,
    parts: ExportParts,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let filename = format!(
        "{}.{}",
        title.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"),
        format.extension()
    );
    tokio::task::spawn_blocking(move || {
        if format == Format::Parquet {
            write_parquet(&state, parts, tx);
            return;
        }
        let send = |s: String| tx.blocking_send(Ok(bytes::Bytes::from(s))).is_ok();
        if !send(format.head(&title)) {
            return;
        }
        for (i, (d, j, from, to, archived)) in parts.iter().enumerate() {
            // One journey in memory at a time: an export of a year costs what its longest
            // journey costs.
            let track = match archived {
                Some(track) => Ok(track.to_vec()),
                None => state.store.track_between(d.tenant, d.id, *j, *from, *to),
            };
            match track {
                Ok(track) => {
                    if !send(format.journey(d.id.0, j.0, &track, i == 0)) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "export failed mid-stream");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            }
        }
        send(format.tail().to_owned());
    });
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

/// Journeys to export: (device, journey, from, to, positions already read from the archive).
pub(super) type ExportParts = Vec<(
    DeviceRecord,
    JourneyId,
    i64,
    i64,
    Option<Arc<Vec<Position>>>,
)>;

/// Streams a Parquet export: row groups leave as they fill, the footer last.
pub(super) fn write_parquet(
    state: &AppState,
    parts: ExportParts,
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
) {
    let fail = |tx: &tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>, e: String| {
        tracing::error!(error = %e, "parquet export failed mid-stream");
        let _ = tx.blocking_send(Err(std::io::Error::other(e)));
    };
    let mut writer =
        match journeyd_archive::PositionsWriter::new(crate::export::ParquetSink::new(tx.clone())) {
            Ok(w) => w,
            Err(e) => return fail(&tx, e.to_string()),
        };
    for (d, j, from, to, archived) in parts {
        let track = match archived {
            Some(track) => Ok(track.to_vec()),
            None => state.store.track_between(d.tenant, d.id, j, from, to),
        };
        let written = track.map_err(|e| e.to_string()).and_then(|track| {
            writer
                .write_journey(d.id.0, j.0, &track)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = written {
            return fail(&tx, e);
        }
    }
    match writer.finish() {
        Ok(mut sink) => {
            let _ = std::io::Write::flush(&mut sink);
        }
        Err(e) => fail(&tx, e.to_string()),
    }
}

pub(super) fn parse_format(s: &str) -> ApiResult<Format> {
    Format::parse(s).ok_or_else(|| {
        ApiError::BadRequest(format!("format {s}: expected gpx, geojson, csv or parquet"))
    })
}

pub(super) async fn export_journey(
    State(state): St,
    caller: Caller,
    Path((device, journey, format)): Path<(u64, String, String)>,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    let format = parse_format(&format)?;
    let (d, j, archived) = match journey_of(&state, &caller, device, &journey) {
        Ok((d, j, _)) => (d, j, None),
        Err(ApiError::NotFound) => {
            let (d, j, track) = archived_track(&state, &caller, device, &journey).await?;
            (d, j, Some(Arc::new(track)))
        }
        Err(e) => return Err(e),
    };
    let title = format!("device-{}-journey-{}", d.id.0, j.0);
    Ok(stream_export(
        state.clone(),
        format,
        title,
        vec![(d, j, i64::MIN, i64::MAX, archived)],
    ))
}

pub(super) async fn export_device(
    State(state): St,
    caller: Caller,
    Path((device, format)): Path<(u64, String)>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    let format = parse_format(&format)?;
    let d = device_of(&state, &caller, device)?;
    let from = parse_opt_time("from", &q.from)?.unwrap_or(i64::MIN);
    let to = parse_opt_time("to", &q.to)?.unwrap_or(i64::MAX);
    let mut parts = Vec::new();
    for (j, m) in state.store.journeys(d.tenant, d.id)? {
        if let (Some(f), Some(l)) = (m.first_fix_us, m.last_fix_us)
            && l >= from
            && f <= to
            && visible(&state, &caller, &d, j)?
        {
            parts.push((f, d.clone(), j));
        }
    }
    parts.sort_by_key(|(f, _, j)| (*f, j.0));
    let parts = parts
        .into_iter()
        .map(|(_, d, j)| (d, j, from, to, None))
        .collect();
    Ok(stream_export(
        state.clone(),
        format,
        format!("device-{}", d.id.0),
        parts,
    ))
}
