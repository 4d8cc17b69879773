//! The one middleware: resolve the caller, run the handler, append the audit entry.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use journeyd_store::{AuditEntry, TenantId};

use crate::AppState;
use crate::auth::Caller;

/// The client's address, set per connection by the TLS listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// What a handler tells the audit log beyond the request line: the tenant and actor of an
/// anonymous call (a login), or a better target name.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditNote {
    pub(crate) tenant: Option<TenantId>,
    pub(crate) actor: Option<String>,
    pub(crate) target: Option<String>,
}

pub(crate) async fn layer(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let now = state.now();
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let caller = bearer(&req).and_then(|t| state.sessions.resolve(t, now));
    if let Some(c) = &caller {
        req.extensions_mut().insert(c.clone());
    }
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();

    let response = next.run(req).await;

    // Health and metrics probes are machine traffic, not access to anyone's data.
    if matches!(route.as_deref(), Some("/healthz" | "/readyz" | "/metrics")) {
        return response;
    }
    let note = response
        .extensions()
        .get::<AuditNote>()
        .cloned()
        .unwrap_or_default();
    let Some(tenant) = caller.as_ref().map(|c| c.tenant).or(note.tenant) else {
        // A call that names no tenant (bad token, unknown company) is logged, not audited:
        // the audit log is per company.
        tracing::info!(%method, path = %target, status = response.status().as_u16(), "unauthenticated request");
        return response;
    };
    let entry = AuditEntry {
        at_us: now,
        tenant,
        actor: note
            .actor
            .or_else(|| caller.as_ref().map(Caller::actor))
            .unwrap_or_else(|| "anonymous".into()),
        action: format!("{method} {}", route.unwrap_or_else(|| "(no route)".into())),
        target: note.target.unwrap_or(target),
        result: response.status().as_u16().to_string(),
        source: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
    };
    if let Err(e) = state.store.append_audit(&entry) {
        tracing::error!(error = %e, action = %entry.action, "cannot append to the audit log");
    }
    response
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}
