//! The crate's one error type, and the capped list of per-record warnings.
//!
//! An [`ImportError`] means the file as a whole could not be read; every variant names the file,
//! and where it applies the line, record or byte offset. Damage that still leaves positions to
//! read (a bad checksum on one NMEA line, a truncated FIT file) is a [`Warning`] instead.

use std::io;
use std::path::PathBuf;

use crate::{Format, Warning};

/// Warnings kept per file; after these, one last warning counts the rest.
pub const MAX_WARNINGS: usize = 100;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be opened or read.
    #[error("cannot read {}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },

    /// The file has no bytes, or only white space.
    #[error("{}: the file is empty", path.display())]
    Empty { path: PathBuf },

    /// Neither the extension nor the content says which format the file is in.
    #[error(
        "{}: unknown track format: the extension is not one of gpx, fit, nmea, csv, plt, \
         geojson, and the content looks like none of them",
        path.display()
    )]
    UnknownFormat { path: PathBuf },

    /// The content is not a readable file of its format.
    #[error("{}: {location}: not a readable {format} file: {message}", path.display())]
    Malformed {
        path: PathBuf,
        format: Format,
        /// `line 17`, `byte 0x303`, `record 12` or `file`.
        location: String,
        message: String,
    },

    /// A delimited text file without columns that could hold a latitude and a longitude.
    #[error(
        "{}: {location}: no latitude and longitude columns found (columns: {columns})",
        path.display()
    )]
    MissingColumns {
        path: PathBuf,
        location: String,
        columns: String,
    },

    /// The parser library panicked on this input; the panic was caught.
    #[error("{}: the {format} parser failed on this input: {message}", path.display())]
    ParserPanic {
        path: PathBuf,
        format: Format,
        message: String,
    },
}

impl ImportError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            ImportError::Io { path, .. }
            | ImportError::Empty { path }
            | ImportError::UnknownFormat { path }
            | ImportError::Malformed { path, .. }
            | ImportError::MissingColumns { path, .. }
            | ImportError::ParserPanic { path, .. } => path,
        }
    }
}

/// `text` with its first letter lower-case: messages of the parser crates start capitalised,
/// this crate's do not.
pub(crate) fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Warnings of one file, capped at [`MAX_WARNINGS`] so that a file of a million bad lines does
/// not make a million warnings.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    kept: Vec<Warning>,
    dropped: usize,
}

impl Warnings {
    pub(crate) fn push(&mut self, location: impl Into<String>, message: impl Into<String>) {
        if self.kept.len() < MAX_WARNINGS {
            self.kept.push(Warning {
                location: location.into(),
                message: message.into(),
            });
        } else {
            self.dropped += 1;
        }
    }

    pub(crate) fn into_vec(mut self) -> Vec<Warning> {
        if self.dropped > 0 {
            self.kept.push(Warning {
                location: "file".to_string(),
                message: format!("{} more warnings not listed", self.dropped),
            });
        }
        self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_capped_and_counted() {
        let mut w = Warnings::default();
        for i in 0..MAX_WARNINGS + 5 {
            w.push(format!("line {i}"), "bad");
        }
        let v = w.into_vec();
        assert_eq!(v.len(), MAX_WARNINGS + 1);
        assert_eq!(
            v.last().map(|w| w.message.as_str()),
            Some("5 more warnings not listed")
        );
    }

    #[test]
    fn messages_name_the_file() {
        let e = ImportError::Malformed {
            path: PathBuf::from("a/b.fit"),
            format: Format::Fit,
            location: "byte 0x10".into(),
            message: "header too short".into(),
        };
        assert_eq!(
            e.to_string(),
            "a/b.fit: byte 0x10: not a readable fit file: header too short"
        );
        assert_eq!(e.path(), std::path::Path::new("a/b.fit"));
    }
}
