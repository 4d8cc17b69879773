//! An encrypted stream of any length (backups): a random key per stream, wrapped by the master
//! key, and AES-256-GCM segments of at most 1 MiB.
//!
//! ```text
//! "JDENC1\0\0"                      8 bytes
//! header length                     u32 LE
//! header                            JSON {"master_key_id", "wrapped_key"}
//! segments, each:
//!   sealed length                   u32 LE
//!   ciphertext ‖ tag                nonce = 0u32 ‖ segment index u64 BE (never repeats under
//!                                   the stream's own key); associated data = one byte, 1 on the
//!                                   last segment, else 0
//! ```
//! The last-segment flag makes a truncated stream an error instead of a shorter plaintext.

use std::io::{self, Read, Write};

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::{DataKey, KeyError, MasterKey};

const MAGIC: &[u8; 8] = b"JDENC1\0\0";
const SEGMENT: usize = 1 << 20;
const TAG: usize = 16;
const STREAM_AAD: &[u8] = b"journeyd stream key";

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    master_key_id: String,
    wrapped_key: String,
}

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn cipher(key: &DataKey) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.bytes()).expect("32-byte key"))
}

/// Encrypts everything written to it onto `inner`; call [`EncryptingWriter::finish`].
pub struct EncryptingWriter<W: Write> {
    inner: W,
    key: LessSafeKey,
    buf: Vec<u8>,
    index: u64,
}

impl<W: Write> std::fmt::Debug for EncryptingWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptingWriter")
            .field("segments", &self.index)
            .finish_non_exhaustive()
    }
}

impl<W: Write> EncryptingWriter<W> {
    pub fn new(master: &MasterKey, mut inner: W) -> Result<Self, KeyError> {
        let key = DataKey::generate()?;
        let header = Header {
            master_key_id: master.id().to_owned(),
            wrapped_key: base64::engine::general_purpose::STANDARD
                .encode(master.seal(STREAM_AAD, key.bytes())?),
        };
        let header = serde_json::to_vec(&header).expect("plain struct serialises");
        let io = |e: io::Error| KeyError::invalid("encrypted stream", e.to_string());
        inner.write_all(MAGIC).map_err(io)?;
        inner
            .write_all(&(header.len() as u32).to_le_bytes())
            .map_err(io)?;
        inner.write_all(&header).map_err(io)?;
        Ok(Self {
            inner,
            key: cipher(&key),
            buf: Vec::with_capacity(SEGMENT + TAG),
            index: 0,
        })
    }

    fn seal_segment(&mut self, last: bool) -> io::Result<()> {
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.index), Aad::from([last as u8]), &mut self.buf)
            .map_err(|_| io::Error::other("segment too long to seal"))?;
        self.buf.extend_from_slice(tag.as_ref());
        self.inner
            .write_all(&(self.buf.len() as u32).to_le_bytes())?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }

    /// Seals the last segment and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal_segment(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for EncryptingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = SEGMENT - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == SEGMENT {
            self.seal_segment(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts a stream [`EncryptingWriter`] wrote; reading past a missing last segment fails.
pub struct DecryptingReader<R: Read> {
    inner: R,
    key: LessSafeKey,
    plain: Vec<u8>,
    at: usize,
    index: u64,
    done: bool,
}

impl<R: Read> std::fmt::Debug for DecryptingReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptingReader")
            .field("segments", &self.index)
            .finish_non_exhaustive()
    }
}

impl<R: Read> DecryptingReader<R> {
    pub fn new(master: &MasterKey, mut inner: R) -> Result<Self, KeyError> {
        let bad = |detail: String| KeyError::invalid("encrypted stream", detail);
        let mut magic = [0u8; 8];
        inner
            .read_exact(&mut magic)
            .map_err(|e| bad(format!("no header: {e}")))?;
        if &magic != MAGIC {
            return Err(bad("not a journeyd encrypted stream (bad magic)".into()));
        }
        let mut len = [0u8; 4];
        inner
            .read_exact(&mut len)
            .map_err(|e| bad(format!("no header: {e}")))?;
        let len = u32::from_le_bytes(len) as usize;
        if len > 4096 {
            return Err(bad(format!("header of {len} bytes is too long")));
        }
        let mut header = vec![0u8; len];
        inner
            .read_exact(&mut header)
            .map_err(|e| bad(format!("header cut short: {e}")))?;
        let header: Header =
            serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
        if header.master_key_id != master.id() {
            return Err(KeyError::WrongKey {
                what: "the encrypted stream".into(),
                sealed_with: header.master_key_id,
                given: master.id().to_owned(),
            });
        }
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&header.wrapped_key)
            .map_err(|e| bad(format!("wrapped key: {e}")))?;
        let key = DataKey::from_slice(
            &master.open(STREAM_AAD, &sealed, "the stream's key")?,
            "the stream's key",
        )?;
        Ok(Self {
            inner,
            key: cipher(&key),
            plain: Vec::new(),
            at: 0,
            index: 0,
            done: false,
        })
    }

    fn next_segment(&mut self) -> io::Result<()> {
        let mut len = [0u8; 4];
        if let Err(e) = self.inner.read_exact(&mut len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "encrypted stream ends after segment {} without its last segment: {e}",
                    self.index
                ),
            ));
        }
        let len = u32::from_le_bytes(len) as usize;
        if !(TAG..=SEGMENT + TAG).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("segment {} claims {len} bytes", self.index),
            ));
        }
        self.plain.resize(len, 0);
        self.inner.read_exact(&mut self.plain)?;
        for last in [false, true] {
            let mut attempt = self.plain.clone();
            if let Ok(p) =
                self.key
                    .open_in_place(nonce(self.index), Aad::from([last as u8]), &mut attempt)
            {
                let n = p.len();
                attempt.truncate(n);
                self.plain = attempt;
                self.at = 0;
                self.index += 1;
                self.done = last;
                return Ok(());
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "segment {} does not open: the stream was changed or reordered",
                self.index
            ),
        ))
    }
}

impl<R: Read> Read for DecryptingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_segment()?;
        }
        let n = out.len().min(self.plain.len() - self.at);
        out[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(len: usize) {
        let master = MasterKey::generate().unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = EncryptingWriter::new(&master, Vec::new()).unwrap();
        w.write_all(&data).unwrap();
        let sealed = w.finish().unwrap();
        let mut back = Vec::new();
        DecryptingReader::new(&master, sealed.as_slice())
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Cut anywhere after the header: an error, never a shorter plaintext.
        let cut = &sealed[..sealed.len() - 1];
        let mut r = DecryptingReader::new(&master, cut).unwrap();
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        let other = MasterKey::generate().unwrap();
        assert!(DecryptingReader::new(&other, sealed.as_slice()).is_err());
    }

    #[test]
    fn streams_round_trip_and_truncation_is_detected() {
        round_trip(0);
        round_trip(10);
        round_trip(SEGMENT);
        round_trip(SEGMENT * 2 + 5);
    }

    #[test]
    fn dropping_whole_trailing_segments_is_detected() {
        let master = MasterKey::generate().unwrap();
        let mut w = EncryptingWriter::new(&master, Vec::new()).unwrap();
        w.write_all(&vec![1u8; SEGMENT * 2]).unwrap();
        let sealed = w.finish().unwrap();
        // Drop the last (empty, final) segment: 4 + 16 bytes.
        let cut = &sealed[..sealed.len() - 20];
        let mut r = DecryptingReader::new(&master, cut).unwrap();
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("without its last segment"), "{e}");
    }
}
