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
        let end = start
            .checked_add(rows * width)
            .filter(|&e| e <= data.data_body.len() && (at.length() as u64) >= (rows * width) as u64)
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
