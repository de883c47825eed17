//! # lrid-sdk
//!
//! Records a training job's layer observables into `lrid serve`. In: the job's tensors
//! (`&[f32]` + shape) at each trajectory point. Out: the lrid ingest protocol over Arrow Flight
//! (see [`lrid_protocol`]), sent by a background thread.
//!
//! The training loop never waits on the network: every `record_*` call copies the values into a
//! bounded buffer ([`RecorderConfig::buffer_bytes`]) and returns. A call that would overflow the
//! buffer returns [`Error::BufferFull`] at once, so the job decides (wait with
//! [`Recorder::wait_for_room`] or [`Recorder::flush`], skip, stop); nothing is dropped silently. When the daemon is down the
//! sender retries with exponential backoff and says so in the log and in [`Recorder::status`];
//! a message the daemon refuses is reported by the next call (and by [`Recorder::flush`]).
//!
//! ```no_run
//! use lrid_sdk::{Recorder, RecorderConfig, LayerInfo, Position, RunLabels};
//! let rec = Recorder::open(RecorderConfig::new("http://127.0.0.1:50051"), "run-1", RunLabels::default())?;
//! let conv1 = LayerInfo { index: 0, name: "conv1".into(), position: Position::Early,
//!     weight_shape: vec![32, 3, 5, 5], activation_shape: vec![32, 32, 32] };
//! let weights = vec![0.0f32; 32 * 3 * 5 * 5];
//! rec.record_weights(0, &conv1, &weights)?;
//! rec.complete_point(0, Some(0))?; // or complete_point_with_diagnostics(0, Some(0), scalars)
//! rec.close()?;
//! # Ok::<(), lrid_sdk::Error>(())
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arrow_flight::Action;
use arrow_flight::flight_service_client::FlightServiceClient;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use lrid_protocol::{
    ACTION_CLOSE_RUN, ACTION_COMPLETE_POINT, ACTION_OPEN_RUN, CloseRun, CompletePoint,
    MAX_MESSAGE_BYTES, OpenRun, PROTOCOL_VERSION, SnapshotHeader,
};
pub use lrid_protocol::{Diagnostic, LayerInfo, Position, RunLabels, SnapshotMeasure};

mod put;
pub mod tls;
#[cfg(feature = "tch")]
pub mod torch;
use put::PutTarget;
pub use tls::Remote;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Errors of the recorder.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("'{0}' is not a server address: {1}")]
    Address(String, String),
    #[error(
        "the recording buffer is full: {needed} more bytes do not fit ({used} of {capacity} in use); wait for room, skip this snapshot or raise buffer_bytes"
    )]
    BufferFull {
        needed: usize,
        used: usize,
        capacity: usize,
    },
    #[error("lrid refused {what}: {message} ({code:?})")]
    Rejected {
        what: String,
        code: Code,
        message: String,
    },
    #[error("lrid at {server} is unreachable after {attempts} attempts: {last}")]
    Unreachable {
        server: String,
        attempts: u32,
        last: String,
    },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("the recorder is closed")]
    Closed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the recorder reaches the daemon.
#[derive(Clone, Debug)]
pub struct RecorderConfig {
    /// `http://host:port` of `lrid serve`, or `https://host:port` when it serves TLS.
    pub server: String,
    /// Bearer token, when the daemon needs one.
    pub token: Option<String>,
    /// For `https://`: the CA file (PEM) that signed the daemon's certificate; none: the
    /// system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Bytes of tensor values that may wait to be sent.
    pub buffer_bytes: usize,
    /// First wait after a failed attempt; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long one message may keep failing to reach the daemon before it is given up (and
    /// reported as [`Error::Unreachable`]).
    pub give_up_after: Duration,
    /// Snapshots sent at once (at least 1): the daemon summarises one while the next crosses the
    /// network. Opening, closing and flushes wait for all of them; a point's completion waits
    /// for the snapshots queued before it, so the daemon always sees a point's snapshots before
    /// its completion, while the next point's snapshots are already on their way.
    pub snapshots_in_flight: usize,
    /// Bytes of sent snapshots' buffers kept for reuse by the next `record_*` calls (at most
    /// `buffer_bytes` of them can be in use at once anyway). Reused buffers are already
    /// mapped; a fresh one costs a page fault per 4 KiB, more than copying into it.
    pub pool_bytes: usize,
}

impl RecorderConfig {
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            token: None,
            ca_file: None,
            buffer_bytes: 512 << 20,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            give_up_after: Duration::from_secs(300),
            snapshots_in_flight: 3,
            pool_bytes: 64 << 20,
        }
    }
}

/// What the sender is doing.
#[derive(Clone, Debug, PartialEq)]
pub enum SenderStatus {
    /// The last message reached the daemon.
    Connected,
    /// The daemon cannot be reached; messages wait and are retried.
    Retrying { attempts: u32, last_error: String },
}

enum Job {
    /// Opening or closing the run: sent after everything before it, before anything after it.
    Action {
        kind: &'static str,
        what: String,
        body: Vec<u8>,
    },
    /// Completing a point: sent after everything before it; later snapshots (of other points)
    /// do not wait for it.
    Complete {
        point: u32,
        what: String,
        body: Vec<u8>,
    },
    Snapshot {
        header: SnapshotHeader,
        values: Bytes,
    },
    Flush(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Shared {
    used: AtomicUsize,
    /// Value buffers of sent snapshots, reused by the next `record_*` calls; at most
    /// `pool_bytes` of capacity.
    pool: Mutex<Vec<Vec<f32>>>,
    pool_bytes: usize,
    /// Signalled whenever sent bytes leave the buffer (for [`Recorder::wait_for_room`]).
    room: (Mutex<()>, std::sync::Condvar),
    errors: Mutex<Vec<Error>>,
    status: Mutex<SenderStatus>,
}

impl Shared {
    /// An empty buffer for `len` values, reused when one is free.
    fn take_buffer(&self, len: usize) -> Vec<f32> {
        let mut pool = self.pool.lock().expect("pool lock");
        // The smallest free buffer that fits, else the largest (it grows once).
        let fit = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= len)
            .min_by_key(|&i| pool[i].capacity())
            .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()));
        let mut b = fit.map(|i| pool.swap_remove(i)).unwrap_or_default();
        drop(pool);
        b.clear();
        b.reserve_exact(len);
        b
    }

    fn give_buffer(&self, b: Vec<f32>) {
        let mut pool = self.pool.lock().expect("pool lock");
        let kept: usize = pool.iter().map(|b| b.capacity() * 4).sum();
        if kept + b.capacity() * 4 <= self.pool_bytes {
            pool.push(b);
        }
    }

    /// Bytes left the buffer: wake whoever waits for room.
    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::SeqCst);
        let _guard = self.room.0.lock().expect("room lock");
        self.room.1.notify_all();
    }
}

/// A snapshot's values as the bytes of the messages that carry them (zero-copy slices); the
/// buffer goes back to the pool when the last message referring to it is dropped.
struct PooledValues {
    values: Vec<f32>,
    shared: Arc<Shared>,
}

impl AsRef<[u8]> for PooledValues {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: f32 has no padding and any alignment suits u8; the slice covers exactly the
        // initialised values and lives as long as `self`.
        unsafe {
            std::slice::from_raw_parts(
                self.values.as_ptr().cast::<u8>(),
                size_of_val(self.values.as_slice()),
            )
        }
    }
}

impl Drop for PooledValues {
    fn drop(&mut self) {
        self.shared.give_buffer(std::mem::take(&mut self.values));
    }
}

/// Records one run. Cheap to share by reference across the training loop; every method is
/// non-blocking except [`Recorder::flush`] and [`Recorder::close`].
#[derive(Debug)]
pub struct Recorder {
    run_id: String,
    config: RecorderConfig,
    tx: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Action { kind, .. } => write!(f, "Action({kind})"),
            Job::Complete { point, .. } => write!(f, "Complete({point})"),
            Job::Snapshot { header, .. } => write!(f, "Snapshot({})", header.layer.name),
            Job::Flush(_) => write!(f, "Flush"),
        }
    }
}

impl Recorder {
    /// Starts the sender and queues the opening of run `run_id`. Does not wait for the daemon.
    pub fn open(config: RecorderConfig, run_id: &str, labels: RunLabels) -> Result<Recorder> {
        lrid_protocol::validate_run_id(run_id).map_err(Error::InvalidArgument)?;
        let address = |e: String| Error::Address(config.server.clone(), e);
        let remote = Remote::new(&config.server, config.ca_file.as_deref()).map_err(address)?;
        let endpoint = remote
            .endpoint()
            .map_err(address)?
            .initial_stream_window_size(Some(16 << 20))
            .initial_connection_window_size(Some(64 << 20));
        let shared = Arc::new(Shared {
            used: AtomicUsize::new(0),
            pool: Mutex::new(Vec::new()),
            pool_bytes: config.pool_bytes,
            room: Default::default(),
            errors: Mutex::new(Vec::new()),
            status: Mutex::new(SenderStatus::Connected),
        });
        let put = PutTarget::new(&remote, config.token.as_deref()).map_err(address)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let sender = Sender {
            endpoint,
            put,
            config: config.clone(),
            shared: shared.clone(),
            client: tokio::sync::Mutex::new(None),
            put_connection: tokio::sync::Mutex::new(None),
        };
        let worker = std::thread::Builder::new()
            .name("lrid-recorder".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("recorder runtime");
                rt.block_on(sender.run(rx));
            })
            .expect("recorder thread");
        let rec = Recorder {
            run_id: run_id.to_string(),
            config,
            tx: Mutex::new(Some(tx)),
            shared,
            worker: Mutex::new(Some(worker)),
        };
        let body = serde_json::to_vec(&OpenRun {
            protocol: PROTOCOL_VERSION,
            run_id: run_id.to_string(),
            labels,
        })
        .expect("json");
        rec.send(Job::Action {
            kind: ACTION_OPEN_RUN,
            what: format!("opening run '{run_id}'"),
            body,
        })?;
        Ok(rec)
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Whether the daemon is being reached.
    pub fn status(&self) -> SenderStatus {
        self.shared.status.lock().expect("status lock").clone()
    }

    /// Bytes waiting to be sent.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.used.load(Ordering::SeqCst)
    }

    /// Blocks until `bytes` more fit in the buffer (what a job does on
    /// [`Error::BufferFull`] when it would rather wait than skip a snapshot). Returns at once
    /// when they fit; fails when they can never fit (more than `buffer_bytes`), or with the
    /// first error the daemon reported meanwhile.
    pub fn wait_for_room(&self, bytes: usize) -> Result<()> {
        let capacity = self.config.buffer_bytes;
        if bytes > capacity {
            return Err(Error::BufferFull {
                needed: bytes,
                used: self.buffered_bytes(),
                capacity,
            });
        }
        let mut guard = self.shared.room.0.lock().expect("room lock");
        loop {
            self.take_error()?;
            if self.buffered_bytes() + bytes <= capacity {
                return Ok(());
            }
            // A timeout as well, so that a sender that stopped (closed recorder) is noticed.
            guard = self
                .shared
                .room
                .1
                .wait_timeout(guard, Duration::from_millis(100))
                .expect("room lock")
                .0;
            if self.tx.lock().expect("sender lock").is_none() {
                return Err(Error::Closed);
            }
        }
    }

    fn take_error(&self) -> Result<()> {
        let mut errors = self.shared.errors.lock().expect("errors lock");
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.remove(0))
        }
    }

    fn send(&self, job: Job) -> Result<()> {
        let tx = self.tx.lock().expect("sender lock");
        let tx = tx.as_ref().ok_or(Error::Closed)?;
        tx.send(job).map_err(|_| Error::Closed)
    }

    fn snapshot(&self, header: SnapshotHeader, values: &[f32]) -> Result<()> {
        self.check_values(&header, values.len())?;
        let mut buffer = self.shared.take_buffer(values.len());
        buffer.extend_from_slice(values);
        self.snapshot_owned(header, buffer)
    }

    fn check_values(&self, header: &SnapshotHeader, len: usize) -> Result<()> {
        self.take_error()?;
        if header.expected_values() != len as u64 {
            return Err(Error::InvalidArgument(format!(
                "{} of layer {} ({}): {} values given, the shapes say {}",
                header.measure.as_str(),
                header.layer.index,
                header.layer.name,
                len,
                header.expected_values()
            )));
        }
        Ok(())
    }

    /// Queues values the recorder owns (already checked against the header).
    fn snapshot_owned(&self, header: SnapshotHeader, values: Vec<f32>) -> Result<()> {
        let bytes = size_of_val(values.as_slice());
        let capacity = self.config.buffer_bytes;
        let reserved = self
            .shared
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used + bytes <= capacity).then_some(used + bytes)
            });
        if let Err(used) = reserved {
            return Err(Error::BufferFull {
                needed: bytes,
                used,
                capacity,
            });
        }
        self.send(Job::Snapshot {
            header,
            values: Bytes::from_owner(PooledValues {
                values,
                shared: self.shared.clone(),
            }),
        })
    }

    fn header(
        &self,
        point: u32,
        layer: &LayerInfo,
        measure: SnapshotMeasure,
        examples: u64,
        batch: u32,
    ) -> SnapshotHeader {
        SnapshotHeader {
            protocol: PROTOCOL_VERSION,
            run_id: self.run_id.clone(),
            point,
            layer: layer.clone(),
            measure,
            examples,
            batch,
        }
    }

    /// Queues the layer's forward kernel at trajectory point `point` (C order, `weight_shape`).
    pub fn record_weights(&self, point: u32, layer: &LayerInfo, values: &[f32]) -> Result<()> {
        self.snapshot(
            self.header(point, layer, SnapshotMeasure::Weight, 0, 0),
            values,
        )
    }

    /// Queues batch `batch` of the evaluation pass's activations: `examples × activation_shape`
    /// values, examples first.
    pub fn record_activations(
        &self,
        point: u32,
        layer: &LayerInfo,
        batch: u32,
        examples: usize,
        values: &[f32],
    ) -> Result<()> {
        self.snapshot(
            self.header(point, layer, SnapshotMeasure::Act, examples as u64, batch),
            values,
        )
    }

    /// Queues batch `batch` of per-example layer-wise activity changes (spec §1.4).
    pub fn record_activity_change(
        &self,
        point: u32,
        layer: &LayerInfo,
        batch: u32,
        per_example: &[f32],
    ) -> Result<()> {
        self.snapshot(
            self.header(
                point,
                layer,
                SnapshotMeasure::Gradavg,
                per_example.len() as u64,
                batch,
            ),
            per_example,
        )
    }

    /// Queues the completion of a point (after its snapshots, in order).
    pub fn complete_point(&self, point: u32, step: Option<i64>) -> Result<()> {
        self.complete_point_with_diagnostics(point, step, Vec::new())
    }

    /// Queues the completion of a point with scalars of its layers (rows of the `diagnostics`
    /// table, e.g. `angle_bw`): they become queryable with the point's observables. A diagnostic
    /// with an empty or too long name or a non-finite value is refused here; one of a layer
    /// without snapshots, or a (layer, name) given twice, by the daemon.
    pub fn complete_point_with_diagnostics(
        &self,
        point: u32,
        step: Option<i64>,
        diagnostics: Vec<Diagnostic>,
    ) -> Result<()> {
        self.take_error()?;
        for d in &diagnostics {
            d.validate().map_err(|why| {
                Error::InvalidArgument(format!(
                    "diagnostic {:?} of layer {} at point {point}: {why}",
                    d.name, d.layer_index
                ))
            })?;
        }
        let body = serde_json::to_vec(&CompletePoint {
            protocol: PROTOCOL_VERSION,
            run_id: self.run_id.clone(),
            point,
            step,
            diagnostics,
        })
        .expect("json");
        self.send(Job::Complete {
            point,
            what: format!("completing point {point} of run '{}'", self.run_id),
            body,
        })
    }

    /// Blocks until everything queued so far is acknowledged (or given up); returns the first
    /// error the daemon reported, if any.
    pub fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Flush(tx))?;
        rx.blocking_recv().map_err(|_| Error::Closed)?;
        self.take_error()
    }

    /// Closes the run, sends everything queued and stops the sender.
    pub fn close(&self) -> Result<()> {
        let body = serde_json::to_vec(&CloseRun {
            protocol: PROTOCOL_VERSION,
            run_id: self.run_id.clone(),
        })
        .expect("json");
        self.send(Job::Action {
            kind: ACTION_CLOSE_RUN,
            what: format!("closing run '{}'", self.run_id),
            body,
        })?;
        let result = self.flush();
        self.tx.lock().expect("sender lock").take();
        if let Some(w) = self.worker.lock().expect("worker lock").take() {
            let _ = w.join();
        }
        result
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Let the sender finish what is queued; the run stays open (close() closes it).
        self.tx.lock().map(|mut t| t.take()).ok();
        if let Some(w) = self.worker.lock().ok().and_then(|mut w| w.take()) {
            let _ = w.join();
        }
    }
}

/// The background sender: snapshots pipelined, actions in order, every message retried.
/// Actions go through tonic's Flight client; snapshots through [`put`] on a connection of
/// their own (actions wait for the snapshots before them, so the daemon sees them in order).
struct Sender {
    endpoint: Endpoint,
    put: PutTarget,
    config: RecorderConfig,
    shared: Arc<Shared>,
    client: tokio::sync::Mutex<Option<FlightServiceClient<Channel>>>,
    put_connection: tokio::sync::Mutex<Option<h2::client::SendRequest<Bytes>>>,
}

/// Signalled when a snapshot or completion has been delivered (or given up).
type Done = futures::future::Shared<oneshot::Receiver<()>>;

/// What finished in the sender's set of work in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    Snapshot,
    Completion,
}

fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
    )
}

impl Sender {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let this = &self;
        // Snapshots being sent, and completions waiting for their snapshots (or being sent).
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut snapshots = 0usize;
        // Signals of the snapshots and completions not yet known to be done, with their points.
        let mut pending_snapshots: Vec<(u32, Done)> = Vec::new();
        let mut pending_completions: Vec<(u32, Done)> = Vec::new();
        let mut last_completion: Option<Done> = None;
        loop {
            // Take the next job, collecting finished work meanwhile.
            let job = tokio::select! {
                job = rx.recv() => job,
                Some(kind) = in_flight.next(), if !in_flight.is_empty() => {
                    snapshots -= usize::from(kind == Sent::Snapshot);
                    continue;
                }
            };
            let Some(job) = job else { break };
            if matches!(job, Job::Action { .. } | Job::Flush(_)) {
                while in_flight.next().await.is_some() {}
                snapshots = 0;
                pending_snapshots.clear();
                pending_completions.clear();
                last_completion = None;
            }
            pending_snapshots.retain(|(_, d)| d.peek().is_none());
            pending_completions.retain(|(_, d)| d.peek().is_none());
            match job {
                Job::Flush(done) => {
                    let _ = done.send(());
                }
                Job::Action { kind, what, body } => {
                    if let Err(e) = this
                        .deliver(&what, || Box::pin(this.action(kind, body.clone())))
                        .await
                    {
                        this.report(e);
                    }
                }
                Job::Complete { point, what, body } => {
                    // After every snapshot queued before it (and the previous completion), but
                    // without holding back the snapshots queued after it: the next point's
                    // values cross the network while this one completes.
                    let before: Vec<Done> = pending_snapshots
                        .iter()
                        .map(|(_, d)| d.clone())
                        .chain(last_completion.take())
                        .collect();
                    let (tx, done) = oneshot::channel();
                    let done = done.shared();
                    pending_completions.push((point, done.clone()));
                    last_completion = Some(done);
                    in_flight.push(Box::pin(async move {
                        futures::future::join_all(before).await;
                        let result = this
                            .deliver(&what, || {
                                Box::pin(this.action(ACTION_COMPLETE_POINT, body.clone()))
                            })
                            .await;
                        if let Err(e) = result {
                            this.report(e);
                        }
                        let _ = tx.send(());
                        Sent::Completion
                    })
                        as futures::future::BoxFuture<'_, Sent>);
                }
                Job::Snapshot { header, values } => {
                    while snapshots >= this.config.snapshots_in_flight.max(1) {
                        if in_flight.next().await == Some(Sent::Snapshot) {
                            snapshots -= 1;
                        }
                    }
                    // A snapshot of a point whose completion is on its way goes after it (and
                    // is refused, as it would have been when sent in order).
                    let after: Vec<Done> = pending_completions
                        .iter()
                        .filter(|(p, _)| *p == header.point)
                        .map(|(_, d)| d.clone())
                        .collect();
                    let (tx, done) = oneshot::channel();
                    pending_snapshots.push((header.point, done.shared()));
                    snapshots += 1;
                    in_flight.push(Box::pin(async move {
                        futures::future::join_all(after).await;
                        let bytes = values.len();
                        let what = format!(
                            "the {} snapshot of layer {} ({}) at point {}",
                            header.measure.as_str(),
                            header.layer.index,
                            header.layer.name,
                            header.point
                        );
                        let result = this
                            .deliver(&what, || {
                                Box::pin(this.put_snapshot(&header, values.clone()))
                            })
                            .await;
                        this.shared.release(bytes);
                        if let Err(e) = result {
                            this.report(e);
                        }
                        let _ = tx.send(());
                        Sent::Snapshot
                    }));
                }
            }
        }
        while in_flight.next().await.is_some() {}
    }

    fn report(&self, e: Error) {
        tracing::error!("{e}");
        self.shared.errors.lock().expect("errors lock").push(e);
    }

    async fn client(&self) -> Result<FlightServiceClient<Channel>, Status> {
        let mut cached = self.client.lock().await;
        if let Some(c) = cached.as_ref() {
            return Ok(c.clone());
        }
        let channel = self.endpoint.connect().await.map_err(|e| {
            if tls::untrusted_certificate(&e) {
                Status::failed_precondition(format!("cannot connect: {}", tls::UNTRUSTED_HINT))
            } else {
                Status::unavailable(format!("cannot connect: {e}"))
            }
        })?;
        let client = FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        *cached = Some(client.clone());
        Ok(client)
    }

    /// Sends one message until it is acknowledged, refused, or given up.
    async fn deliver<'a, F>(&self, what: &str, mut call: F) -> Result<()>
    where
        F: FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<(), Status>> + Send + 'a>>,
    {
        let start = tokio::time::Instant::now();
        let mut backoff = self.config.initial_backoff;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let outcome = call().await;
            match outcome {
                Ok(()) => {
                    *self.shared.status.lock().expect("status lock") = SenderStatus::Connected;
                    return Ok(());
                }
                // A retry of something that did arrive the first time.
                Err(s) if s.code() == Code::AlreadyExists && attempts > 1 => return Ok(()),
                Err(s) if transient(s.code()) => {
                    *self.client.lock().await = None;
                    *self.put_connection.lock().await = None;
                    *self.shared.status.lock().expect("status lock") = SenderStatus::Retrying {
                        attempts,
                        last_error: s.message().to_string(),
                    };
                    if start.elapsed() >= self.config.give_up_after {
                        return Err(Error::Unreachable {
                            server: self.config.server.clone(),
                            attempts,
                            last: s.message().to_string(),
                        });
                    }
                    tracing::warn!(
                        server = %self.config.server,
                        attempts,
                        retry_in_ms = backoff.as_millis() as u64,
                        "lrid is unreachable ({}); {what} waits",
                        s.message()
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
                Err(s) => {
                    return Err(Error::Rejected {
                        what: what.to_string(),
                        code: s.code(),
                        message: s.message().to_string(),
                    });
                }
            }
        }
    }
}

fn with_token<T>(msg: T, token: &Option<String>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token
        && let Ok(v) = format!("Bearer {t}").parse()
    {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

impl Sender {
    async fn action(&self, kind: &'static str, body: Vec<u8>) -> Result<(), Status> {
        let mut client = self.client().await?;
        let action = Action {
            r#type: kind.into(),
            body: body.into(),
        };
        let mut results = client
            .do_action(with_token(action, &self.config.token))
            .await?
            .into_inner();
        while results.message().await?.is_some() {}
        Ok(())
    }

    async fn put_snapshot(&self, header: &SnapshotHeader, values: Bytes) -> Result<(), Status> {
        let connection = {
            let mut cached = self.put_connection.lock().await;
            match cached.as_ref() {
                Some(c) => c.clone(),
                None => cached.insert(self.put.connect().await?).clone(),
            }
        };
        self.put.put_snapshot(connection, header, values).await
    }
}
