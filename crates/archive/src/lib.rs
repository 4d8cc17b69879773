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

fn properties() -> WriterProperties {
    WriterProperties::builder()
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
    pub fn new(sink: W) -> Result<Self, ArchiveError> {
        Ok(Self {
            writer: ArrowWriter::try_new(sink, schema(), Some(properties()))?,
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

/// Reads positions back from a Parquet file of version 1: (device, journey, position) rows.
pub fn read_positions(bytes: bytes::Bytes) -> Result<Vec<(u64, u64, Position)>, ArchiveError> {
    use arrow_array::Array;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
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
        for i in 0..batch.num_rows() {
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
