//! Devices, users, policy and the audit log (admin).

use super::*;

// ---- administration ----

pub(super) fn device_json(d: &DeviceRecord) -> Value {
    json!({"id": d.id.0, "name": d.name, "user": d.user, "blocked": d.blocked, "created_at": rfc3339(d.created_us)})
}

pub(super) async fn list_devices(State(state): St, caller: Caller) -> ApiResult<Json<Value>> {
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
pub(super) struct NewDevice {
    name: String,
    user: Option<String>,
}

pub(super) async fn add_device(
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

pub(super) async fn set_blocked(
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

pub(super) async fn block_device(
    State(state): St,
    caller: Caller,
    Path(device): Path<u64>,
) -> ApiResult<Json<Value>> {
    set_blocked(&state, &caller, device, true).await
}

pub(super) async fn unblock_device(
    State(state): St,
    caller: Caller,
    Path(device): Path<u64>,
) -> ApiResult<Json<Value>> {
    set_blocked(&state, &caller, device, false).await
}

pub(super) async fn list_users(State(state): St, caller: Caller) -> ApiResult<Json<Value>> {
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
pub(super) struct NewUser {
    username: String,
    role: Role,
    password: Option<String>,
}

pub(super) async fn add_user(
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

pub(super) async fn unlock_user(
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

pub(super) async fn unlock_source(
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

pub(super) async fn get_policy(State(state): St, caller: Caller) -> ApiResult<Json<TenantPolicy>> {
    caller.require(ADMINS)?;
    Ok(Json(policy_of(&state, &caller)?))
}

pub(super) async fn put_policy(
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
pub(super) struct AuditParams {
    from: Option<String>,
    to: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub(super) fn audit_query(p: &AuditParams, default_limit: usize) -> ApiResult<AuditQuery> {
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

pub(super) async fn audit_log(
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

pub(super) async fn audit_csv(
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

pub(super) fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
