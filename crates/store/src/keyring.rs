//! The tenants' data keys: created with the tenant, stored wrapped by the master key in the
//! `keys` column family, unwrapped once and cached.

use std::collections::HashMap;
use std::sync::RwLock;

use journeyd_keys::{ChunkCipher, DataKey, MasterKey, WrappedKey};

use crate::keys::CF_KEYS;
use crate::{HotStore, StoreError, TenantId};

#[derive(Debug)]
pub(crate) struct Keyring {
    master: Option<MasterKey>,
    unwrapped: RwLock<HashMap<TenantId, (DataKey, ChunkCipher)>>,
}

impl Keyring {
    pub(crate) fn new(master: Option<MasterKey>) -> Self {
        Self {
            master,
            unwrapped: RwLock::new(HashMap::new()),
        }
    }

    fn master(&self) -> Result<&MasterKey, StoreError> {
        self.master.as_ref().ok_or_else(|| {
            StoreError::Invalid("the store was opened without the master key".into())
        })
    }
}

impl HotStore {
    /// A tenant's data key and chunk cipher: cached, or unwrapped from the `keys` column family.
    fn tenant_keys(&self, t: TenantId) -> Result<(DataKey, ChunkCipher), StoreError> {
        let cached = self
            .keyring
            .unwrapped
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&t)
            .cloned();
        match cached {
            Some(keys) => Ok(keys),
            None => self.load_tenant_key(t),
        }
    }

    /// The cipher of a tenant's hot chunks.
    pub(crate) fn chunk_cipher(&self, t: TenantId) -> Result<ChunkCipher, StoreError> {
        Ok(self.tenant_keys(t)?.1)
    }

    /// A tenant's data key (for archive files and `journeyd keys export`).
    pub fn tenant_key(&self, t: TenantId) -> Result<DataKey, StoreError> {
        Ok(self.tenant_keys(t)?.0)
    }

    fn load_tenant_key(&self, t: TenantId) -> Result<(DataKey, ChunkCipher), StoreError> {
        let wrapped: WrappedKey = self
            .get_json(CF_KEYS, &t.0.to_be_bytes())?
            .ok_or(StoreError::NoTenantKey(t.0))?;
        let key = self.keyring.master()?.unwrap(t.0, &wrapped)?;
        let cipher = key.chunk_cipher();
        self.keyring
            .unwrapped
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(t, (key.clone(), cipher.clone()));
        Ok((key, cipher))
    }

    /// A fresh data key for a new tenant, wrapped, to be written with the tenant's record.
    pub(crate) fn new_tenant_key(&self, t: TenantId, now_us: i64) -> Result<Vec<u8>, StoreError> {
        let key = DataKey::generate()?;
        let wrapped = self.keyring.master()?.wrap(t.0, &key, now_us)?;
        Ok(serde_json::to_vec(&wrapped).expect("plain struct serialises"))
    }

    /// Checks that the master key opens every tenant's data key, so a wrong key stops the
    /// server at start with a clear message rather than at the first write.
    pub(crate) fn check_master_key(&self) -> Result<(), StoreError> {
        for t in self.tenants()? {
            match self.tenant_key(t.id) {
                // Destroyed on purpose: that tenant's data stays unreadable, everyone else's
                // store opens.
                Err(StoreError::NoTenantKey(_)) => continue,
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// Re-wraps every tenant's data key with `new` in one synced write. No chunk or archive file
    /// is rewritten; afterwards the store opens with `new` only.
    pub fn rotate_master_key(&self, new: &MasterKey, now_us: i64) -> Result<usize, StoreError> {
        let _guard = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = rocksdb::WriteBatch::default();
        let mut n = 0;
        for t in self.tenants()? {
            if self
                .get_json::<WrappedKey>(CF_KEYS, &t.id.0.to_be_bytes())?
                .is_none()
            {
                continue; // destroyed on purpose: stays destroyed
            }
            let key = self.tenant_key(t.id)?;
            let wrapped = new.wrap(t.id.0, &key, now_us)?;
            batch.put_cf(
                self.cf(CF_KEYS),
                t.id.0.to_be_bytes(),
                serde_json::to_vec(&wrapped).expect("plain struct serialises"),
            );
            n += 1;
        }
        self.db.write_opt(batch, &self.sync_write)?;
        Ok(n)
    }

    /// Destroys a tenant's data key ("crypto-shredding"): every chunk and archive file of that
    /// tenant becomes unreadable for good, and nobody else's. There is no undo.
    pub fn destroy_tenant_key(&self, t: TenantId) -> Result<(), StoreError> {
        let _guard = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        self.db
            .delete_cf_opt(self.cf(CF_KEYS), t.0.to_be_bytes(), &self.sync_write)?;
        self.keyring
            .unwrapped
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&t);
        Ok(())
    }
}
