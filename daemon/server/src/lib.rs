//! # lrid-server
//!
//! The Arrow Flight service of `lrid serve`. In: gRPC calls on one port — the lrid ingest
//! protocol (`DoAction` for runs and points, `DoPut` for snapshots; see `lrid-protocol`) and
//! Flight SQL (statements, prepared statements, catalog metadata) from ADBC, JDBC, pyarrow or
//! `lrid sql`. Out: calls into the [`lrid_store::Store`], and query results as Arrow streams.
//! Errors become Flight statuses in one place ([`status`]).

mod placeholders;
mod put;
mod service;
mod snapshot;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use lrid_store::Store;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Request, Status};

pub use service::LridFlightService;

/// Network settings of the service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// When set, every call must carry `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// A file whose content (surrounding whitespace trimmed) is the token; read at start.
    /// Keeps the token out of the configuration file and of command lines.
    pub token_file: Option<std::path::PathBuf>,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// How often rows waiting in memory are checked for a checkpoint to Parquet.
    pub checkpoint_interval_ms: u64,
    /// TLS: the server's certificate chain (PEM). With `tls_key`, the port serves `https://`
    /// only; clients trust it through the CA that signed it (`--ca-file`).
    pub tls_cert: Option<std::path::PathBuf>,
    /// TLS: the certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<std::path::PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            token: None,
            token_file: None,
            max_message_bytes: lrid_protocol::MAX_MESSAGE_BYTES,
            checkpoint_interval_ms: 5_000,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl ServerConfig {
    /// The scheme clients use: `https` when the port serves TLS.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The TLS settings of the port: none for plain HTTP/2; an error naming the file or the
    /// setting that is wrong (read and checked before the port is opened).
    pub fn tls(&self) -> Result<Option<ServerTlsConfig>> {
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            (Some(_), None) => {
                return Err(Error::Tls(
                    "[server] tls_cert is set but tls_key is not: give both".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Tls(
                    "[server] tls_key is set but tls_cert is not: give both".into(),
                ));
            }
        };
        let read = |what: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                Error::Tls(format!(
                    "cannot read the TLS {what} {}: {e}",
                    path.display()
                ))
            })
        };
        let (cert_pem, key_pem) = (read("certificate", cert)?, read("key", key)?);
        if !String::from_utf8_lossy(&cert_pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(Error::Tls(format!(
                "the TLS certificate {} holds no PEM certificate",
                cert.display()
            )));
        }
        if !String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY-----") {
            return Err(Error::Tls(format!(
                "the TLS key {} holds no PEM private key",
                key.display()
            )));
        }
        let config = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
        // Building the acceptor parses both and checks that the key fits: fail here, not on the
        // first connection.
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|e| {
                Error::Tls(format!(
                    "the TLS certificate {} and key {} cannot be used: {}",
                    cert.display(),
                    key.display(),
                    error_chain(&e)
                ))
            })?;
        Ok(Some(config))
    }

    /// Loopback, a free port.
    pub fn test_config() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            checkpoint_interval_ms: 200,
            ..Self::default()
        }
    }
}

/// Errors of the server itself (not of a call).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("the Flight service failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Tls(String),
    #[error(transparent)]
    Store(#[from] lrid_store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one place where a store error becomes a Flight status.
pub fn status(e: lrid_store::Error) -> Status {
    use lrid_store::Error as E;
    match e {
        E::InvalidArgument(m) => Status::invalid_argument(m),
        E::Stats(e) => Status::invalid_argument(e.to_string()),
        E::NotFound(m) => Status::not_found(m),
        E::AlreadyExists(m) => Status::already_exists(m),
        E::FailedPrecondition(m) => Status::failed_precondition(m),
        E::DataFusion(e) => datafusion_status(e),
        // The object store refused or failed: the call may succeed later (the data is in the
        // write-ahead log meanwhile).
        e @ E::ObjectStore { .. } => Status::unavailable(e.to_string()),
        e @ E::NewerFormat(_) => Status::failed_precondition(e.to_string()),
        e @ (E::Io { .. } | E::Corrupt(_) | E::Parquet(_) | E::Arrow(_)) => {
            Status::internal(e.to_string())
        }
    }
}

/// Flight actions served by other parts of the daemon (e.g. identifiers, by `lrid-identify`):
/// the server routes an action it does not know itself to the handler that lists it.
#[tonic::async_trait]
pub trait ActionHandler: Send + Sync + 'static {
    /// (action name, description) of every action it serves.
    fn actions(&self) -> Vec<(String, String)>;
    /// Serves one action; the body of its one result.
    async fn do_action(&self, kind: &str, body: bytes::Bytes) -> Result<Vec<u8>, ActionError>;
}

/// Why an [`ActionHandler`] refused or failed an action.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The request is malformed (→ InvalidArgument).
    #[error("{0}")]
    InvalidArgument(String),
    /// It names something that does not exist (→ NotFound).
    #[error("{0}")]
    NotFound(String),
    /// It would create something that exists (→ AlreadyExists).
    #[error("{0}")]
    AlreadyExists(String),
    /// It does not fit the current state (→ FailedPrecondition).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The server failed (→ Internal).
    #[error("{0}")]
    Internal(String),
}

/// The one place where an action handler's error becomes a Flight status.
pub fn action_status(e: ActionError) -> Status {
    match e {
        ActionError::InvalidArgument(m) => Status::invalid_argument(m),
        ActionError::NotFound(m) => Status::not_found(m),
        ActionError::AlreadyExists(m) => Status::already_exists(m),
        ActionError::FailedPrecondition(m) => Status::failed_precondition(m),
        ActionError::Internal(m) => Status::internal(m),
    }
}

/// The one check of the bearer token (`given`: the `authorization` header), for tonic's
/// interceptor and the snapshot layer alike.
pub(crate) fn authorize(token: Option<&str>, given: Option<&str>) -> Result<(), Status> {
    let Some(token) = token else {
        return Ok(());
    };
    if given.and_then(|v| v.strip_prefix("Bearer ")) == Some(token) {
        Ok(())
    } else {
        Err(Status::unauthenticated(
            "this lrid server needs 'authorization: Bearer <token>'",
        ))
    }
}

/// A query error: the user's mistake (InvalidArgument) or the server's (Internal).
pub fn datafusion_status(e: datafusion::error::DataFusionError) -> Status {
    use datafusion::error::DataFusionError as D;
    match e.find_root() {
        D::SQL(..) | D::Plan(_) | D::SchemaError(..) | D::NotImplemented(_) => {
            Status::invalid_argument(e.to_string())
        }
        D::ResourcesExhausted(_) => Status::resource_exhausted(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

/// `e` and the errors it wraps, joined by ': '.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut at = e.source();
    while let Some(inner) = at {
        let text = inner.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        at = inner.source();
    }
    out
}

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    tls: Option<ServerTlsConfig>,
    service: LridFlightService,
    config: ServerConfig,
    store: Arc<Store>,
}

impl Server {
    /// Reads the TLS settings, when there are any, and binds the listening socket.
    pub async fn bind(config: ServerConfig, store: Arc<Store>) -> Result<Server> {
        let tls = config.tls()?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen.clone(),
                source,
            })?;
        Ok(Server {
            listener,
            tls,
            service: LridFlightService::new(store.clone()),
            config,
            store,
        })
    }

    /// Also serves the actions of `handler`.
    pub fn with_actions(mut self, handler: Arc<dyn ActionHandler>) -> Self {
        self.service = self.service.with_actions(handler);
        self
    }

    /// The address actually bound (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound socket")
    }

    /// Serves until `shutdown` resolves, then checkpoints the store.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let token = self.config.token.clone();
        let check = move |req: Request<()>| -> Result<Request<()>, Status> {
            let given = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            authorize(token.as_deref(), given)?;
            Ok(req)
        };
        let max = self.config.max_message_bytes;
        let snapshots = put::SnapshotPutLayer {
            ingest: self.service.snapshot_ingest(),
            token: self.config.token.clone(),
            max_message: max,
        };
        let server = FlightServiceServer::new(self.service)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let svc = tonic::service::interceptor::InterceptedService::new(server, check);
        let store = self.store.clone();
        let interval = Duration::from_millis(self.config.checkpoint_interval_ms.max(10));
        let checkpoints = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let s = store.clone();
                if s.tail_rows() == 0 {
                    continue;
                }
                match tokio::task::spawn_blocking(move || s.checkpoint()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(
                        "checkpoint failed (the rows stay in memory and in the write-ahead log; the next checkpoint tries again): {e}"
                    ),
                    Err(e) => tracing::error!("checkpoint task failed: {e}"),
                }
                // Small files merged in the background once enough have piled up.
                let s = store.clone();
                if s.needs_compaction() {
                    match tokio::task::spawn_blocking(move || s.compact()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::error!("compaction failed: {e}"),
                        Err(e) => tracing::error!("compaction task failed: {e}"),
                    }
                }
            }
        });
        // TCP_NODELAY on every accepted socket (the builder's flag only applies to sockets it
        // binds itself): without it small responses wait ~40 ms for a delayed ACK.
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true));
        // Large HTTP/2 windows: snapshots are megabytes, the 64 KiB default throttles them.
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let served = builder
            .initial_stream_window_size(Some(16 << 20))
            .initial_connection_window_size(Some(64 << 20))
            .max_frame_size(Some((1 << 24) - 1))
            .layer(snapshots)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        checkpoints.abort();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.checkpoint())
            .await
            .expect("checkpoint task")?;
        served?;
        Ok(())
    }
}
