//! People who use the query API: users of a company, with one role each. Password hashing and
//! the lockout rules live in journeyd-api; this module only keeps the records.

use rocksdb::{Direction, IteratorMode};
use serde::{Deserialize, Serialize};

use crate::keys::CF_USERS;
use crate::{HotStore, StoreError, TenantId};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Journeys, tracks, summaries, exports.
    Reporter,
    /// Everything a reporter may, plus archive search and restore.
    Investigator,
    /// Users, devices, policy and the audit log.
    Admin,
}

/// A user of one company.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub tenant: TenantId,
    pub username: String,
    pub role: Role,
    /// The password hash in PHC string form (argon2id).
    pub password_hash: String,
    pub password_changed_us: i64,
    pub created_us: i64,
    /// Failed logins since the last good one.
    #[serde(default)]
    pub failed_logins: u32,
    /// Locked until this instant after too many failed logins; 0 when not locked.
    #[serde(default)]
    pub locked_until_us: i64,
}

fn user_key(tenant: TenantId, username: &str) -> Vec<u8> {
    let mut k = tenant.0.to_be_bytes().to_vec();
    k.extend_from_slice(username.as_bytes());
    k
}

impl HotStore {
    /// Creates or replaces a user.
    pub fn put_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.put_json(CF_USERS, &user_key(user.tenant, &user.username), user)
    }

    pub fn user(&self, tenant: TenantId, username: &str) -> Result<Option<UserRecord>, StoreError> {
        self.get_json(CF_USERS, &user_key(tenant, username))
    }

    /// A company's users, by name.
    pub fn users(&self, tenant: TenantId) -> Result<Vec<UserRecord>, StoreError> {
        let prefix = tenant.0.to_be_bytes();
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_USERS),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|e| StoreError::corrupt("user", &k, e.to_string()))?,
            );
        }
        Ok(out)
    }
}
