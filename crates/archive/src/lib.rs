//! Positions as Parquet: the one columnar layout journeyd writes, for exports today and for the
//! archive on object storage.
//!
//! Schema version 1 (`schemas/parquet-v1.md`), one row per position, rows sorted by journey and
//! fix time:
//!
//! | column | Arrow type | notes |
//! | --- | --- | --- |
//! | `device` | UInt64 | |
//! | `journey` | UInt64 | the device's journey id |
//! | `fix_time` | Timestamp(Microsecond, "UTC") | Parquet TIMESTAMP(MICROS, isAdjustedToUTC = true); delta-encoded |
//! | `lat`, `lon` | Float64 | WGS 84 degrees; byte-stream-split |
//! | `altitude_m`, `speed_mps`, `heading_deg`, `accuracy_m` | Float32, nullable | null where the device sent none |
//! | `quality` | UInt32 | quality flags (1 null island, 2 rollover corrected, 4 field dropped) |
//!
//! Compression zstd(1). Row groups of at most [`ROW_GROUP_ROWS`] rows, with statistics, so a
//! reader finds one journey without reading the rest.
//!
//! Archive files are encrypted with Parquet modular encryption (AES-GCM, footer encrypted): a
//! random key per file, wrapped by the tenant's data key in the footer key metadata
//! (`journeyd_keys::parquet_keys`), so a standard reader holding the tenant key reads them.
//! Exports are written in clear.
//!
//! Never: does network I/O; the caller decides where the bytes go.

use std::io::Write;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float32Array, Float64Array, RecordBatch, TimestampMicrosecondArray, UInt32Array,
    UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use journeyd_wire::Position;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// Version of the layout written in the file's key-value metadata as `journeyd.schema`.
pub const SCHEMA_VERSION: &str = "1";
/// Rows per row group.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// What went wrong writing or reading Parquet.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("key: {0}")]
    Key(#[from] journeyd_keys::KeyError),
    #[error("not journeyd's Parquet schema v1: column {column} has missing values")]
    Nulls { column: &'static str },
    #[error("not journeyd's Parquet schema v1: column {column} is not {expected}")]
    Schema {
        column: usize,
        expected: &'static str,
    },
}

fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    i: usize,
    expected: &'static str,
) -> Result<&'a T, ArchiveError> {
    batch
        .columns()
        .get(i)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or(ArchiveError::Schema {
            column: i,
            expected,
        })
}

/// The Arrow schema of version 1.
pub fn schema() -> SchemaRef {
    let f32n = |name: &str| Field::new(name, DataType::Float32, true);
    Arc::new(Schema::new(vec![
        Field::new("device", DataType::UInt64, false),
        Field::new("journey", DataType::UInt64, false),
        Field::new(
            "fix_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
        f32n("altitude_m"),
        f32n("speed_mps"),
        f32n("heading_deg"),
        f32n("accuracy_m"),
        Field::new("quality", DataType::UInt32, false),
    ]))
}

fn properties(
    encryption: Option<Arc<parquet::encryption::encrypt::FileEncryptionProperties>>,
) -> WriterProperties {
    let builder = WriterProperties::builder();
    let builder = match encryption {
        Some(e) => builder.with_file_encryption_properties(e),
        None => builder,
    };
    builder
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("level 1 is valid"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_dictionary_enabled(false)
        .set_column_encoding(ColumnPath::from("fix_time"), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(ColumnPath::from("journey"), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(ColumnPath::from("device"), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(ColumnPath::from("lat"), Encoding::BYTE_STREAM_SPLIT)
        .set_column_encoding(ColumnPath::from("lon"), Encoding::BYTE_STREAM_SPLIT)
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            "journeyd.schema".into(),
            SCHEMA_VERSION.to_owned(),
        )]))
        .build()
}

/// Writes positions journey by journey into Parquet on `W`.
pub struct PositionsWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
}

impl<W: Write + Send> std::fmt::Debug for PositionsWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PositionsWriter").finish_non_exhaustive()
    }
}

impl<W: Write + Send> PositionsWriter<W> {
    /// A writer of clear Parquet (exports).
    pub fn new(sink: W) -> Result<Self, ArchiveError> {
        Ok(Self {
            writer: ArrowWriter::try_new(sink, schema(), Some(properties(None)))?,
        })
    }

    /// A writer of an encrypted archive file of `tenant`: a fresh random file key encrypts the
    /// footer and every column with AES-GCM; the footer key metadata holds it wrapped by
    /// `tenant_key`.
    pub fn new_encrypted(
        sink: W,
        tenant: u32,
        tenant_key: &journeyd_keys::DataKey,
    ) -> Result<Self, ArchiveError> {
        let file_key = journeyd_keys::DataKey::generate()?;
        let metadata =
            journeyd_keys::parquet_keys::footer_key_metadata(tenant, tenant_key, &file_key)?;
        let encryption = parquet::encryption::encrypt::FileEncryptionProperties::builder(
            file_key.bytes().to_vec(),
        )
        .with_footer_key_metadata(metadata)
        .build()?;
        Ok(Self {
            writer: ArrowWriter::try_new(sink, schema(), Some(properties(Some(encryption))))?,
        })
    }

    /// Appends one journey's positions (in fix-time order).
    pub fn write_journey(
        &mut self,
        device: u64,
        journey: u64,
        positions: &[Position],
    ) -> Result<(), ArchiveError> {
        if positions.is_empty() {
            return Ok(());
        }
        let n = positions.len();
        let opt = |bit: u32, get: fn(&Position) -> f32| -> ArrayRef {
            Arc::new(Float32Array::from_iter(
                positions
                    .iter()
                    .map(|p| (p.fields & bit != 0).then(|| get(p))),
            ))
        };
        use journeyd_wire::OptionalFields as F;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(vec![device; n])),
            Arc::new(UInt64Array::from(vec![journey; n])),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    positions.iter().map(|p| p.fix_time_us),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from_iter_values(
                positions.iter().map(|p| p.lat),
            )),
            Arc::new(Float64Array::from_iter_values(
                positions.iter().map(|p| p.lon),
            )),
            opt(F::ALTITUDE, |p| p.altitude_m),
            opt(F::SPEED, |p| p.speed_mps),
            opt(F::HEADING, |p| p.heading_deg),
            opt(F::ACCURACY, |p| p.accuracy_m),
            Arc::new(UInt32Array::from_iter_values(
                positions.iter().map(|p| p.quality),
            )),
        ];
        let batch = RecordBatch::try_new(schema(), columns)?;
        self.writer.write(&batch)?;
        Ok(())
    }

    /// Flushes buffered rows as a row group (so a streaming sink sees them).
    pub fn flush(&mut self) -> Result<(), ArchiveError> {
        self.writer.flush()?;
        Ok(())
    }

    /// Writes the footer and returns the sink.
    pub fn finish(self) -> Result<W, ArchiveError> {
        Ok(self.writer.into_inner()?)
    }
}

/// Hands parquet the file key: unwrapped from the footer key metadata with the tenant key.
struct TenantKeyRetriever(journeyd_keys::DataKey);

impl parquet::encryption::decrypt::KeyRetriever for TenantKeyRetriever {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        journeyd_keys::parquet_keys::unwrap_file_key(key_metadata, &self.0)
            .map(|k| k.bytes().to_vec())
            .map_err(|e| parquet::errors::ParquetError::General(e.to_string()))
    }
}

/// How to read a file.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The tenant key, for an encrypted archive file.
    pub key: Option<journeyd_keys::DataKey>,
    /// Read the page index (column and offset indexes) as well.
    pub page_index: bool,
    /// Only the rows of this (device, journey): row groups whose statistics rule it out are
    /// not read.
    pub only: Option<(u64, u64)>,
}

fn builder(
    bytes: bytes::Bytes,
    options: &ReadOptions,
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<bytes::Bytes>, ArchiveError>
{
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    use parquet::file::metadata::PageIndexPolicy;
    let mut reader_options =
        ArrowReaderOptions::new().with_page_index_policy(if options.page_index {
            PageIndexPolicy::Required
        } else {
            PageIndexPolicy::Skip
        });
    if let Some(key) = &options.key {
        let decryption =
            parquet::encryption::decrypt::FileDecryptionProperties::with_key_retriever(Arc::new(
                TenantKeyRetriever(key.clone()),
            ))
            .build()?;
        reader_options = reader_options.with_file_decryption_properties(decryption);
    }
    let mut builder = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, reader_options)
        .map_err(|e| match e {
            parquet::errors::ParquetError::General(m) if m.contains("wrong key") => {
                ArchiveError::Key(journeyd_keys::KeyError::Unreadable {
                    what: format!("the archive file ({m})"),
                })
            }
            other => ArchiveError::Parquet(other),
        })?;
    if let Some((device, journey)) = options.only {
        let may_hold = |rg: &parquet::file::metadata::RowGroupMetaData, col: usize, v: u64| {
            let Some(stats) = rg.column(col).statistics() else {
                return true;
            };
            let bound = |b: Option<&[u8]>| {
                b.and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_le_bytes)
            };
            match (bound(stats.min_bytes_opt()), bound(stats.max_bytes_opt())) {
                (Some(lo), Some(hi)) => (lo..=hi).contains(&v),
                _ => true,
            }
        };
        let groups: Vec<usize> = builder
            .metadata()
            .row_groups()
            .iter()
            .enumerate()
            .filter(|(_, rg)| may_hold(rg, 0, device) && may_hold(rg, 1, journey))
            .map(|(i, _)| i)
            .collect();
        builder = builder.with_row_groups(groups);
    }
    Ok(builder)
}

/// Reads positions back from a Parquet file of version 1: (device, journey, position) rows.
pub fn read_positions(bytes: bytes::Bytes) -> Result<Vec<(u64, u64, Position)>, ArchiveError> {
    read_positions_with(bytes, &ReadOptions::default())
}

/// Reads positions of a file, encrypted or not, as `options` say.
pub fn read_positions_with(
    bytes: bytes::Bytes,
    options: &ReadOptions,
) -> Result<Vec<(u64, u64, Position)>, ArchiveError> {
    use arrow_array::Array;
    let reader = builder(bytes, options)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let device = column::<UInt64Array>(&batch, 0, "UInt64 device")?;
        let journey = column::<UInt64Array>(&batch, 1, "UInt64 journey")?;
        let time = column::<TimestampMicrosecondArray>(&batch, 2, "a microsecond timestamp")?;
        let lat = column::<Float64Array>(&batch, 3, "Float64 lat")?;
        let lon = column::<Float64Array>(&batch, 4, "Float64 lon")?;
        let opts = [
            column::<Float32Array>(&batch, 5, "Float32 altitude_m")?,
            column::<Float32Array>(&batch, 6, "Float32 speed_mps")?,
            column::<Float32Array>(&batch, 7, "Float32 heading_deg")?,
            column::<Float32Array>(&batch, 8, "Float32 accuracy_m")?,
        ];
        let quality = column::<UInt32Array>(&batch, 9, "UInt32 quality")?;
        for (name, nulls) in [
            ("device", device.null_count()),
            ("journey", journey.null_count()),
            ("fix_time", time.null_count()),
            ("lat", lat.null_count()),
            ("lon", lon.null_count()),
            ("quality", quality.null_count()),
        ] {
            if nulls > 0 {
                return Err(ArchiveError::Nulls { column: name });
            }
        }
        for i in 0..batch.num_rows() {
            if let Some((d, j)) = options.only
                && (device.value(i), journey.value(i)) != (d, j)
            {
                continue;
            }
            let mut p = Position::new(time.value(i), lat.value(i), lon.value(i));
            let get = |k: usize| (!opts[k].is_null(i)).then(|| opts[k].value(i));
            if let Some(v) = get(0) {
                p = p.with_altitude(v);
            }
            if let Some(v) = get(1) {
                p = p.with_speed(v);
            }
            if let Some(v) = get(2) {
                p = p.with_heading(v);
            }
            if let Some(v) = get(3) {
                p = p.with_accuracy(v);
            }
            p.quality = quality.value(i);
            out.push((device.value(i), journey.value(i), p));
        }
    }
    Ok(out)
}

/// What a file holds per journey, from its device, journey and fix-time columns only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSummary {
    pub rows: u64,
    /// (device, journey) → (rows, first fix µs, last fix µs).
    pub journeys: std::collections::BTreeMap<(u64, u64), (u64, i64, i64)>,
    /// The `journeyd.schema` entry of the footer.
    pub schema_version: Option<String>,
}

/// Reads a file's footer (decrypting it with `options.key`) and its key columns, and counts its
/// rows per journey: for verifying an upload and rebuilding the archive index.
pub fn summarize(bytes: bytes::Bytes, options: &ReadOptions) -> Result<FileSummary, ArchiveError> {
    let builder = builder(bytes, options)?;
    let schema_version = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|e| e.key == "journeyd.schema"))
        .and_then(|e| e.value.clone());
    let footer_rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [0, 1, 2]);
    let reader = builder.with_projection(mask).build()?;
    let mut summary = FileSummary {
        schema_version,
        ..FileSummary::default()
    };
    for batch in reader {
        let batch = batch?;
        let device = column::<UInt64Array>(&batch, 0, "UInt64 device")?;
        let journey = column::<UInt64Array>(&batch, 1, "UInt64 journey")?;
        let time = column::<TimestampMicrosecondArray>(&batch, 2, "a microsecond timestamp")?;
        use arrow_array::Array;
        for (name, nulls) in [
            ("device", device.null_count()),
            ("journey", journey.null_count()),
            ("fix_time", time.null_count()),
        ] {
            if nulls > 0 {
                return Err(ArchiveError::Nulls { column: name });
            }
        }
        for i in 0..batch.num_rows() {
            let t = time.value(i);
            let e = summary
                .journeys
                .entry((device.value(i), journey.value(i)))
                .or_insert((0, t, t));
            e.0 += 1;
            e.1 = e.1.min(t);
            e.2 = e.2.max(t);
            summary.rows += 1;
        }
    }
    if summary.rows != footer_rows {
        return Err(ArchiveError::Schema {
            column: 0,
            expected: "as many rows as the footer says",
        });
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_another_schema_is_an_error_not_a_panic() {
        let other = Arc::new(Schema::new(vec![Field::new(
            "device",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(
            other.clone(),
            vec![Arc::new(arrow_array::StringArray::from(vec!["x"]))],
        )
        .unwrap();
        let mut w = ArrowWriter::try_new(Vec::new(), other, None).unwrap();
        w.write(&batch).unwrap();
        let bytes = w.into_inner().unwrap();
        let e = read_positions(bytes::Bytes::from(bytes)).unwrap_err();
        assert!(e.to_string().contains("column 0"), "{e}");
        assert!(read_positions(bytes::Bytes::from_static(b"PAR1 not parquet")).is_err());
    }

    #[test]
    fn encrypted_files_read_with_the_tenant_key_only() {
        let key = journeyd_keys::DataKey::generate().unwrap();
        let t = 1_710_072_000_123_456;
        let mut w = PositionsWriter::new_encrypted(Vec::new(), 4, &key).unwrap();
        w.write_journey(7, 1, &[Position::new(t, 51.5, -0.1)])
            .unwrap();
        w.write_journey(
            7,
            2,
            &[
                Position::new(t + 5, 52.5, -0.2),
                Position::new(t + 6, 52.6, -0.2),
            ],
        )
        .unwrap();
        let bytes = bytes::Bytes::from(w.finish().unwrap());
        // No coordinate in clear.
        let lat = 52.5f64.to_le_bytes();
        assert!(!bytes.windows(8).any(|w| w == lat));
        for page_index in [false, true] {
            let options = ReadOptions {
                key: Some(key.clone()),
                page_index,
                only: Some((7, 2)),
            };
            let back = read_positions_with(bytes.clone(), &options).unwrap();
            assert_eq!(back.len(), 2);
            assert_eq!(back[0].2.fix_time_us, t + 5);
        }
        let summary = summarize(
            bytes.clone(),
            &ReadOptions {
                key: Some(key.clone()),
                ..ReadOptions::default()
            },
        )
        .unwrap();
        assert_eq!(summary.rows, 3);
        assert_eq!(summary.journeys[&(7, 2)], (2, t + 5, t + 6));
        assert_eq!(summary.schema_version.as_deref(), Some(SCHEMA_VERSION));
        // Without a key, or with another, a clear error and no rows.
        assert!(read_positions(bytes.clone()).is_err());
        let wrong = journeyd_keys::DataKey::generate().unwrap();
        let e = read_positions_with(
            bytes,
            &ReadOptions {
                key: Some(wrong),
                ..ReadOptions::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("wrong key"), "{e}");
    }

    #[test]
    fn positions_round_trip_with_microseconds() {
        let t = 1_710_072_000_123_456; // 2024-03-10T12:00:00.123456Z (case F38's instant)
        let ps = vec![
            Position::new(t, 51.5, -0.1)
                .with_speed(3.5)
                .with_accuracy(4.0),
            Position::new(t + 1, 51.500_001, -0.100_001).with_altitude(12.0),
        ];
        let mut w = PositionsWriter::new(Vec::new()).unwrap();
        w.write_journey(7, 99, &ps).unwrap();
        let bytes = w.finish().unwrap();
        let back = read_positions(bytes::Bytes::from(bytes)).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].0, back[0].1), (7, 99));
        assert_eq!(back[0].2, ps[0]);
        assert_eq!(back[1].2, ps[1]);
    }
}
