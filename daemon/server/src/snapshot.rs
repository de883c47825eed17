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

/// An empty value buffer of the type the snapshot's schema message announces. Refuses a
/// schema other than one Float32 or Float64 column named `value`.
pub(crate) fn values_for_schema(
    first: &FlightData,
    pool: &ValuePool,
) -> Result<SnapshotValues, Status> {
    let schema = Schema::try_from(first).map_err(invalid)?;
    if schema.fields().len() != 1 || schema.field(0).name() != VALUE_COLUMN {
        return Err(Status::invalid_argument(format!(
            "a snapshot batch has one column named '{VALUE_COLUMN}'; got schema {schema}"
        )));
    }
    match schema.field(0).data_type() {
        DataType::Float32 => Ok(SnapshotValues::F32(take(&pool.f32))),
        DataType::Float64 => Ok(SnapshotValues::F64(take(&pool.f64))),
        other => Err(Status::invalid_argument(format!(
            "snapshot values must be Float32 or Float64 (one type per snapshot); got {other}"
        ))),
    }
}

/// Reads the values of the snapshot `header` from its `DoPut` stream of decoded messages (the
/// first being the schema). The path of a service mounted without [`crate::put`]'s layer.
pub(crate) async fn read_values<S>(
    mut stream: S,
    header: &SnapshotHeader,
    pool: &ValuePool,
) -> Result<SnapshotValues, Status>
where
    S: Stream<Item = Result<FlightData, Status>> + Unpin,
{
    let first = stream
        .next()
        .await
        .ok_or_else(|| Status::invalid_argument("the snapshot stream is empty"))??;
    // The messages' sizes were checked by tonic's decoder.
    let mut reader = SnapshotReader::new(header, values_for_schema(&first, pool)?, usize::MAX);
    while let Some(data) = stream.next().await {
        let data = data?;
        reader.message(&data.data_header, &data.data_body)?;
    }
    reader.finish()
}

/// Where the values of one record-batch message lie in its body.
#[derive(Debug)]
struct BatchLayout {
    /// Byte range of the values in the body.
    start: usize,
    end: usize,
}

/// `FlightData` field numbers (arrow-flight's `Flight.proto`).
const DATA_HEADER_FIELD: u64 = 2;
const DATA_BODY_FIELD: u64 = 1000;
/// The gRPC message prefix: a compression flag and a big-endian length.
const GRPC_PREFIX: usize = 5;

/// Where the wire parser is in the stream of gRPC messages. `left`: bytes of the current
/// message still to come.
#[derive(Debug)]
enum Wire {
    /// Between messages, `n` bytes of the 5-byte prefix seen.
    Prefix { bytes: [u8; GRPC_PREFIX], n: usize },
    /// A protobuf varint: a field's key (`field` None) or the length of field `field`.
    Varint {
        left: usize,
        field: Option<u64>,
        value: u64,
        shift: u32,
    },
    /// `n` more bytes of a field that is not needed.
    Skip { left: usize, n: usize },
    /// `n` more bytes of the IPC header (into `ipc_header`), or of a body that came before
    /// its header (into `early_body`).
    Collect { left: usize, n: usize, body: bool },
    /// The body: `pos` of `total` bytes seen; the values are at `layout`.
    Body {
        left: usize,
        pos: usize,
        total: usize,
        layout: BatchLayout,
    },
}

/// Turns a snapshot's record-batch messages into its values, checking each against the
/// header. Takes the messages either as gRPC wire bytes in pieces of any size ([`feed`],
/// the HTTP/2 frames of the call) or decoded ([`message`]). Each value is copied once, from
/// the received bytes into the pooled buffer.
///
/// [`feed`]: SnapshotReader::feed
/// [`message`]: SnapshotReader::message
#[derive(Debug)]
pub(crate) struct SnapshotReader<'h> {
    header: &'h SnapshotHeader,
    values: SnapshotValues,
    max_message: usize,
    /// Values announced by record-batch headers so far.
    received: u64,
    wire: Wire,
    /// Of the current message: its IPC header, whether its body was streamed into the values
    /// (after the header), or a body that came before the header.
    ipc_header: Vec<u8>,
    has_header: bool,
    streamed: bool,
    early_body: Vec<u8>,
    /// Bytes of the current body's values written past the initialised values.
    landing: usize,
}

impl<'h> SnapshotReader<'h> {
    pub(crate) fn new(
        header: &'h SnapshotHeader,
        values: SnapshotValues,
        max_message: usize,
    ) -> Self {
        SnapshotReader {
            header,
            values,
            max_message,
            received: 0,
            wire: Wire::Prefix {
                bytes: [0; GRPC_PREFIX],
                n: 0,
            },
            ipc_header: Vec::new(),
            has_header: false,
            streamed: false,
            early_body: Vec::new(),
            landing: 0,
        }
    }

    /// One decoded record-batch message.
    pub(crate) fn message(&mut self, ipc_header: &[u8], body: &[u8]) -> Result<(), Status> {
        let layout = self.layout(ipc_header, body.len())?;
        self.values.append_le(&body[layout.start..layout.end]);
        Ok(())
    }

    /// The values, once the stream has ended (between two messages).
    pub(crate) fn finish(self) -> Result<SnapshotValues, Status> {
        match self.wire {
            Wire::Prefix { n: 0, .. } => Ok(self.values),
            _ => Err(invalid("the stream ended inside a message")),
        }
    }

    /// The next bytes of the gRPC stream (after the schema message), in pieces of any size.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            match &mut self.wire {
                Wire::Prefix { bytes, n } => {
                    let k = (GRPC_PREFIX - *n).min(data.len());
                    bytes[*n..*n + k].copy_from_slice(&data[..k]);
                    *n += k;
                    data = &data[k..];
                    if *n == GRPC_PREFIX {
                        let len =
                            u32::from_be_bytes(bytes[1..].try_into().expect("4 bytes")) as usize;
                        match bytes[0] {
                            0 => {}
                            1 => return Err(invalid("compressed gRPC messages are not supported")),
                            f => return Err(invalid(format!("invalid gRPC compression flag {f}"))),
                        }
                        if len > self.max_message {
                            return Err(Status::out_of_range(format!(
                                "a message of {len} bytes is larger than the {} bytes allowed",
                                self.max_message
                            )));
                        }
                        self.wire = Wire::Varint {
                            left: len,
                            field: None,
                            value: 0,
                            shift: 0,
                        };
                        if len == 0 {
                            self.end_message()?;
                        }
                    }
                }
                Wire::Varint {
                    left,
                    field,
                    value,
                    shift,
                } => {
                    let b = data[0];
                    data = &data[1..];
                    if *left == 0 || *shift > 63 {
                        return Err(invalid("a protobuf field runs past the end of its message"));
                    }
                    *left -= 1;
                    *value |= u64::from(b & 0x7f) << *shift;
                    *shift += 7;
                    if b & 0x80 == 0 {
                        let (left, field, value) = (*left, *field, *value);
                        self.after_varint(left, field, value)?;
                    }
                }
                Wire::Skip { left, n } => {
                    let k = (*n).min(data.len());
                    *n -= k;
                    *left -= k;
                    data = &data[k..];
                    if *n == 0 {
                        let left = *left;
                        self.after_field(left)?;
                    }
                }
                Wire::Collect { left, n, body } => {
                    let k = (*n).min(data.len());
                    let into = if *body {
                        &mut self.early_body
                    } else {
                        &mut self.ipc_header
                    };
                    into.extend_from_slice(&data[..k]);
                    *n -= k;
                    *left -= k;
                    data = &data[k..];
                    if *n == 0 {
                        let left = *left;
                        self.after_field(left)?;
                    }
                }
                Wire::Body {
                    left,
                    pos,
                    total,
                    layout,
                } => {
                    let k = (*total - *pos).min(data.len());
                    // The part of these bytes that lies inside the values.
                    let (from, to) = ((*pos).max(layout.start), (*pos + k).min(layout.end));
                    if from < to {
                        self.values
                            .land(self.landing, &data[from - *pos..to - *pos]);
                        self.landing += to - from;
                    }
                    *pos += k;
                    *left -= k;
                    data = &data[k..];
                    if *pos == *total {
                        let left = *left;
                        self.values.commit(self.landing);
                        self.landing = 0;
                        self.after_field(left)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A varint is complete: a key starts a field, a length starts its bytes.
    fn after_varint(&mut self, left: usize, field: Option<u64>, value: u64) -> Result<(), Status> {
        let Some(field) = field else {
            let (field, wire_type) = (value >> 3, value & 7);
            self.wire = match wire_type {
                // A varint field (not used by FlightData): read it and drop it.
                0 => Wire::Varint {
                    left,
                    field: Some(u64::MAX),
                    value: 0,
                    shift: 0,
                },
                1 | 5 => {
                    let n = if wire_type == 1 { 8 } else { 4 };
                    if n > left {
                        return Err(invalid("a protobuf field runs past the end of its message"));
                    }
                    Wire::Skip { left, n }
                }
                2 => Wire::Varint {
                    left,
                    field: Some(field),
                    value: 0,
                    shift: 0,
                },
                other => {
                    return Err(invalid(format!(
                        "protobuf wire type {other} (field {field}) is not valid in FlightData"
                    )));
                }
            };
            return Ok(());
        };
        if field == u64::MAX {
            return self.after_field(left);
        }
        let n = usize::try_from(value).unwrap_or(usize::MAX);
        if n > left {
            return Err(invalid("a protobuf field runs past the end of its message"));
        }
        self.wire = match field {
            DATA_HEADER_FIELD => {
                self.ipc_header.clear();
                self.has_header = true;
                Wire::Collect {
                    left,
                    n,
                    body: false,
                }
            }
            DATA_BODY_FIELD if self.has_header => {
                self.streamed = true;
                let layout = self.layout_current(n)?;
                self.values.reserve_bytes(layout.end - layout.start);
                Wire::Body {
                    left,
                    pos: 0,
                    total: n,
                    layout,
                }
            }
            DATA_BODY_FIELD => {
                // Before its header (legal protobuf, though no Flight client writes it).
                self.early_body.clear();
                Wire::Collect {
                    left,
                    n,
                    body: true,
                }
            }
            _ => Wire::Skip { left, n },
        };
        if n == 0 {
            // An empty field: done at once.
            self.after_field(left)?;
        }
        Ok(())
    }

    /// A field is complete: the next key, or the end of the message.
    fn after_field(&mut self, left: usize) -> Result<(), Status> {
        if left == 0 {
            return self.end_message();
        }
        self.wire = Wire::Varint {
            left,
            field: None,
            value: 0,
            shift: 0,
        };
        Ok(())
    }

    fn end_message(&mut self) -> Result<(), Status> {
        if !self.has_header {
            return Err(invalid("a record-batch message without its IPC header"));
        }
        if !self.streamed {
            // A body that came before its header, or none (an empty batch).
            let body = std::mem::take(&mut self.early_body);
            let layout = self.layout_current(body.len())?;
            self.values.append_le(&body[layout.start..layout.end]);
        }
        self.has_header = false;
        self.streamed = false;
        self.wire = Wire::Prefix {
            bytes: [0; GRPC_PREFIX],
            n: 0,
        };
        Ok(())
    }

    fn layout_current(&mut self, body_len: usize) -> Result<BatchLayout, Status> {
        let ipc_header = std::mem::take(&mut self.ipc_header);
        let layout = self.layout(&ipc_header, body_len);
        self.ipc_header = ipc_header;
        layout
    }

    /// Checks a record-batch message's IPC header against the snapshot and says where its
    /// values lie in a body of `body_len` bytes. Refuses a message that is not a record batch,
    /// compressed bodies, nulls, more values than the snapshot header announces, and values
    /// that do not fit the body.
    fn layout(&mut self, ipc_header: &[u8], body_len: usize) -> Result<BatchLayout, Status> {
        let header = self.header;
        let expected = header.expected_values();
        let message = root_as_message(ipc_header).map_err(invalid)?;
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
        self.received += rows as u64;
        if self.received > expected {
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
        let at = buffers.get(1);
        let start = usize::try_from(at.offset()).map_err(invalid)?;
        let end = rows
            .checked_mul(self.values.width())
            .and_then(|len| Some((start.checked_add(len)?, len)))
            .filter(|&(e, len)| {
                e <= body_len && u64::try_from(at.length()).is_ok_and(|l| l >= len as u64)
            })
            .map(|(e, _)| e)
            .ok_or_else(|| {
                invalid(format!(
                    "{rows} values at offset {start} do not fit the buffer ({} bytes) or the body ({body_len} bytes)",
                    at.length(),
                ))
            })?;
        Ok(BatchLayout { start, end })
    }
}

impl SnapshotValues {
    fn width(&self) -> usize {
        match self {
            SnapshotValues::F32(_) => 4,
            SnapshotValues::F64(_) => 8,
        }
    }

    fn append_le(&mut self, bytes: &[u8]) {
        match self {
            SnapshotValues::F32(v) => append_le(v, bytes),
            SnapshotValues::F64(v) => append_le(v, bytes),
        }
    }

    /// Room for `bytes` more bytes of values past the initialised ones.
    fn reserve_bytes(&mut self, bytes: usize) {
        match self {
            SnapshotValues::F32(v) => v.reserve(bytes.div_ceil(4)),
            SnapshotValues::F64(v) => v.reserve(bytes.div_ceil(8)),
        }
    }

    /// Writes `src` at byte `at` past the initialised values, inside the reserved room.
    fn land(&mut self, at: usize, src: &[u8]) {
        fn land<T: Float>(v: &mut Vec<T>, at: usize, src: &[u8]) {
            let room = v.spare_capacity_mut();
            assert!(
                at + src.len() <= size_of_val(room),
                "values past the reserved room"
            );
            // SAFETY: the destination range lies inside the vector's spare capacity (asserted)
            // and cannot overlap `src`, which is not part of this vector.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr(),
                    room.as_mut_ptr().cast::<u8>().add(at),
                    src.len(),
                );
            }
        }
        match self {
            SnapshotValues::F32(v) => land(v, at, src),
            SnapshotValues::F64(v) => land(v, at, src),
        }
    }

    /// The `bytes` landed past the initialised values (one after the other, from byte 0) are
    /// values now.
    fn commit(&mut self, bytes: usize) {
        fn commit<T: Float>(v: &mut Vec<T>, bytes: usize) {
            let n = bytes / size_of::<T>();
            assert!(n * size_of::<T>() == bytes && n <= v.capacity() - v.len());
            // SAFETY: the reader landed exactly `bytes` bytes contiguously from the start of
            // the spare capacity (`land` calls with consecutive offsets), so the first n values
            // past `len` are initialised; every bit pattern is a valid f32/f64.
            unsafe { v.set_len(v.len() + n) };
        }
        match self {
            SnapshotValues::F32(v) => commit(v, bytes),
            SnapshotValues::F64(v) => commit(v, bytes),
        }
    }
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
    use bytes::Bytes;
    use futures::TryStreamExt;
    use lrid_protocol::{LayerInfo, PROTOCOL_VERSION, Position, SnapshotMeasure};
    use prost::Message;

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

    fn f64_batch(v: Vec<f64>) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                VALUE_COLUMN,
                DataType::Float64,
                false,
            )])),
            vec![Arc::new(Float64Array::from(v))],
        )
        .unwrap()
    }

    /// `r` is a refusal with `code` whose message says `text`.
    fn expect_refusal(r: Result<SnapshotValues, Status>, code: tonic::Code, text: &str) {
        let s = r.expect_err(text);
        assert_eq!(s.code(), code, "{s:?}");
        assert!(
            s.message().contains(text),
            "{:?} should say {text:?}",
            s.message()
        );
    }

    #[test]
    fn batches_are_joined_in_order_for_both_widths() {
        let a = f32_batch((0..5).map(|i| Some(i as f32)).collect());
        let b = f32_batch((5..12).map(|i| Some(i as f32)).collect());
        match read(messages(vec![a, b]), 12).unwrap() {
            SnapshotValues::F32(v) => assert_eq!(v, (0..12).map(|i| i as f32).collect::<Vec<_>>()),
            other => panic!("{other:?}"),
        }
        let wide = f64_batch(vec![0.5, -1.25, 3.0]);
        match read(messages(vec![wide]), 3).unwrap() {
            SnapshotValues::F64(v) => assert_eq!(v, vec![0.5, -1.25, 3.0]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_messages_are_refused_naming_the_problem() {
        let expect = |r, text| expect_refusal(r, tonic::Code::InvalidArgument, text);
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

    /// The gRPC wire bytes of these messages (what a client sends), without the schema message.
    fn wire(msgs: &[FlightData]) -> Vec<u8> {
        msgs.iter()
            .flat_map(|m| grpc_frame(&m.encode_to_vec()))
            .collect()
    }

    /// One gRPC message: the uncompressed flag, the big-endian length, the protobuf bytes.
    fn grpc_frame(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    /// Feeds `bytes` in pieces of `piece` bytes (the HTTP/2 frames), as the layer does.
    fn feed(bytes: &[u8], piece: usize, values: u64, f64: bool) -> Result<SnapshotValues, Status> {
        let header = header(values);
        let empty = if f64 {
            SnapshotValues::F64(Vec::new())
        } else {
            SnapshotValues::F32(Vec::new())
        };
        let mut reader = SnapshotReader::new(&header, empty, 1 << 20);
        for p in bytes.chunks(piece.max(1)) {
            reader.feed(p)?;
        }
        reader.finish()
    }

    /// Fed in pieces of each size in `pieces`, `bytes` give exactly `want`.
    fn assert_read_in_pieces(bytes: &[u8], pieces: &[usize], want: SnapshotValues) {
        let (rows, f64) = match &want {
            SnapshotValues::F32(v) => (v.len(), false),
            SnapshotValues::F64(v) => (v.len(), true),
        };
        for &piece in pieces {
            let got = feed(bytes, piece, rows as u64, f64).unwrap();
            let same = match (&got, &want) {
                (SnapshotValues::F32(a), SnapshotValues::F32(b)) => a == b,
                (SnapshotValues::F64(a), SnapshotValues::F64(b)) => a == b,
                _ => false,
            };
            assert!(same, "pieces of {piece}: {got:?}, want {want:?}");
        }
    }

    #[test]
    fn wire_bytes_in_pieces_of_any_size_give_the_values_in_order() {
        let a = f32_batch((0..5).map(|i| Some(i as f32 * 0.5)).collect());
        let b = f32_batch((5..1000).map(|i| Some(i as f32 * 0.5)).collect());
        let mut msgs = messages(vec![a, b]);
        // A field tonic's clients never send but protobuf allows: app_metadata.
        msgs[2].app_metadata = vec![7; 13].into();
        let bytes = wire(&msgs[1..]);
        let want: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        let pieces = [1, 2, 3, 5, 7, 64, 4093, usize::MAX];
        assert_read_in_pieces(&bytes, &pieces, SnapshotValues::F32(want));
        let wide = f64_batch(vec![0.5, -1.25, 3.0]);
        let bytes = wire(&messages(vec![wide])[1..]);
        assert_read_in_pieces(
            &bytes,
            &[1, 3, 1000],
            SnapshotValues::F64(vec![0.5, -1.25, 3.0]),
        );
    }

    #[test]
    fn a_body_before_its_header_is_read_too() {
        let msgs = messages(vec![f32_batch(vec![Some(1.5), Some(-2.0), Some(4.0)])]);
        let (h, b) = (&msgs[1].data_header, &msgs[1].data_body);
        // Field 1000 (data_body) first, then field 2 (data_header).
        let mut message = Vec::new();
        prost::encoding::bytes::encode(1000, b, &mut message);
        prost::encoding::bytes::encode(2, h, &mut message);
        let bytes = grpc_frame(&message);
        assert_read_in_pieces(
            &bytes,
            &[1, 4, 1000],
            SnapshotValues::F32(vec![1.5, -2.0, 4.0]),
        );
    }

    #[test]
    fn malformed_wire_bytes_are_refused_naming_the_problem() {
        let good = wire(&messages(vec![f32_batch(vec![Some(1.0); 16])])[1..]);
        let expect = expect_refusal;
        // Cut anywhere inside the message: the stream ended inside it.
        for cut in [1, 5, 6, 30, good.len() - 1] {
            expect(
                feed(&good[..cut], 7, 16, false),
                tonic::Code::InvalidArgument,
                "ended inside a message",
            );
        }
        let mut compressed = good.clone();
        compressed[0] = 1;
        expect(
            feed(&compressed, 64, 16, false),
            tonic::Code::InvalidArgument,
            "compressed",
        );
        let mut huge = good.clone();
        huge[1..5].copy_from_slice(&(2u32 << 20).to_be_bytes());
        expect(
            feed(&huge, 64, 16, false),
            tonic::Code::OutOfRange,
            "larger than the 1048576 bytes",
        );
        // A length running past the message: the message claims fewer bytes than its fields.
        let mut short = good.clone();
        let len = u32::from_be_bytes(short[1..5].try_into().unwrap());
        short[1..5].copy_from_slice(&(len - 10).to_be_bytes());
        expect(
            feed(&short, 64, 16, false),
            tonic::Code::InvalidArgument,
            "runs past the end",
        );
        // A message with a body but no IPC header.
        let mut message = Vec::new();
        prost::encoding::bytes::encode(1000, &Bytes::from(vec![0u8; 8]), &mut message);
        let headless = grpc_frame(&message);
        expect(
            feed(&headless, 3, 16, false),
            tonic::Code::InvalidArgument,
            "without its IPC header",
        );
        // The checks of decoded messages hold on the wire too.
        expect(
            feed(&good, 5, 15, false),
            tonic::Code::InvalidArgument,
            "more values arrived than the 15",
        );
        let nulls = wire(&messages(vec![f32_batch(vec![Some(1.0), None])])[1..]);
        expect(
            feed(&nulls, 5, 2, false),
            tonic::Code::InvalidArgument,
            "1 null value(s)",
        );
        expect(
            feed(&[0, 0, 0, 0, 0], 5, 2, false),
            tonic::Code::InvalidArgument,
            "without its IPC header",
        );
    }
}
