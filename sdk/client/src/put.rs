//! The snapshot `DoPut` call, written directly on an HTTP/2 connection. In: a snapshot's header
//! and its values as zero-copy [`Bytes`]. Out: the gRPC call `FlightService/DoPut` (the same
//! bytes on the wire as tonic's client sends), and the daemon's answer as a [`Status`].
//!
//! Why not tonic's generated client: tonic encodes every message into a buffer of its own (a
//! copy of every value, into freshly allocated memory for each multi-megabyte message). Here
//! each record-batch message is two HTTP/2 data pieces — a few dozen bytes of gRPC prefix,
//! protobuf keys and Arrow IPC header, then the values themselves as a slice of the recorder's
//! buffer — which h2 writes to the socket with vectored writes, without copying them.

use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::{FlightData, FlightDescriptor, SchemaAsIpc};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use lrid_protocol::{CHUNK_VALUES, SNAPSHOT_TYPE_URL, SnapshotHeader, VALUE_COLUMN};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use rustls_pki_types::ServerName;
use tonic::{Code, Status};

use crate::tls::{ClientTls, Remote, Scheme};

const DO_PUT: &str = "/arrow.flight.protocol.FlightService/DoPut";
/// `FlightData` field numbers (arrow-flight's `Flight.proto`).
const DATA_HEADER_FIELD: u32 = 2;
const DATA_BODY_FIELD: u32 = 1000;
/// The gRPC message prefix: a compression flag and a big-endian length.
const GRPC_PREFIX: usize = 5;

/// Where `DoPut` calls go: the daemon's address and the request head they carry.
#[derive(Clone, Debug)]
pub(crate) struct PutTarget {
    /// `host:port` to connect to.
    authority: String,
    /// For `https://`: the TLS settings and the name the certificate must carry.
    tls: Option<(ClientTls, ServerName<'static>)>,
    /// The full `DoPut` URI.
    uri: http::Uri,
    authorization: Option<http::HeaderValue>,
}

impl PutTarget {
    /// `remote` is `http://host:port` or `https://host:port` with its TLS settings; `token` the
    /// bearer token, when the daemon needs one.
    pub(crate) fn new(remote: &Remote, token: Option<&str>) -> Result<PutTarget, String> {
        let uri: http::Uri = remote.server.parse().map_err(|e| format!("{e}"))?;
        let scheme = Scheme::of(&remote.server)?;
        let host = uri.host().ok_or("the address has no host")?;
        let authority = uri
            .authority()
            .ok_or("the address has no host")?
            .as_str()
            .to_string();
        let authority = match (uri.port(), scheme) {
            (Some(_), _) => authority,
            (None, Scheme::Http) => format!("{authority}:80"),
            (None, Scheme::Https) => format!("{authority}:443"),
        };
        let tls = match (scheme, &remote.tls) {
            (Scheme::Http, _) => None,
            (Scheme::Https, Some(tls)) => {
                // An IPv6 literal comes bracketed in a URI, not in a certificate.
                let name = host.trim_start_matches('[').trim_end_matches(']');
                let name = ServerName::try_from(name.to_string()).map_err(|e| {
                    format!("'{host}' cannot be checked against a certificate: {e}")
                })?;
                Some((tls.clone(), name))
            }
            (Scheme::Https, None) => return Err("an https:// address needs TLS settings".into()),
        };
        let uri = http::Uri::builder()
            .scheme(match scheme {
                Scheme::Http => "http",
                Scheme::Https => "https",
            })
            .authority(authority.as_str())
            .path_and_query(DO_PUT)
            .build()
            .map_err(|e| e.to_string())?;
        let authorization = token
            .map(|t| http::HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| "the token is not a valid header value".to_string())?;
        Ok(PutTarget {
            authority,
            tls,
            uri,
            authorization,
        })
    }

    /// Opens an HTTP/2 connection; the connection's I/O runs as a task of the current runtime.
    pub(crate) async fn connect(&self) -> Result<SendRequest<Bytes>, Status> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&self.authority),
        )
        .await
        .map_err(|_| {
            Status::unavailable(format!("cannot connect to {}: timed out", self.authority))
        })?
        .map_err(|e| Status::unavailable(format!("cannot connect to {}: {e}", self.authority)))?;
        tcp.set_nodelay(true)
            .map_err(|e| Status::unavailable(format!("cannot set TCP_NODELAY: {e}")))?;
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 20);
        let Some((tls, name)) = &self.tls else {
            return handshake(&builder, tcp).await;
        };
        let stream = tokio_rustls::TlsConnector::from(tls.rustls())
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| tls_status(&self.authority, e))?;
        handshake(&builder, stream).await
    }

    /// Sends one snapshot and waits for the daemon's acknowledgement (sent once it is durable).
    pub(crate) async fn put_snapshot(
        &self,
        connection: SendRequest<Bytes>,
        header: &SnapshotHeader,
        values: Bytes,
    ) -> Result<(), Status> {
        let mut connection = connection.ready().await.map_err(h2_status)?;
        let mut request = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(http::header::USER_AGENT, "lrid-sdk")
            .body(())
            .expect("a valid request head");
        if let Some(auth) = &self.authorization {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, auth.clone());
        }
        let (response, mut body) = connection.send_request(request, false).map_err(h2_status)?;
        // Queued at once: the values are already in memory, h2 sends them as the daemon's
        // flow-control window allows and drops each piece once written.
        body.send_data(schema_message(header), false)
            .map_err(h2_status)?;
        let chunk_bytes = CHUNK_VALUES * 4;
        for start in (0..values.len()).step_by(chunk_bytes) {
            let end = (start + chunk_bytes).min(values.len());
            body.send_data(batch_prefix(end - start), false)
                .map_err(h2_status)?;
            body.send_data(values.slice(start..end), false)
                .map_err(h2_status)?;
        }
        body.send_data(Bytes::new(), true).map_err(h2_status)?;
        read_ack(response.await.map_err(h2_status)?).await
    }
}

/// The HTTP/2 handshake on `io`; the connection's I/O runs as a task of the current runtime.
async fn handshake<T>(builder: &h2::client::Builder, io: T) -> Result<SendRequest<Bytes>, Status>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = builder.handshake(io).await.map_err(h2_status)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("the DoPut connection ended: {e}");
        }
    });
    Ok(send)
}

/// A failed TLS handshake: a certificate the client does not trust is the caller's to fix (not
/// retried); anything else may be the network's.
fn tls_status(authority: &str, e: std::io::Error) -> Status {
    let message = format!("TLS handshake with {authority} failed: {e}");
    if crate::tls::untrusted_certificate(&e) {
        Status::failed_precondition(format!("{message}; {}", crate::tls::UNTRUSTED_HINT))
    } else {
        Status::unavailable(message)
    }
}

/// The first message: the Arrow schema (one non-null Float32 column) and, as the descriptor's
/// command, the snapshot header (a protobuf `Any` holding JSON).
fn schema_message(header: &SnapshotHeader) -> Bytes {
    let any = arrow_flight::sql::Any {
        type_url: SNAPSHOT_TYPE_URL.into(),
        value: serde_json::to_vec(header).expect("json").into(),
    }
    .encode_to_vec();
    let schema = Schema::new(vec![Field::new(VALUE_COLUMN, DataType::Float32, false)]);
    let data = FlightData::from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()))
        .with_descriptor(FlightDescriptor::new_cmd(any));
    let mut out = BytesMut::with_capacity(GRPC_PREFIX + data.encoded_len());
    out.put_u8(0);
    out.put_u32(data.encoded_len() as u32);
    data.encode(&mut out).expect("room reserved");
    out.freeze()
}

/// Everything of a record-batch message of `body` bytes of values except the values: the gRPC
/// prefix, then the protobuf `FlightData` with its `data_header` (the IPC header) and the key
/// and length of its `data_body`, whose bytes follow on the wire.
fn batch_prefix(body: usize) -> Bytes {
    let ipc_header = f32_batch_header(body / 4);
    let header_field =
        key_len(DATA_HEADER_FIELD) + encoded_len_varint(ipc_header.len() as u64) + ipc_header.len();
    let body_field_head = key_len(DATA_BODY_FIELD) + encoded_len_varint(body as u64);
    let message = header_field + body_field_head + body;
    let mut out = BytesMut::with_capacity(GRPC_PREFIX + header_field + body_field_head);
    out.put_u8(0);
    out.put_u32(u32::try_from(message).expect("a chunk is far below 4 GiB"));
    encode_key(DATA_HEADER_FIELD, WireType::LengthDelimited, &mut out);
    encode_varint(ipc_header.len() as u64, &mut out);
    out.put_slice(&ipc_header);
    encode_key(DATA_BODY_FIELD, WireType::LengthDelimited, &mut out);
    encode_varint(body as u64, &mut out);
    out.freeze()
}

/// The Arrow IPC message header of a record batch of `rows` non-null f32 values in one column,
/// the values at the start of the body (no validity buffer). Written here rather than by
/// arrow's IPC writer, which would copy the values into a body of its own.
fn f32_batch_header(rows: usize) -> Bytes {
    use arrow::ipc::{
        Buffer, FieldNode, MessageBuilder, MessageHeader, MetadataVersion, RecordBatchBuilder,
    };
    let body = (rows * 4) as i64;
    let mut fbb = flatbuffers::FlatBufferBuilder::with_capacity(256);
    let nodes = fbb.create_vector(&[FieldNode::new(rows as i64, 0)]);
    let buffers = fbb.create_vector(&[Buffer::new(0, 0), Buffer::new(0, body)]);
    let mut batch = RecordBatchBuilder::new(&mut fbb);
    batch.add_length(rows as i64);
    batch.add_nodes(nodes);
    batch.add_buffers(buffers);
    let batch = batch.finish();
    let mut message = MessageBuilder::new(&mut fbb);
    message.add_version(MetadataVersion::V5);
    message.add_header_type(MessageHeader::RecordBatch);
    message.add_header(batch.as_union_value());
    message.add_bodyLength(body);
    let message = message.finish();
    fbb.finish(message, None);
    Bytes::copy_from_slice(fbb.finished_data())
}

/// Waits for the daemon's answer: one `PutResult` message and `grpc-status: 0` is an
/// acknowledgement; a gRPC status in the head (a refusal before any message) or in the
/// trailers is returned as it is.
async fn read_ack(response: http::Response<h2::RecvStream>) -> Result<(), Status> {
    let (head, mut body) = response.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(http_status(head.status));
    }
    if let Some(status) = Status::from_header_map(&head.headers) {
        // A status in the head ends the call before any message: a refusal (status 0 there
        // would mean nothing was acknowledged).
        return Err(if status.code() == Code::Ok {
            not_acknowledged()
        } else {
            status
        });
    }
    let mut received = BytesMut::new();
    let mut messages = 0usize;
    while let Some(data) = body.data().await {
        let data = data.map_err(h2_status)?;
        let _ = body.flow_control().release_capacity(data.len());
        received.extend_from_slice(&data);
        while received.len() >= GRPC_PREFIX {
            let len = u32::from_be_bytes(received[1..GRPC_PREFIX].try_into().expect("4 bytes"));
            let whole = GRPC_PREFIX + len as usize;
            if received.len() < whole {
                break;
            }
            received.advance(whole);
            messages += 1;
        }
    }
    let trailers = body.trailers().await.map_err(h2_status)?;
    match trailers.as_ref().and_then(Status::from_header_map) {
        Some(status) if status.code() != Code::Ok => Err(status),
        None => Err(Status::unknown(
            "the daemon ended the DoPut response without a gRPC status",
        )),
        Some(_) if messages == 0 => Err(not_acknowledged()),
        Some(_) => Ok(()),
    }
}

fn not_acknowledged() -> Status {
    Status::unknown("the daemon closed the stream without acknowledging")
}

/// An HTTP status other than 200 as gRPC's HTTP-to-gRPC mapping says.
fn http_status(status: http::StatusCode) -> Status {
    let code = match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("the daemon answered HTTP {status}"))
}

/// An HTTP/2 error as a status: a lost or refused connection is `Unavailable` (retried); a
/// stream the daemon reset says why.
fn h2_status(e: h2::Error) -> Status {
    use h2::Reason;
    match e.reason() {
        _ if e.is_io() || e.is_go_away() => Status::unavailable(format!("connection lost: {e}")),
        None | Some(Reason::REFUSED_STREAM) => Status::unavailable(e.to_string()),
        Some(Reason::CANCEL) => Status::cancelled(e.to_string()),
        Some(Reason::ENHANCE_YOUR_CALM) => Status::resource_exhausted(e.to_string()),
        Some(_) => Status::internal(format!("HTTP/2 error: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefix and the values, on the wire, are exactly what tonic would send for the
    /// same `FlightData` (gRPC prefix + prost encoding).
    #[test]
    fn a_batch_message_is_the_prost_encoding_of_its_flight_data() {
        for rows in [1usize, 31, 32, 1000, CHUNK_VALUES] {
            let values: Vec<u8> = (0..rows * 4).map(|i| (i * 7 % 251) as u8).collect();
            let data = FlightData::new()
                .with_data_header(f32_batch_header(rows))
                .with_data_body(values.clone());
            let mut expected = vec![0u8];
            expected.extend_from_slice(&(data.encoded_len() as u32).to_be_bytes());
            expected.extend_from_slice(&data.encode_to_vec());
            let mut wire = batch_prefix(rows * 4).to_vec();
            wire.extend_from_slice(&values);
            assert_eq!(wire, expected, "{rows} rows");
        }
    }

    #[test]
    fn the_schema_message_carries_the_header_and_decodes() {
        let header = SnapshotHeader {
            protocol: lrid_protocol::PROTOCOL_VERSION,
            run_id: "r".into(),
            point: 3,
            layer: lrid_protocol::LayerInfo {
                index: 1,
                name: "conv".into(),
                position: lrid_protocol::Position::Early,
                weight_shape: vec![2, 2],
                activation_shape: vec![4],
            },
            measure: lrid_protocol::SnapshotMeasure::Weight,
            examples: 0,
            batch: 0,
        };
        let wire = schema_message(&header);
        assert_eq!(wire[0], 0);
        let len = u32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, wire.len() - 5);
        let data = FlightData::decode(&wire[5..]).unwrap();
        let schema = Schema::try_from(&data).unwrap();
        assert_eq!(schema.field(0).name(), VALUE_COLUMN);
        let any = arrow_flight::sql::Any::decode(data.flight_descriptor.unwrap().cmd).unwrap();
        assert_eq!(any.type_url, SNAPSHOT_TYPE_URL);
        let back: SnapshotHeader = serde_json::from_slice(&any.value).unwrap();
        assert_eq!(back.point, 3);
        assert_eq!(back.layer.name, "conv");
    }

    #[test]
    fn addresses_and_tokens_are_checked() {
        let target = |server: &str, token| {
            let remote = Remote {
                server: server.into(),
                tls: None,
            };
            PutTarget::new(&remote, token)
        };
        let t = target("http://127.0.0.1:50051", Some("s3cret")).unwrap();
        assert_eq!(t.authority, "127.0.0.1:50051");
        assert_eq!(
            t.uri.to_string(),
            "http://127.0.0.1:50051/arrow.flight.protocol.FlightService/DoPut"
        );
        assert_eq!(t.authorization.unwrap(), "Bearer s3cret");
        assert_eq!(
            target("http://localhost", None).unwrap().authority,
            "localhost:80"
        );
        // https:// needs the TLS settings a `Remote` makes for it.
        assert!(target("https://x:1", None).is_err());
        assert!(target("grpc://x:1", None).is_err());
        assert!(target("not a url", None).is_err());
        assert!(target("http://x:1", Some("bad\ntoken")).is_err());
    }

    #[test]
    fn http_and_h2_failures_map_to_retryable_or_final_codes() {
        assert_eq!(
            http_status(http::StatusCode::SERVICE_UNAVAILABLE).code(),
            Code::Unavailable
        );
        assert_eq!(
            http_status(http::StatusCode::UNAUTHORIZED).code(),
            Code::Unauthenticated
        );
        assert_eq!(
            h2_status(h2::Error::from(h2::Reason::REFUSED_STREAM)).code(),
            Code::Unavailable
        );
        assert_eq!(
            h2_status(h2::Error::from(h2::Reason::PROTOCOL_ERROR)).code(),
            Code::Internal
        );
        assert_eq!(
            h2_status(h2::Error::from(h2::Reason::CANCEL)).code(),
            Code::Cancelled
        );
    }
}
