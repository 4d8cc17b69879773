//! Objects as files under a folder: what the embedded default archives into.

use std::path::{Path, PathBuf};

use crate::{Attempt, ListedObject, ObjectError};

#[derive(Debug)]
pub(crate) struct LocalStore {
    dir: PathBuf,
}

const PARTIAL: &str = ".partial-";

fn io_attempt(e: std::io::Error) -> Attempt {
    if e.kind() == std::io::ErrorKind::NotFound {
        Attempt::NotFound
    } else {
        // A full or failing disk may recover; the caller's retries and logs cover it.
        Attempt::Transient(e.to_string())
    }
}

impl LocalStore {
    pub(crate) fn open(dir: &Path) -> Result<Self, ObjectError> {
        std::fs::create_dir_all(dir).map_err(|source| ObjectError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Copies to a partial file, syncs it, renames it into place and syncs the folder: a crash
    /// leaves either no object or the whole one.
    pub(crate) fn put_file(&self, name: &str, from: &Path) -> Result<(), Attempt> {
        let to = self.path(name);
        let dir = to.parent().expect("names are relative and non-empty");
        std::fs::create_dir_all(dir).map_err(io_attempt)?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| Attempt::Transient(e.to_string()))?;
        let partial = dir.join(format!(
            "{}{PARTIAL}{}",
            to.file_name().and_then(|n| n.to_str()).unwrap_or("object"),
            hex::encode(suffix)
        ));
        let result = (|| {
            std::fs::copy(from, &partial)?;
            std::fs::File::open(&partial)?.sync_all()?;
            std::fs::rename(&partial, &to)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result.map_err(|e| Attempt::Transient(format!("{}: {e}", to.display())))
    }

    pub(crate) fn size(&self, name: &str) -> Result<u64, Attempt> {
        Ok(std::fs::metadata(self.path(name))
            .map_err(io_attempt)?
            .len())
    }

    pub(crate) fn get(&self, name: &str) -> Result<bytes::Bytes, Attempt> {
        Ok(std::fs::read(self.path(name)).map_err(io_attempt)?.into())
    }

    pub(crate) fn get_to_file(&self, name: &str, to: &Path) -> Result<u64, Attempt> {
        std::fs::copy(self.path(name), to).map_err(io_attempt)
    }

    pub(crate) fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, Attempt> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Attempt::Transient(e.to_string())),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Attempt::Transient(e.to_string()))?;
                let path = entry.path();
                let meta = entry
                    .metadata()
                    .map_err(|e| Attempt::Transient(e.to_string()))?;
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.dir) else {
                    continue;
                };
                let Some(name) = rel.to_str().map(|s| s.replace('\\', "/")) else {
                    continue;
                };
                if name.contains(PARTIAL) || !name.starts_with(prefix) {
                    continue;
                }
                out.push(ListedObject {
                    name,
                    size: meta.len(),
                });
            }
        }
        Ok(out)
    }

    pub(crate) fn delete(&self, name: &str) -> Result<(), Attempt> {
        std::fs::remove_file(self.path(name)).map_err(io_attempt)
    }
}
