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

mod admin;
mod archive;
mod reads;

use admin::*;
use archive::*;
use reads::*;

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
        .route("/api/v1/archive/journeys", get(search_archive))
        .route(
            "/api/v1/archive/devices/{device}/journeys/{journey}",
            get(archived_journey),
        )
        .route(
            "/api/v1/archive/devices/{device}/journeys/{journey}/restore",
            post(restore_journey),
        )
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
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::layer,
        ))
        .with_state(state)
}

/// Error answers written by the framework itself (a body that is not JSON, a path or query that
/// does not parse) come as plain text; every error of this API is `{"error": "..."}`.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    // Framework rejections of a malformed request are the caller's mistake: 400.
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY
        || status == StatusCode::UNSUPPORTED_MEDIA_TYPE
    {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    (status, Json(json!({ "error": text }))).into_response()
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
