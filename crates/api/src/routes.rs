//! The routes and their handlers. Each handler checks the caller's role, looks every object up
//! within the caller's tenant, and answers JSON (or a streamed export).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{SecondsFormat, TimeZone};
use journeyd_store::{
    AuditQuery, DeviceId, DeviceRecord, JourneyId, JourneyMeta, Role, TenantPolicy,
};
use journeyd_wire::{OptionalFields, Position, QualityFlags};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::audit::{AuditNote, Peer};
use crate::auth::{self, ADMINS, Caller, READERS};
use crate::export::Format;
use crate::report::{self, ReportRules};
use crate::{ApiError, AppState};

type St = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/login", post(login))
        .route("/api/v1/password", post(change_password))
        .route("/api/v1/journeys", get(list_journeys))
        .route(
            "/api/v1/devices/{device}/journeys/{journey}",
            get(journey_details),
        )
        .route(
            "/api/v1/devices/{device}/journeys/{journey}/track",
            get(journey_track),
        )
        .route(
            "/api/v1/devices/{device}/journeys/{journey}/summary",
            get(journey_summary),
        )
        .route(
            "/api/v1/devices/{device}/journeys/{journey}/export/{format}",
            get(export_journey),
        )
        .route(
            "/api/v1/devices/{device}/export/{format}",
            get(export_device),
        )
        .route("/api/v1/devices/{device}/days/{date}", get(device_day))
        .route("/api/v1/live", get(live))
        .route("/api/v1/devices", get(list_devices).post(add_device))
        .route("/api/v1/devices/{device}/block", post(block_device))
        .route("/api/v1/devices/{device}/unblock", post(unblock_device))
        .route("/api/v1/users", get(list_users).post(add_user))
        .route("/api/v1/users/{username}/unlock", post(unlock_user))
        .route("/api/v1/sources/{ip}/unlock", post(unlock_source))
        .route("/api/v1/policy", get(get_policy).put(put_policy))
        .route("/api/v1/audit", get(audit_log))
        .route("/api/v1/audit/export.csv", get(audit_csv))
        .fallback(|| async { ApiError::NotFound })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::layer,
        ))
        .with_state(state)
}

/// RFC 3339, UTC, microseconds: the one time format of the API.
pub(crate) fn rfc3339(us: i64) -> String {
    chrono::Utc
        .timestamp_micros(us)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
        .unwrap_or_else(|| us.to_string())
}

fn parse_time(name: &str, s: &str) -> ApiResult<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "{name}: {e}; expected RFC 3339, e.g. 2026-01-31T12:00:00.123456Z"
            ))
        })
}

fn parse_opt_time(name: &str, s: &Option<String>) -> ApiResult<Option<i64>> {
    s.as_deref().map(|v| parse_time(name, v)).transpose()
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

fn with_note(mut response: Response, note: AuditNote) -> Response {
    response.extensions_mut().insert(note);
    response
}

// ---- health and metrics ----

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): St) -> Response {
    if state.ingest.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: ingest cannot store now (store failing or full)\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): St) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&state),
    )
        .into_response()
}

// ---- login ----

#[derive(Debug, Deserialize)]
struct LoginRequest {
    tenant: String,
    username: String,
    password: String,
}

async fn login(
    State(state): St,
    peer: Option<axum::Extension<Peer>>,
    Json(req): Json<LoginRequest>,
) -> Response {
    let ip = peer
        .map(|p| p.0.0.ip())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let tenant = state
        .store
        .tenant_by_name(&req.tenant)
        .ok()
        .flatten()
        .map(|t| t.id);
    let response = match auth::login(&state, &req.tenant, &req.username, &req.password, ip) {
        Ok(ok) => Json(ok).into_response(),
        Err(e) => e.into_response(),
    };
    with_note(
        response,
        AuditNote {
            tenant,
            actor: Some(format!("user:{}", req.username)),
            target: Some(format!("user/{}", req.username)),
        },
    )
}

#[derive(Debug, Deserialize)]
struct PasswordChange {
    old_password: String,
    new_password: String,
}

async fn change_password(
    State(state): St,
    caller: Caller,
    Json(req): Json<PasswordChange>,
) -> ApiResult<Json<Value>> {
    auth::change_password(&state, &caller, &req.old_password, &req.new_password)?;
    Ok(Json(json!({"changed": true})))
}

// ---- journeys ----

fn device_of(state: &AppState, caller: &Caller, id: u64) -> ApiResult<DeviceRecord> {
    match state.store.device(DeviceId(id))? {
        Some(d) if d.tenant == caller.tenant => Ok(d),
        // Another company's device answers exactly as a device that does not exist.
        _ => Err(ApiError::NotFound),
    }
}

fn parse_journey(s: &str) -> ApiResult<JourneyId> {
    s.parse().map(JourneyId).map_err(|_| ApiError::NotFound)
}

fn journey_of(
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
    Ok((d, j, meta))
}

#[derive(Debug, Serialize)]
struct JourneyView {
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

fn journey_view(
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

fn policy_of(state: &AppState, caller: &Caller) -> ApiResult<TenantPolicy> {
    Ok(state
        .store
        .tenant(caller.tenant)?
        .map(|t| t.policy)
        .unwrap_or_default())
}

#[derive(Debug, Deserialize)]
struct JourneyQuery {
    device: Option<u64>,
    user: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list_journeys(
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
    for d in state.store.devices(Some(caller.tenant))? {
        if q.device.is_some_and(|id| id != d.id.0)
            || q.user.as_ref().is_some_and(|u| d.user.as_ref() != Some(u))
        {
            continue;
        }
        for (j, m) in state.store.journeys(d.tenant, d.id)? {
            let (Some(first), Some(last)) = (m.first_fix_us, m.last_fix_us) else {
                continue;
            };
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

fn parse_cursor(s: &str) -> ApiResult<(i64, u64, u64)> {
    let bad = || ApiError::BadRequest("cursor: not a cursor this API handed out".into());
    let mut it = s.split('.');
    let f = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let d = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let j = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    Ok((f, d, j))
}

async fn journey_details(
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

fn position_json(p: &Position) -> Value {
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

fn flag_names(q: u32) -> Vec<&'static str> {
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
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn journey_track(
    State(state): St,
    caller: Caller,
    Path((device, journey)): Path<(u64, String)>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let (d, j, _) = journey_of(&state, &caller, device, &journey)?;
    let from = parse_opt_time("from", &q.from)?.unwrap_or(i64::MIN);
    let to = parse_opt_time("to", &q.to)?.unwrap_or(i64::MAX);
    let track = state.store.track_between(d.tenant, d.id, j, from, to)?;
    let positions: Vec<Value> = track.iter().map(position_json).collect();
    Ok(Json(
        json!({"device": d.id.0, "journey": j.0.to_string(), "positions": positions}),
    ))
}

fn rules(state: &AppState) -> ReportRules {
    ReportRules {
        gap_us: state.config.gap.as_micros() as i64,
        stop_min_us: state.config.stop_min.as_micros() as i64,
        stop_radius_m: state.config.stop_radius_m,
    }
}

async fn journey_summary(
    State(state): St,
    caller: Caller,
    Path((device, journey)): Path<(u64, String)>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let (d, j, _) = journey_of(&state, &caller, device, &journey)?;
    let track = state.store.track(d.tenant, d.id, j)?;
    let summary = report::summarize(&track, &rules(&state));
    Ok(Json(
        json!({"device": d.id.0, "journey": j.0.to_string(), "summary": summary}),
    ))
}

async fn device_day(
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

async fn live(State(state): St, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let mut out = Vec::new();
    for d in state.store.devices(Some(caller.tenant))? {
        let last = state.store.last_position(d.tenant, d.id)?;
        out.push(json!({"device": d.id.0, "name": d.name, "user": d.user, "blocked": d.blocked, "position": last.as_ref().map(position_json)}));
    }
    Ok(Json(json!({"devices": out})))
}

// ---- exports ----

fn stream_export(
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
        for (i, (d, j, from, to)) in parts.iter().enumerate() {
            // One journey in memory at a time: an export of a year costs what its longest
            // journey costs.
            match state.store.track_between(d.tenant, d.id, *j, *from, *to) {
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

type ExportParts = Vec<(DeviceRecord, JourneyId, i64, i64)>;

/// Streams a Parquet export: row groups leave as they fill, the footer last.
fn write_parquet(
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
    for (d, j, from, to) in parts {
        let written = state
            .store
            .track_between(d.tenant, d.id, j, from, to)
            .map_err(|e| e.to_string())
            .and_then(|track| {
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

fn parse_format(s: &str) -> ApiResult<Format> {
    Format::parse(s).ok_or_else(|| {
        ApiError::BadRequest(format!("format {s}: expected gpx, geojson, csv or parquet"))
    })
}

async fn export_journey(
    State(state): St,
    caller: Caller,
    Path((device, journey, format)): Path<(u64, String, String)>,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    let format = parse_format(&format)?;
    let (d, j, _) = journey_of(&state, &caller, device, &journey)?;
    let title = format!("device-{}-journey-{}", d.id.0, j.0);
    Ok(stream_export(
        state.clone(),
        format,
        title,
        vec![(d, j, i64::MIN, i64::MAX)],
    ))
}

async fn export_device(
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
        {
            parts.push((f, d.clone(), j));
        }
    }
    parts.sort_by_key(|(f, _, j)| (*f, j.0));
    let parts = parts
        .into_iter()
        .map(|(_, d, j)| (d, j, from, to))
        .collect();
    Ok(stream_export(
        state.clone(),
        format,
        format!("device-{}", d.id.0),
        parts,
    ))
}

// ---- administration ----

fn device_json(d: &DeviceRecord) -> Value {
    json!({"id": d.id.0, "name": d.name, "user": d.user, "blocked": d.blocked, "created_at": rfc3339(d.created_us)})
}

async fn list_devices(State(state): St, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(ADMINS)?;
    let devices: Vec<Value> = state
        .store
        .devices(Some(caller.tenant))?
        .iter()
        .map(device_json)
        .collect();
    Ok(Json(json!({"devices": devices})))
}

#[derive(Debug, Deserialize)]
struct NewDevice {
    name: String,
    user: Option<String>,
}

async fn add_device(
    State(state): St,
    caller: Caller,
    Json(req): Json<NewDevice>,
) -> ApiResult<Response> {
    caller.require(ADMINS)?;
    if req.name.is_empty() || req.name.len() > 128 {
        return Err(ApiError::BadRequest("name: 1 to 128 bytes".into()));
    }
    if let Some(u) = &req.user
        && state.store.user(caller.tenant, u)?.is_none()
    {
        return Err(ApiError::BadRequest(format!(
            "user {u}: no such user in your company"
        )));
    }
    let (mut d, secret) = state
        .store
        .add_device(caller.tenant, &req.name, state.now())?;
    if req.user.is_some() {
        d = state.store.assign_device(d.id, req.user)?;
    }
    let credential = format!("jd1.{}.{}", d.id.0, hex::encode(secret));
    let mut body = device_json(&d);
    body["credential"] = json!(credential);
    Ok(with_note(
        (StatusCode::CREATED, Json(body)).into_response(),
        AuditNote {
            target: Some(format!("device/{}", d.id.0)),
            ..AuditNote::default()
        },
    ))
}

async fn set_blocked(
    state: &AppState,
    caller: &Caller,
    device: u64,
    blocked: bool,
) -> ApiResult<Json<Value>> {
    caller.require(ADMINS)?;
    let d = device_of(state, caller, device)?;
    if blocked {
        state
            .ingest
            .block_device(d.id)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    } else {
        state.store.set_blocked(d.id, false)?;
    }
    Ok(Json(json!({"id": d.id.0, "blocked": blocked})))
}

async fn block_device(
    State(state): St,
    caller: Caller,
    Path(device): Path<u64>,
) -> ApiResult<Json<Value>> {
    set_blocked(&state, &caller, device, true).await
}

async fn unblock_device(
    State(state): St,
    caller: Caller,
    Path(device): Path<u64>,
) -> ApiResult<Json<Value>> {
    set_blocked(&state, &caller, device, false).await
}

async fn list_users(State(state): St, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(ADMINS)?;
    let now = state.now();
    let users: Vec<Value> = state
        .store
        .users(caller.tenant)?
        .iter()
        .map(|u| {
            json!({
                "username": u.username,
                "role": u.role,
                "locked": u.locked_until_us > now,
                "locked_until": (u.locked_until_us > now).then(|| rfc3339(u.locked_until_us)),
                "failed_logins": u.failed_logins,
                "password_changed_at": rfc3339(u.password_changed_us),
            })
        })
        .collect();
    let sources: Vec<Value> = state
        .sessions
        .locked_sources(now)
        .iter()
        .map(|(ip, until)| json!({"source": ip.to_string(), "locked_until": rfc3339(*until)}))
        .collect();
    Ok(Json(json!({"users": users, "locked_sources": sources})))
}

#[derive(Debug, Deserialize)]
struct NewUser {
    username: String,
    role: Role,
    password: Option<String>,
}

async fn add_user(
    State(state): St,
    caller: Caller,
    Json(req): Json<NewUser>,
) -> ApiResult<Response> {
    caller.require(ADMINS)?;
    if state.store.user(caller.tenant, &req.username)?.is_some() {
        return Err(ApiError::Conflict(format!("user {} exists", req.username)));
    }
    let generated = req.password.is_none();
    let password = match req.password {
        Some(p) => p,
        None => auth::random_password()?,
    };
    let user = auth::new_user(
        caller.tenant,
        &req.username,
        req.role,
        &password,
        state.now(),
    )?;
    state.store.put_user(&user)?;
    let body = json!({"username": user.username, "role": user.role, "password": generated.then_some(password)});
    Ok(with_note(
        (StatusCode::CREATED, Json(body)).into_response(),
        AuditNote {
            target: Some(format!("user/{}", user.username)),
            ..AuditNote::default()
        },
    ))
}

async fn unlock_user(
    State(state): St,
    caller: Caller,
    Path(username): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(ADMINS)?;
    let mut user = state
        .store
        .user(caller.tenant, &username)?
        .ok_or(ApiError::NotFound)?;
    user.failed_logins = 0;
    user.locked_until_us = 0;
    state.store.put_user(&user)?;
    Ok(Json(json!({"username": username, "locked": false})))
}

async fn unlock_source(
    State(state): St,
    caller: Caller,
    Path(ip): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(ADMINS)?;
    let ip: std::net::IpAddr = ip
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{ip}: not an IP address")))?;
    let was_locked = state.sessions.unlock_source(ip);
    Ok(Json(
        json!({"source": ip.to_string(), "was_locked": was_locked}),
    ))
}

async fn get_policy(State(state): St, caller: Caller) -> ApiResult<Json<TenantPolicy>> {
    caller.require(ADMINS)?;
    Ok(Json(policy_of(&state, &caller)?))
}

async fn put_policy(
    State(state): St,
    caller: Caller,
    Json(policy): Json<TenantPolicy>,
) -> ApiResult<Json<TenantPolicy>> {
    caller.require(ADMINS)?;
    if policy.time_zone.parse::<chrono_tz::Tz>().is_err() {
        return Err(ApiError::BadRequest(format!(
            "time_zone {}: not an IANA time zone",
            policy.time_zone
        )));
    }
    if !matches!(policy.tracking.as_str(), "journeys" | "always") {
        return Err(ApiError::BadRequest("tracking: journeys or always".into()));
    }
    if policy.hot_retention_days == 0 || policy.journey_silence_minutes == 0 {
        return Err(ApiError::BadRequest(
            "hot_retention_days and journey_silence_minutes must be at least 1".into(),
        ));
    }
    Ok(Json(state.store.set_policy(caller.tenant, policy)?.policy))
}

#[derive(Debug, Deserialize)]
struct AuditParams {
    from: Option<String>,
    to: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

fn audit_query(p: &AuditParams, default_limit: usize) -> ApiResult<AuditQuery> {
    Ok(AuditQuery {
        from_us: parse_opt_time("from", &p.from)?,
        to_us: parse_opt_time("to", &p.to)?,
        actor: p.actor.clone(),
        action: p.action.clone(),
        after: p
            .cursor
            .as_deref()
            .map(|c| {
                hex::decode(c).map_err(|_| {
                    ApiError::BadRequest("cursor: not a cursor this API handed out".into())
                })
            })
            .transpose()?,
        limit: p
            .limit
            .unwrap_or(default_limit)
            .clamp(1, default_limit.max(1)),
    })
}

async fn audit_log(
    State(state): St,
    caller: Caller,
    Query(p): Query<AuditParams>,
) -> ApiResult<Json<Value>> {
    caller.require(ADMINS)?;
    let (entries, next) = state.store.audit(caller.tenant, &audit_query(&p, 1000)?)?;
    let entries: Vec<Value> = entries.iter().map(|e| json!({"at": rfc3339(e.at_us), "actor": e.actor, "action": e.action, "target": e.target, "result": e.result, "source": e.source})).collect();
    Ok(Json(
        json!({"entries": entries, "next_cursor": next.map(hex::encode)}),
    ))
}

async fn audit_csv(
    State(state): St,
    caller: Caller,
    Query(p): Query<AuditParams>,
) -> ApiResult<Response> {
    caller.require(ADMINS)?;
    let (entries, _) = state
        .store
        .audit(caller.tenant, &audit_query(&p, 1_000_000)?)?;
    let mut out = String::from("at,actor,action,target,result,source\n");
    for e in entries {
        let cells = [
            rfc3339(e.at_us),
            e.actor,
            e.action,
            e.target,
            e.result,
            e.source,
        ];
        let row: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response())
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
