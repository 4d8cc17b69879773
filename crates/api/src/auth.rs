//! Logins, tokens, lockout and password expiry.
//!
//! Passwords are hashed with argon2id (memory-hard). A good login returns a random bearer token
//! that lives `token_ttl`; tokens are kept in memory only, so a restart logs everyone out.
//! Failed logins count per account (stored, so a restart does not clear a lock) and per source
//! address (in memory). An account whose password is older than its company's maximum age may
//! log in, but may only change its password.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use journeyd_store::{Role, TenantId, UserRecord};

use crate::{ApiError, AppState};

const DAY_US: i64 = 86_400_000_000;
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Who is calling, resolved from the bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: TenantId,
    pub username: String,
    pub role: Role,
    /// The password has expired: only a password change is allowed.
    pub must_change_password: bool,
}

impl Caller {
    /// The audit log's name for this caller.
    pub fn actor(&self) -> String {
        format!("user:{}", self.username)
    }

    /// Refuses unless the caller's role is one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if self.must_change_password {
            return Err(ApiError::Forbidden("password expired; change it first"));
        }
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden("your role does not allow this"))
        }
    }
}

/// Roles that may read journeys, tracks, summaries and exports.
pub const READERS: &[Role] = &[Role::Reporter, Role::Investigator];
/// Roles that may administer users, devices, policy and the audit log.
pub const ADMINS: &[Role] = &[Role::Admin];

#[derive(Debug, Clone)]
struct Session {
    caller: Caller,
    expires_us: i64,
}

#[derive(Debug, Default)]
struct SourceFailures {
    count: u32,
    since_us: i64,
    locked_until_us: i64,
}

/// Live tokens and per-source failure counts.
#[derive(Debug, Default)]
pub struct Sessions {
    tokens: Mutex<HashMap<String, Session>>,
    sources: Mutex<HashMap<IpAddr, SourceFailures>>,
}

impl Sessions {
    pub(crate) fn resolve(&self, token: &str, now_us: i64) -> Option<Caller> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        match tokens.get(token) {
            Some(s) if s.expires_us > now_us => Some(s.caller.clone()),
            Some(_) => {
                tokens.remove(token);
                None
            }
            None => None,
        }
    }

    fn issue(&self, caller: Caller, now_us: i64, expires_us: i64) -> Result<String, ApiError> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
        let token = hex::encode(raw);
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        // Expired tokens go when a new one is issued, so the map holds live sessions only.
        tokens.retain(|_, s| s.expires_us > now_us);
        tokens.insert(token.clone(), Session { caller, expires_us });
        Ok(token)
    }

    /// Ends every session of a user (after a password change).
    fn revoke_user(&self, tenant: TenantId, username: &str) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.retain(|_, s| !(s.caller.tenant == tenant && s.caller.username == username));
    }

    fn source_locked(&self, ip: IpAddr, now_us: i64) -> bool {
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.get(&ip).is_some_and(|s| s.locked_until_us > now_us)
    }

    fn source_failed(&self, ip: IpAddr, now_us: i64, window_us: i64, max: u32) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let s = sources.entry(ip).or_default();
        if now_us - s.since_us > window_us {
            s.count = 0;
            s.since_us = now_us;
        }
        s.count += 1;
        if s.count >= max {
            s.locked_until_us = now_us + window_us;
        }
    }

    /// Sources locked now, for the admin's view.
    pub(crate) fn locked_sources(&self, now_us: i64) -> Vec<(IpAddr, i64)> {
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources
            .iter()
            .filter(|(_, s)| s.locked_until_us > now_us)
            .map(|(ip, s)| (*ip, s.locked_until_us))
            .collect()
    }

    pub(crate) fn unlock_source(&self, ip: IpAddr) -> bool {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.remove(&ip).is_some()
    }
}

/// Hashes a password with argon2id and a fresh salt.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(format!("hashing: {e}")))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A real argon2 hash of nothing, so that a login for an unknown user costs what a wrong
/// password costs.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("journeyd: no such user").unwrap_or_default())
}

/// Checks a new password against the rules.
pub fn check_new_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(ApiError::BadRequest(format!(
            "a password needs at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

/// A random password for a new account (shown once).
pub fn random_password() -> Result<String, ApiError> {
    let mut raw = [0u8; 12];
    getrandom::fill(&mut raw).map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
    Ok(hex::encode(raw))
}

/// A successful login.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoginOk {
    pub token: String,
    pub expires_at: String,
    pub role: Role,
    pub password_expired: bool,
}

/// Checks a login and issues a token, applying lockout and expiry.
pub(crate) fn login(
    state: &AppState,
    tenant_name: &str,
    username: &str,
    password: &str,
    source: IpAddr,
) -> Result<LoginOk, ApiError> {
    let now = state.now();
    let window = state.config.lockout.as_micros() as i64;
    if state.sessions.source_locked(source, now) {
        return Err(ApiError::TooManyRequests(
            "too many failed logins from this address; try later".into(),
        ));
    }
    let tenant = state.store.tenant_by_name(tenant_name)?;
    let user = match &tenant {
        Some(t) => state.store.user(t.id, username)?,
        None => None,
    };
    let (Some(tenant), Some(mut user)) = (tenant, user) else {
        // Same work and answer as a wrong password, so names cannot be probed.
        let _ = verify_password(password, dummy_hash());
        state.sessions.source_failed(
            source,
            now,
            window,
            state.config.max_failed_logins_per_source,
        );
        return Err(ApiError::Unauthorized);
    };
    if user.locked_until_us > now {
        return Err(ApiError::Locked(format!(
            "account locked after {} failed logins; an admin can lift it",
            user.failed_logins
        )));
    }
    if !verify_password(password, &user.password_hash) {
        state.sessions.source_failed(
            source,
            now,
            window,
            state.config.max_failed_logins_per_source,
        );
        user.failed_logins += 1;
        if user.failed_logins >= state.config.max_failed_logins {
            user.locked_until_us = now + window;
        }
        state.store.put_user(&user)?;
        return Err(ApiError::Unauthorized);
    }
    if user.failed_logins > 0 || user.locked_until_us != 0 {
        user.failed_logins = 0;
        user.locked_until_us = 0;
        state.store.put_user(&user)?;
    }
    let max_age = tenant.policy.password_max_age_days as i64 * DAY_US;
    let expired = max_age > 0 && now - user.password_changed_us > max_age;
    let expires_us = now + state.config.token_ttl.as_micros() as i64;
    let caller = Caller {
        tenant: tenant.id,
        username: user.username.clone(),
        role: user.role,
        must_change_password: expired,
    };
    let token = state.sessions.issue(caller, now, expires_us)?;
    Ok(LoginOk {
        token,
        expires_at: crate::routes::rfc3339(expires_us),
        role: user.role,
        password_expired: expired,
    })
}

/// Changes the caller's password and ends their other sessions.
pub(crate) fn change_password(
    state: &AppState,
    caller: &Caller,
    old: &str,
    new: &str,
) -> Result<(), ApiError> {
    let mut user = state
        .store
        .user(caller.tenant, &caller.username)?
        .ok_or(ApiError::Unauthorized)?;
    if !verify_password(old, &user.password_hash) {
        return Err(ApiError::Unauthorized);
    }
    check_new_password(new)?;
    if new == old {
        return Err(ApiError::BadRequest(
            "the new password must differ from the old one".into(),
        ));
    }
    user.password_hash = hash_password(new)?;
    user.password_changed_us = state.now();
    state.store.put_user(&user)?;
    state.sessions.revoke_user(caller.tenant, &caller.username);
    Ok(())
}

/// Creates a user with a password; returns the record.
pub fn new_user(
    tenant: TenantId,
    username: &str,
    role: Role,
    password: &str,
    now_us: i64,
) -> Result<UserRecord, ApiError> {
    if username.is_empty()
        || username.len() > 64
        || !username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
    {
        return Err(ApiError::BadRequest(
            "a username is 1 to 64 letters, digits or . _ - @".into(),
        ));
    }
    check_new_password(password)?;
    Ok(UserRecord {
        tenant,
        username: username.to_owned(),
        role,
        password_hash: hash_password(password)?,
        password_changed_us: now_us,
        created_us: now_us,
        failed_logins: 0,
        locked_until_us: 0,
    })
}
