//! Tenants and devices: who may send, and to which company their data belongs.

use rocksdb::IteratorMode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::{CF_DEVICES, CF_TENANTS};
use crate::{DeviceId, HotStore, StoreError, TenantId};

/// A company.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: String,
    /// SHA-256 of the enrolment code devices use to enrol themselves (hex).
    pub enrolment_code_hash: String,
    pub created_us: i64,
    #[serde(default)]
    pub policy: TenantPolicy,
}

/// What a company decides for itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantPolicy {
    /// IANA time zone for daily reports. Default `UTC`.
    pub time_zone: String,
    /// Days a finished journey stays in the hot store. Default 60.
    pub hot_retention_days: u32,
    /// Days a password stays valid; 0 means no expiry. Default 90.
    pub password_max_age_days: u32,
    /// Track only during journeys (`journeys`) or always (`always`). Default `journeys`.
    pub tracking: String,
    /// Silence after which a journey without an end is closed. Default 30 minutes.
    pub journey_silence_minutes: u32,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        Self {
            time_zone: "UTC".into(),
            hot_retention_days: 60,
            password_max_age_days: 90,
            tracking: "journeys".into(),
            journey_silence_minutes: 30,
        }
    }
}

/// An enrolled device. Only a hash of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub tenant: TenantId,
    pub name: String,
    /// SHA-256 of the device secret (hex). Secrets are 32 random bytes, so a fast hash is
    /// enough: there is nothing to guess.
    pub secret_hash: String,
    pub blocked: bool,
    pub created_us: i64,
    /// The person the device is assigned to (a username of its tenant), if any.
    #[serde(default)]
    pub user: Option<String>,
}

/// SHA-256 of a secret, hex-encoded.
pub fn hash_secret(secret: &[u8; 32]) -> String {
    Sha256::digest(secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_secret() -> Result<[u8; 32], StoreError> {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s)
        .map_err(|e| StoreError::Invalid(format!("no randomness available: {e}")))?;
    Ok(s)
}

/// Why a device could not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    UnknownOrWrongSecret,
    Blocked,
}

impl HotStore {
    pub(crate) fn put_json<T: Serialize>(
        &self,
        cf: &str,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).expect("records serialise to JSON");
        self.db
            .put_cf_opt(self.cf(cf), key, bytes, &self.sync_write)?;
        Ok(())
    }

    pub(crate) fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        cf: &str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.db.get_pinned_cf(self.cf(cf), key)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| {
                StoreError::corrupt(
                    if cf == CF_DEVICES { "device" } else { "tenant" },
                    key,
                    e.to_string(),
                )
            }),
        }
    }

    fn all_json<T: for<'de> Deserialize<'de>>(&self, cf: &str) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
            let (k, v) = item?;
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|e| StoreError::corrupt("record", &k, e.to_string()))?,
            );
        }
        Ok(out)
    }

    /// One above the highest id in `cf` (keys are big-endian ids, so the last key is the
    /// highest).
    fn next_id(&self, cf: &str) -> Result<u64, StoreError> {
        let last = self
            .db
            .iterator_cf(self.cf(cf), IteratorMode::End)
            .next()
            .transpose()?;
        Ok(match last {
            None => 1,
            Some((k, _)) if k.len() == 8 => crate::keys::u64_at(&k, 0).unwrap_or(0) + 1,
            Some((k, _)) => crate::keys::u32_at(&k, 0).unwrap_or(0) as u64 + 1,
        })
    }

    /// Creates a company and returns it with its enrolment code (shown once).
    pub fn create_tenant(
        &self,
        name: &str,
        now_us: i64,
    ) -> Result<(TenantRecord, [u8; 32]), StoreError> {
        let _guard = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.next_id(CF_TENANTS)?;
        let id =
            u32::try_from(id).map_err(|_| StoreError::Invalid("tenant ids exhausted".into()))?;
        let code = random_secret()?;
        let record = TenantRecord {
            id: TenantId(id),
            name: name.to_owned(),
            enrolment_code_hash: hash_secret(&code),
            created_us: now_us,
            policy: TenantPolicy::default(),
        };
        let key = self.new_tenant_key(TenantId(id), now_us)?;
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(
            self.cf(CF_TENANTS),
            id.to_be_bytes(),
            serde_json::to_vec(&record).expect("records serialise to JSON"),
        );
        batch.put_cf(self.cf(crate::keys::CF_KEYS), id.to_be_bytes(), key);
        self.db.write_opt(batch, &self.sync_write)?;
        Ok((record, code))
    }

    pub fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.all_json(CF_TENANTS)
    }

    pub fn tenant(&self, id: TenantId) -> Result<Option<TenantRecord>, StoreError> {
        self.get_json(CF_TENANTS, &id.0.to_be_bytes())
    }

    pub fn tenant_by_name(&self, name: &str) -> Result<Option<TenantRecord>, StoreError> {
        Ok(self.tenants()?.into_iter().find(|t| t.name == name))
    }

    /// The tenant whose enrolment code this is.
    pub fn tenant_by_enrolment_code(
        &self,
        code: &[u8; 32],
    ) -> Result<Option<TenantRecord>, StoreError> {
        let hash = hash_secret(code);
        Ok(self
            .tenants()?
            .into_iter()
            .find(|t| constant_time_eq(t.enrolment_code_hash.as_bytes(), hash.as_bytes())))
    }

    /// Replaces a tenant's policy.
    pub fn set_policy(
        &self,
        id: TenantId,
        policy: TenantPolicy,
    ) -> Result<TenantRecord, StoreError> {
        let _guard = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let mut t = self.tenant(id)?.ok_or(StoreError::UnknownTenant(id.0))?;
        t.policy = policy;
        self.put_json(CF_TENANTS, &id.0.to_be_bytes(), &t)?;
        Ok(t)
    }

    /// Replaces a tenant's enrolment code, returning the new one (shown once).
    pub fn rotate_enrolment_code(&self, id: TenantId) -> Result<[u8; 32], StoreError> {
        let _guard = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let mut t = self.tenant(id)?.ok_or(StoreError::UnknownTenant(id.0))?;
        let code = random_secret()?;
        t.enrolment_code_hash = hash_secret(&code);
        self.put_json(CF_TENANTS, &id.0.to_be_bytes(), &t)?;
        Ok(code)
    }

    /// Enrols a device and returns it with its secret (shown once; only the hash is stored).
    pub fn add_device(
        &self,
        tenant: TenantId,
        name: &str,
        now_us: i64,
    ) -> Result<(DeviceRecord, [u8; 32]), StoreError> {
        let _guard = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        if self.tenant(tenant)?.is_none() {
            return Err(StoreError::UnknownTenant(tenant.0));
        }
        let id = DeviceId(self.next_id(CF_DEVICES)?);
        let secret = random_secret()?;
        let record = DeviceRecord {
            id,
            tenant,
            name: name.to_owned(),
            secret_hash: hash_secret(&secret),
            blocked: false,
            created_us: now_us,
            user: None,
        };
        self.put_json(CF_DEVICES, &id.0.to_be_bytes(), &record)?;
        Ok((record, secret))
    }

    /// Assigns a device to a person (or to nobody).
    pub fn assign_device(
        &self,
        id: DeviceId,
        user: Option<String>,
    ) -> Result<DeviceRecord, StoreError> {
        let _guard = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let mut d = self.device(id)?.ok_or(StoreError::UnknownDevice(id.0))?;
        d.user = user;
        self.put_json(CF_DEVICES, &id.0.to_be_bytes(), &d)?;
        Ok(d)
    }

    pub fn device(&self, id: DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        self.get_json(CF_DEVICES, &id.0.to_be_bytes())
    }

    pub fn devices(&self, tenant: Option<TenantId>) -> Result<Vec<DeviceRecord>, StoreError> {
        let all: Vec<DeviceRecord> = self.all_json(CF_DEVICES)?;
        Ok(all
            .into_iter()
            .filter(|d| tenant.is_none_or(|t| d.tenant == t))
            .collect())
    }

    /// Blocks or unblocks a device. Returns the updated record.
    pub fn set_blocked(&self, id: DeviceId, blocked: bool) -> Result<DeviceRecord, StoreError> {
        let _guard = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let mut d = self.device(id)?.ok_or(StoreError::UnknownDevice(id.0))?;
        d.blocked = blocked;
        self.put_json(CF_DEVICES, &id.0.to_be_bytes(), &d)?;
        Ok(d)
    }

    /// Checks a device's credential.
    pub fn authenticate(
        &self,
        id: DeviceId,
        secret: &[u8; 32],
    ) -> Result<Result<DeviceRecord, AuthFailure>, StoreError> {
        let Some(d) = self.device(id)? else {
            return Ok(Err(AuthFailure::UnknownOrWrongSecret));
        };
        if !constant_time_eq(d.secret_hash.as_bytes(), hash_secret(secret).as_bytes()) {
            return Ok(Err(AuthFailure::UnknownOrWrongSecret));
        }
        if d.blocked {
            return Ok(Err(AuthFailure::Blocked));
        }
        Ok(Ok(d))
    }
}
