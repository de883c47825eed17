//! Reads the values of a snapshot `DoPut` out of its Flight messages. In: the stream of
//! `FlightData` (an Arrow IPC schema message, then record-batch messages). Out: the values,
//! in order, in one contiguous buffer taken from a [`ValuePool`].
//!
//! The record-batch messages are read directly (their IPC header names where the values lie
//! in the message body) and the values copied once, from the received message into the
//! buffer. Decoding them as Arrow arrays first would copy each body again to align it, and
//! joining the chunks of a large tensor a third time.

use std::sync::Mutex;

use arrow::datatypes::{DataType, Schema};
use arrow::ipc::{MessageHeader, root_as_message};
use arrow_flight::FlightData;
use futures::{Stream, StreamExt};
use lrid_protocol::{SnapshotHeader, VALUE_COLUMN};
use tonic::Status;

/// The values of one snapshot.
#[derive(Debug)]
pub(crate) enum SnapshotValues {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Value buffers kept between snapshots, so that a snapshot's values land in memory that is
/// already mapped (a fresh multi-megabyte buffer costs a page fault per 4 KiB).
#[derive(Debug, Default)]
pub(crate) struct ValuePool {
    f32: Mutex<Vec<Vec<f32>>>,
    f64: Mutex<Vec<Vec<f64>>>,
}

/// Buffers kept at most, and the largest kept (bytes).
const POOL_BUFFERS: usize = 8;
const POOL_MAX_BYTES: usize = 256 << 20;

fn take<T>(pool: &Mutex<Vec<Vec<T>>>) -> Vec<T> {
    let mut b = pool.lock().expect("pool lock").pop().unwrap_or_default();
    b.clear();
    b
}

fn give<T>(pool: &Mutex<Vec<Vec<T>>>, b: Vec<T>) {
    if b.capacity() * size_of::<T>() <= POOL_MAX_BYTES {
        let mut p = pool.lock().expect("pool lock");
        if p.len() < POOL_BUFFERS {
            p.push(b);
        }
    }
}

impl ValuePool {
    /// Returns a snapshot's buffer for reuse.
    pub(crate) fn give(&self, values: SnapshotValues) {
        match values {
            SnapshotValues::F32(b) => give(&self.f32, b),
            SnapshotValues::F64(b) => give(&self.f64, b),
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!(
        "the snapshot's record batches cannot be decoded: {e}"
    ))
}

/// Reads the values of the snapshot `header` from its `DoPut` stream (the first message being
/// the schema). Refuses, naming the problem: a schema other than one Float32 or Float64 column
/// named `value`, a message that is not a record batch, compressed bodies, nulls, a body
/// shorter than its header says, and more values than the header announces.
pub(crate) async fn read_values<S>(
    mut stream: S,
    header: &SnapshotHeader,
    pool: &ValuePool,
) -> Result<SnapshotValues, Status>
where
    S: Stream<Item = Result<FlightData, Status>> + Unpin,
{
    let expected = header.expected_values();
    let first = stream
        .next()
        .await
        .ok_or_else(|| Status::invalid_argument("the snapshot stream is empty"))??;
    let schema = Schema::try_from(&first).map_err(invalid)?;
    if schema.fields().len() != 1 || schema.field(0).name() != VALUE_COLUMN {
        return Err(Status::invalid_argument(format!(
            "a snapshot batch has one column named '{VALUE_COLUMN}'; got schema {schema}"
        )));
    }
    let mut values = match schema.field(0).data_type() {
        DataType::Float32 => SnapshotValues::F32(take(&pool.f32)),
        DataType::Float64 => SnapshotValues::F64(take(&pool.f64)),
        other => {
            return Err(Status::invalid_argument(format!(
                "snapshot values must be Float32 or Float64 (one type per snapshot); got {other}"
            )));
        }
    };
    let mut received = 0u64;
    while let Some(data) = stream.next().await {
        let data = data?;
        let message = root_as_message(&data.data_header).map_err(invalid)?;
        if message.header_type() != MessageHeader::RecordBatch {
            return Err(invalid(format!(
                "expected a record batch message, got {:?}",
                message.header_type()
            )));
        }
        let batch = message
            .header_as_record_batch()
            .ok_or_else(|| invalid("the record batch header is missing"))?;
        if batch.compression().is_some() {
            return Err(invalid("compressed record batches are not supported"));
        }
        let rows = usize::try_from(batch.length()).map_err(invalid)?;
        let nodes = batch
            .nodes()
            .ok_or_else(|| invalid("the record batch has no field nodes"))?;
        if nodes.len() != 1 || nodes.get(0).length() != batch.length() {
            return Err(invalid(format!(
                "expected one column of {rows} values, got {} field node(s)",
                nodes.len()
            )));
        }
        if nodes.get(0).null_count() > 0 {
            return Err(Status::invalid_argument(format!(
                "the snapshot holds {} null value(s)",
                nodes.get(0).null_count()
            )));
        }
        received += rows as u64;
        if received > expected {
            return Err(Status::invalid_argument(format!(
                "{} snapshot of layer {} at point {} of run '{}': more values arrived than the {expected} its header announces",
                header.measure.as_str(),
                header.layer.index,
                header.point,
                header.run_id
            )));
        }
        // Buffers of a primitive column: validity (empty when there are no nulls), values.
        let buffers = batch
            .buffers()
            .ok_or_else(|| invalid("the record batch has no buffers"))?;
        if buffers.len() != 2 {
            return Err(invalid(format!(
                "a primitive column has 2 buffers, got {}",
                buffers.len()
            )));
        }
        let width = match &values {
            SnapshotValues::F32(_) => 4,
            SnapshotValues::F64(_) => 8,
        };
        let at = buffers.get(1);
        let start = usize::try_from(at.offset()).map_err(invalid)?;
        let end = rows
            .checked_mul(width)
            .and_then(|len| Some((start.checked_add(len)?, len)))
            .filter(|&(e, len)| {
                e <= data.data_body.len() && u64::try_from(at.length()).is_ok_and(|l| l >= len as u64)
            })
            .map(|(e, _)| e)
            .ok_or_else(|| {
                invalid(format!(
                    "{rows} values at offset {start} do not fit the buffer ({} bytes) or the body ({} bytes)",
                    at.length(),
                    data.data_body.len()
                ))
            })?;
        let bytes = &data.data_body[start..end];
        match &mut values {
            SnapshotValues::F32(v) => append_le(v, bytes),
            SnapshotValues::F64(v) => append_le(v, bytes),
        }
    }
    Ok(values)
}

/// A float type whose little-endian bytes can be copied in as they are.
trait Float: Copy {}
impl Float for f32 {}
impl Float for f64 {}

/// Appends the little-endian values in `bytes` (any alignment) to `v`: one memory copy.
fn append_le<T: Float>(v: &mut Vec<T>, bytes: &[u8]) {
    #[cfg(target_endian = "big")]
    compile_error!("lrid reads Arrow's little-endian bodies on little-endian machines only");
    let n = bytes.len() / size_of::<T>();
    assert_eq!(n * size_of::<T>(), bytes.len());
    v.reserve(n);
    // SAFETY: `reserve` made room for n more values after `len`; the source holds exactly
    // n · size_of::<T>() bytes and does not overlap `v`'s allocation; every bit pattern is a
    // valid f32/f64 and, on a little-endian machine, the bytes are the values' own layout.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            v.as_mut_ptr().add(v.len()).cast::<u8>(),
            bytes.len(),
        );
        v.set_len(v.len() + n);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float32Array, Float64Array, RecordBatch};
    use arrow::datatypes::Field;
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use futures::TryStreamExt;
    use lrid_protocol::{LayerInfo, PROTOCOL_VERSION, Position, SnapshotMeasure};

    use super::*;

    fn header(values: u64) -> SnapshotHeader {
        SnapshotHeader {
            protocol: PROTOCOL_VERSION,
            run_id: "r".into(),
            point: 0,
            layer: LayerInfo {
                index: 0,
                name: "fc".into(),
                position: Position::Deep,
                weight_shape: vec![values],
                activation_shape: vec![1],
            },
            measure: SnapshotMeasure::Weight,
            examples: 0,
            batch: 0,
        }
    }

    /// The Flight messages arrow's own encoder writes for these batches (padded, aligned bodies).
    fn messages(batches: Vec<RecordBatch>) -> Vec<FlightData> {
        futures::executor::block_on(
            FlightDataEncoderBuilder::new()
                .build(futures::stream::iter(batches.into_iter().map(Ok)))
                .try_collect(),
        )
        .unwrap()
    }

    fn read(msgs: Vec<FlightData>, values: u64) -> Result<SnapshotValues, Status> {
        let pool = ValuePool::default();
        futures::executor::block_on(read_values(
            futures::stream::iter(msgs.into_iter().map(Ok)),
            &header(values),
            &pool,
        ))
    }

    fn f32_batch(v: Vec<Option<f32>>) -> RecordBatch {
        let nullable = v.iter().any(Option::is_none);
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                VALUE_COLUMN,
                DataType::Float32,
                nullable,
            )])),
            vec![Arc::new(Float32Array::from(v))],
        )
        .unwrap()
    }

    #[test]
    fn batches_are_joined_in_order_for_both_widths() {
        let a = f32_batch((0..5).map(|i| Some(i as f32)).collect());
        let b = f32_batch((5..12).map(|i| Some(i as f32)).collect());
        match read(messages(vec![a, b]), 12).unwrap() {
            SnapshotValues::F32(v) => assert_eq!(v, (0..12).map(|i| i as f32).collect::<Vec<_>>()),
            other => panic!("{other:?}"),
        }
        let wide = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                VALUE_COLUMN,
                DataType::Float64,
                false,
            )])),
            vec![Arc::new(Float64Array::from(vec![0.5, -1.25, 3.0]))],
        )
        .unwrap();
        match read(messages(vec![wide]), 3).unwrap() {
            SnapshotValues::F64(v) => assert_eq!(v, vec![0.5, -1.25, 3.0]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_messages_are_refused_naming_the_problem() {
        let expect = |r: Result<SnapshotValues, Status>, text: &str| {
            let s = r.expect_err(text);
            assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
            assert!(
                s.message().contains(text),
                "{:?} should say {text:?}",
                s.message()
            );
        };
        expect(
            read(messages(vec![f32_batch(vec![Some(1.0), None, None])]), 3),
            "2 null value(s)",
        );
        let mut short = messages(vec![f32_batch(vec![Some(1.0); 16])]);
        short[1].data_body = short[1].data_body.slice(..20);
        expect(read(short, 16), "do not fit");
        // A schema message where a record batch belongs.
        let mut twice = messages(vec![f32_batch(vec![Some(1.0); 4])]);
        twice[1] = twice[0].clone();
        expect(read(twice, 4), "expected a record batch message");
        let mut garbage = messages(vec![f32_batch(vec![Some(1.0); 4])]);
        garbage[1].data_header = vec![0xde, 0xad, 0xbe, 0xef].into();
        expect(read(garbage, 4), "cannot be decoded");
        expect(
            read(messages(vec![f32_batch(vec![Some(1.0); 5])]), 4),
            "more values arrived than the 4",
        );
        expect(read(Vec::new(), 4), "stream is empty");
    }
}
