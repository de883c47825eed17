//! Snapshot `DoPut` calls read straight from the HTTP/2 request. In: every HTTP request of the
//! Flight port. A `DoPut` whose first message's descriptor is a snapshot header is read here:
//! the record-batch messages are parsed as their bytes arrive (HTTP/2 frames of any size) and
//! each value is copied once, from the received frame into the pooled value buffer. Out: the
//! gRPC response of those calls; every other request goes on, unchanged (a `DoPut` with the
//! bytes already read put back in front), to tonic's Flight service.
//!
//! Why not tonic's decoder: it copies every frame into a message buffer of its own before
//! decoding, so each value would be copied twice on its way to the statistics.

use std::convert::Infallible;
use std::task::{Context, Poll};

use arrow_flight::sql::Any;
use arrow_flight::{FlightData, PutResult, flight_descriptor::DescriptorType};
use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use http_body::Frame;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use lrid_protocol::SNAPSHOT_TYPE_URL;
use prost::Message;
use tonic::Status;
use tonic::body::Body;

use crate::service::{Ingest, parse_snapshot_header};
use crate::snapshot::{SnapshotReader, values_for_schema};

const DO_PUT: &str = "/arrow.flight.protocol.FlightService/DoPut";
const GRPC_PREFIX: usize = 5;

/// The layer in front of the Flight service that takes snapshot `DoPut` calls.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotPutLayer {
    pub(crate) ingest: Ingest,
    pub(crate) token: Option<String>,
    pub(crate) max_message: usize,
}

impl<S> tower::Layer<S> for SnapshotPutLayer {
    type Service = SnapshotPut<S>;

    fn layer(&self, inner: S) -> SnapshotPut<S> {
        SnapshotPut {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct SnapshotPut<S> {
    inner: S,
    layer: SnapshotPutLayer,
}

impl<S> tower::Service<http::Request<Body>> for SnapshotPut<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.method() != http::Method::POST || request.uri().path() != DO_PUT {
            return Box::pin(self.inner.call(request));
        }
        // The service that was polled ready goes with the call; a clone stays.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move { Ok(layer.do_put(request, inner).await) })
    }
}

impl SnapshotPutLayer {
    async fn do_put<S>(&self, request: http::Request<Body>, mut inner: S) -> http::Response<Body>
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    {
        let given = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Err(status) = crate::authorize(self.token.as_deref(), given) {
            return status.into_http();
        }
        let (parts, mut body) = request.into_parts();
        // The first message (schema and descriptor), whole.
        let mut head = BytesMut::new();
        let first_len = loop {
            if head.len() >= GRPC_PREFIX {
                let len = u32::from_be_bytes(head[1..GRPC_PREFIX].try_into().expect("4 bytes"));
                let len = len as usize;
                if head[0] != 0 || len > self.max_message {
                    // Compressed or too large: tonic refuses it as it refuses any other.
                    break None;
                }
                if head.len() >= GRPC_PREFIX + len {
                    break Some(len);
                }
            }
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        head.extend_from_slice(&data);
                    }
                }
                Some(Err(status)) => return status.into_http(),
                None => break None,
            }
        };
        let snapshot = first_len.and_then(|len| {
            let first = FlightData::decode(&head[GRPC_PREFIX..GRPC_PREFIX + len]).ok()?;
            let descriptor = first.flight_descriptor.as_ref()?;
            if descriptor.r#type != DescriptorType::Cmd as i32 {
                return None;
            }
            let any = Any::decode(descriptor.cmd.clone()).ok()?;
            (any.type_url == SNAPSHOT_TYPE_URL).then_some((first, any, GRPC_PREFIX + len))
        });
        let Some((first, any, consumed)) = snapshot else {
            // Not a snapshot: to tonic, with the bytes read so far in front of the rest.
            let replay = futures::StreamExt::chain(
                futures::stream::iter([Ok::<_, Status>(Frame::data(head.freeze()))]),
                BodyStream::new(body),
            );
            let request = http::Request::from_parts(parts, Body::new(StreamBody::new(replay)));
            return match inner.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
        };
        let head = head.freeze();
        match self
            .read_and_record(&first, &any, head.slice(consumed..), body)
            .await
        {
            Ok(result) => grpc_response(&result),
            Err(status) => status.into_http(),
        }
    }

    async fn read_and_record(
        &self,
        first: &FlightData,
        any: &Any,
        rest_of_head: Bytes,
        mut body: Body,
    ) -> Result<PutResult, Status> {
        let header = parse_snapshot_header(&any.value)?;
        let values = values_for_schema(first, &self.ingest.pool)?;
        let mut reader = SnapshotReader::new(&header, values, self.max_message);
        reader.feed(&rest_of_head)?;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                reader.feed(&data)?;
            }
        }
        let values = reader.finish()?;
        self.ingest.record(header, values).await
    }
}

/// A unary gRPC response: the message, then `grpc-status: 0` in the trailers.
fn grpc_response(message: &impl Message) -> http::Response<Body> {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(GRPC_PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).expect("a small message"));
    message.encode(&mut buf).expect("room reserved");
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = futures::stream::iter([
        Ok::<_, Status>(Frame::data(buf.freeze())),
        Ok(Frame::trailers(trailers)),
    ]);
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(Body::new(StreamBody::new(frames)))
        .expect("a valid response head")
}
