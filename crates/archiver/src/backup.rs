//! Backups: a consistent RocksDB checkpoint, packed as tar, encrypted under the master key
//! (`journeyd_keys::stream`), uploaded as `backups/<UTC time>-<random>.jdbackup`. A node is
//! rebuilt from the latest backup plus the archive: unpack, then rebuild the archive index from
//! the objects (journeys archived after the backup leave the hot store then).
//!
//! The master key is not in the backup: the operator keeps it, and the restore needs it.

use std::path::{Path, PathBuf};

use journeyd_keys::MasterKey;
use journeyd_keys::stream::{DecryptingReader, EncryptingWriter};
use journeyd_objects::ObjectStore;
use journeyd_store::HotStore;

use crate::{ArchiverError, io, random_suffix};

/// Object names of backups start with this.
pub const PREFIX: &str = "backups/";

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupReport {
    pub object: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Takes a backup of `store` into `objects`, using `work_dir` for the checkpoint and the file.
pub async fn backup(
    store: &HotStore,
    objects: &ObjectStore,
    master: &MasterKey,
    work_dir: &Path,
    now_us: i64,
) -> Result<BackupReport, ArchiverError> {
    std::fs::create_dir_all(work_dir).map_err(io(format!("creating {}", work_dir.display())))?;
    let scratch = tempfile::Builder::new()
        .prefix("backup-")
        .tempdir_in(work_dir)
        .map_err(io(format!("a folder in {}", work_dir.display())))?;
    let checkpoint = scratch.path().join("checkpoint");
    store.checkpoint(&checkpoint)?;
    let packed = scratch.path().join("backup.jdbackup");
    {
        let file = std::fs::File::create(&packed).map_err(io(packed.display().to_string()))?;
        let sealed = EncryptingWriter::new(master, std::io::BufWriter::new(file))?;
        let mut tar = tar::Builder::new(sealed);
        tar.append_dir_all(".", &checkpoint)
            .map_err(io(format!("packing {}", checkpoint.display())))?;
        let sealed = tar.into_inner().map_err(io("finishing the tar stream"))?;
        let file = sealed
            .finish()
            .map_err(io("sealing the backup"))?
            .into_inner()
            .map_err(|e| ArchiverError::Invalid(format!("flushing the backup: {e}")))?;
        file.sync_all().map_err(io(packed.display().to_string()))?;
    }
    // Named by the wall clock, never a drill's clock override: "latest" must be the newest.
    let wall_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(now_us, |d| d.as_micros() as i64);
    let time = chrono::DateTime::from_timestamp_micros(wall_us)
        .map(|t| t.format("%Y%m%dT%H%M%S%.6fZ").to_string())
        .unwrap_or_else(|| wall_us.to_string());
    let object = format!("{PREFIX}{time}-{}.jdbackup", random_suffix());
    let uploaded = objects.put_file(&object, &packed).await?;
    // Read it back before calling it a backup.
    let size = objects.size(&object).await?;
    if size != Some(uploaded.size) {
        return Err(ArchiverError::Verification {
            object,
            detail: format!("size {size:?}, uploaded {}", uploaded.size),
        });
    }
    tracing::info!(object, bytes = uploaded.size, "backup uploaded");
    Ok(BackupReport {
        object,
        bytes: uploaded.size,
        sha256: uploaded.sha256,
    })
}

/// The newest backup's object name.
pub async fn latest(objects: &ObjectStore) -> Result<Option<String>, ArchiverError> {
    Ok(objects
        .list(PREFIX)
        .await?
        .into_iter()
        .map(|o| o.name)
        .filter(|n| n.ends_with(".jdbackup"))
        .max())
}

/// Unpacks a backup (the latest when `name` is `None`) into `hot_dir`, which must not exist
/// yet. Returns the backup's name.
pub async fn restore_backup(
    objects: &ObjectStore,
    master: &MasterKey,
    hot_dir: &Path,
    name: Option<&str>,
) -> Result<String, ArchiverError> {
    if hot_dir.exists() {
        return Err(ArchiverError::Invalid(format!(
            "{} exists; restore-backup rebuilds a node into an empty place (move the old store away first)",
            hot_dir.display()
        )));
    }
    let name = match name {
        Some(n) => n.to_owned(),
        None => latest(objects).await?.ok_or_else(|| {
            ArchiverError::Invalid(format!(
                "no backup under {PREFIX} in {}",
                objects.describe()
            ))
        })?,
    };
    let parent = hot_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).map_err(io(format!("creating {}", parent.display())))?;
    let scratch = tempfile::Builder::new()
        .prefix("restore-")
        .tempdir_in(&parent)
        .map_err(io(format!("a folder in {}", parent.display())))?;
    let packed = scratch.path().join("backup.jdbackup");
    objects.get_to_file(&name, &packed).await?;
    let unpacked = scratch.path().join("hot");
    {
        let file = std::fs::File::open(&packed).map_err(io(packed.display().to_string()))?;
        let plain = DecryptingReader::new(master, std::io::BufReader::new(file))?;
        tar::Archive::new(plain)
            .unpack(&unpacked)
            .map_err(io(format!("unpacking {name}")))?;
    }
    std::fs::rename(&unpacked, hot_dir)
        .map_err(io(format!("moving into {}", hot_dir.display())))?;
    tracing::info!(backup = name, into = %hot_dir.display(), "backup restored");
    Ok(name)
}
