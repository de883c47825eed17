"""`Recorder`: one run's snapshots, sent to `lrid serve` by a background thread.

In: a training job's tensors (numpy arrays, or anything `numpy.asarray` takes) per layer and
trajectory point. Out: the ingest protocol of `sdk/protocol` over Arrow Flight — `DoAction` to
open the run, complete a point and close the run, `DoPut` of record batches for the values —
exactly what the Rust SDK (`lrid-sdk`) sends.

The training loop does not wait on the network: a `record_*` call checks and copies the values
into a bounded buffer and returns. When the buffer is full, `when_full` decides: ``"block"``
(default) waits for room, ``"raise"`` raises `BufferFull` at once. When the daemon cannot be
reached the sender retries with exponential backoff (`status` says so) for up to
`give_up_after` seconds per message; a message the daemon refuses is reported by the next call,
by `flush()` or by `close()`. Nothing is dropped silently.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import logging
import os
import threading
import time
import weakref
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

from . import _protocol as P

log = logging.getLogger("lrid")

__all__ = [
    "LayerInfo",
    "Recorder",
    "LridError",
    "Refused",
    "Unreachable",
    "BufferFull",
    "RecorderClosed",
]


class LridError(Exception):
    """Base class of the errors of the lrid client."""


class Refused(LridError):
    """The daemon refused a message (bad values, an unknown run, a point already completed…)."""

    def __init__(self, what: str, message: str):
        super().__init__(f"lrid refused {what}: {message}")
        self.what = what
        self.message = message


class Unreachable(LridError):
    """A message kept failing to reach the daemon for `give_up_after` seconds."""


class BufferFull(LridError):
    """A snapshot does not fit in the recording buffer (``when_full="raise"``, or larger than
    the whole buffer)."""


class RecorderClosed(LridError):
    """The recorder was closed."""


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    """A layer of a run, as the statistics see it (spec §0 layouts: conv kernels HWIO, dense
    kernels `[in, out]`, activations channels last). The same index must always carry the same
    description."""

    index: int
    name: str
    position: str
    weight_shape: tuple[int, ...]
    activation_shape: tuple[int, ...]

    def __post_init__(self):
        if self.position not in P.POSITIONS:
            raise ValueError(f"position must be one of {P.POSITIONS}; got {self.position!r}")
        if not self.name:
            raise ValueError("a layer needs a name")
        object.__setattr__(self, "weight_shape", tuple(int(d) for d in self.weight_shape))
        object.__setattr__(self, "activation_shape", tuple(int(d) for d in self.activation_shape))

    def to_wire(self) -> dict:
        return {
            "index": int(self.index),
            "name": self.name,
            "position": self.position,
            "weight_shape": list(self.weight_shape),
            "activation_shape": list(self.activation_shape),
        }

    @property
    def weight_count(self) -> int:
        return int(np.prod(self.weight_shape, dtype=np.int64))

    @property
    def units(self) -> int:
        return int(np.prod(self.activation_shape, dtype=np.int64))


_SCHEMES = (
    ("http://", "grpc+tcp"),
    ("grpc+tcp://", "grpc+tcp"),
    ("grpc://", "grpc+tcp"),
    ("https://", "grpc+tls"),
    ("grpc+tls://", "grpc+tls"),
)


def flight_location(server: str) -> str:
    """`http://host:port` (plain HTTP/2), `https://host:port` (TLS), their Flight spellings
    (`grpc://`, `grpc+tcp://`, `grpc+tls://`) or `host:port` as a Flight location."""
    s = server.strip()
    scheme = "grpc+tcp"
    for prefix, flight_scheme in _SCHEMES:
        if s.startswith(prefix):
            s = s[len(prefix):]
            scheme = flight_scheme
            break
    else:
        if "://" in s:
            raise ValueError(
                f"'{server}' is not a server address lrid serves: use http://host:port "
                "(plain HTTP/2) or https://host:port (TLS)"
            )
    s = s.rstrip("/")
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"'{server}' is not a server address: expected http://host:port")
    return f"{scheme}://{s}"


def tls_root_certs(location: str, ca_file=None) -> bytes | None:
    """The PEM certificates a TLS client of `location` trusts: those of `ca_file` (default
    ``$LRID_CA_FILE``), or None (the system's roots) without one; None for plain HTTP/2."""
    if not location.startswith("grpc+tls://"):
        return None
    ca_file = ca_file or os.environ.get("LRID_CA_FILE") or None
    if ca_file is None:
        return None
    try:
        with open(ca_file, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise ValueError(f"cannot read the CA file {ca_file}: {e.strerror}") from e
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError(f"the CA file {ca_file} holds no PEM certificate")
    return pem


def _untrusted(e: BaseException) -> bool:
    """A TLS handshake refused for the daemon's certificate: the caller's to fix, not retried."""
    text = str(e).lower()
    return "certificate verify failed" in text or "certificate_verify_failed" in text


UNTRUSTED_HINT = ("the daemon's certificate is not trusted: give the CA file that signed it "
                  "(ca_file= or LRID_CA_FILE)")


# Errors worth retrying: the daemon is down, restarting or busy.
_TRANSIENT = (
    flight.FlightUnavailableError,
    flight.FlightTimedOutError,
    flight.FlightCancelledError,
    ConnectionError,
)


def _already_exists(e: BaseException) -> bool:
    return "already" in str(e).lower() and "exist" in str(e).lower()


class _Deferred:
    """Values that become available later (a device-to-host copy in flight)."""

    def __init__(self, nbytes: int, resolve: Callable[[], np.ndarray]):
        self.nbytes = nbytes
        self.resolve = resolve


_Job = collections.namedtuple("_Job", "kind what payload nbytes")

_LIVE: "weakref.WeakSet[Recorder]" = weakref.WeakSet()


@atexit.register
def _flush_at_exit():
    for rec in list(_LIVE):
        rec._at_exit()


class Recorder:
    """Records one run into `lrid serve` (`server`: ``http://host:port``).

    Every method returns at once except `flush()` and `close()` (and a `record_*` call that
    waits for room under ``when_full="block"``). Use as a context manager to close the run.
    """

    def __init__(
        self,
        server: str,
        run_id: str,
        labels: dict | None = None,
        token: str | None = None,
        *,
        buffer_bytes: int = 512 << 20,
        when_full: str = "block",
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        give_up_after: float = 300.0,
        snapshots_in_flight: int = 3,
        ca_file=None,
    ):
        P.validate_run_id(run_id)
        if when_full not in ("block", "raise"):
            raise ValueError(f"when_full must be 'block' or 'raise'; got {when_full!r}")
        if snapshots_in_flight < 1:
            raise ValueError(f"snapshots_in_flight must be at least 1; got {snapshots_in_flight}")
        self.snapshots_in_flight = int(snapshots_in_flight)
        if buffer_bytes <= 0:
            raise ValueError(f"buffer_bytes must be positive; got {buffer_bytes}")
        self.server = server
        self.run_id = run_id
        self._token = token
        self._location = flight_location(server)
        self._ca_file = ca_file
        self._tls_root_certs = tls_root_certs(self._location, ca_file)
        self._options = flight.FlightCallOptions(
            headers=[(b"authorization", f"Bearer {token}".encode())] if token else None
        )
        self.buffer_bytes = int(buffer_bytes)
        self.when_full = when_full
        self.initial_backoff = float(initial_backoff)
        self.max_backoff = float(max_backoff)
        self.give_up_after = float(give_up_after)
        self._lock = threading.Condition()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._used = 0
        self._errors: list[LridError] = []
        # Set when the run could not be opened: every later message would be refused too.
        self._fatal: LridError | None = None
        # Points with a snapshot that was refused or given up: their completion is not sent.
        self._failed_points: set[int] = set()
        # A message was given up and none has got through since.
        self._gave_up = False
        self._status = "connected"
        self._closed = False
        self._local = threading.local()
        self._clients: list[flight.FlightClient] = []
        labels = P.validate_labels(labels)
        self._enqueue(
            _Job("action", f"opening run '{run_id}'",
                 (P.ACTION_OPEN_RUN, P.body({"protocol": P.PROTOCOL_VERSION, "run_id": run_id, "labels": labels}), None), 0)
        )
        self._thread = threading.Thread(target=self._run, name="lrid-recorder", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    # -- what the training job calls -------------------------------------------------------

    @property
    def status(self) -> str:
        """``"connected"`` when the last message reached the daemon, else why it is retrying."""
        with self._lock:
            return self._status

    @property
    def buffered_bytes(self) -> int:
        """Bytes of values waiting to be sent."""
        with self._lock:
            return self._used

    def record_weights(self, point: int, layer: LayerInfo, values) -> None:
        """Queues the layer's forward kernel at `point`, in `layer.weight_shape` (C order)."""
        self._snapshot(point, layer, "weight", 0, 0, values, copy=True)

    def record_activations(self, point: int, layer: LayerInfo, values, batch: int = 0) -> None:
        """Queues batch `batch` of the evaluation pass's outputs: `examples × activation_shape`
        values, examples first (the count of examples is read from the first axis)."""
        values = np.asarray(values)
        examples = values.shape[0] if values.ndim else 0
        self._snapshot(point, layer, "act", examples, batch, values, copy=True)

    def record_activity_change(self, point: int, layer: LayerInfo, per_example, batch: int = 0) -> None:
        """Queues batch `batch` of the per-example layer-wise activity changes (spec §1.4)."""
        per_example = np.asarray(per_example)
        self._snapshot(point, layer, "gradavg", per_example.size, batch, per_example, copy=True)

    def complete_point(self, point: int, step: int | None = None, diagnostics: Iterable = ()) -> None:
        """Queues the completion of `point` (after its snapshots): its rows become queryable.
        `diagnostics`: ``(layer_index, name, value)`` scalars stored beside the observables."""
        self._raise_reported()
        diags = []
        for d in diagnostics:
            layer_index, name, value = (d["layer_index"], d["name"], d["value"]) if isinstance(d, dict) else d
            why = None
            if not name:
                why = "the name is empty"
            elif len(name) > P.MAX_DIAGNOSTIC_NAME:
                why = f"the name has {len(name)} characters; at most {P.MAX_DIAGNOSTIC_NAME} are allowed"
            elif not np.isfinite(value):
                why = f"the value is {value}; it must be finite"
            if why:
                raise ValueError(f"diagnostic {name!r} of layer {layer_index} at point {point}: {why}")
            diags.append({"layer_index": int(layer_index), "name": str(name), "value": float(value)})
        msg = {"protocol": P.PROTOCOL_VERSION, "run_id": self.run_id, "point": int(point),
               "step": None if step is None else int(step)}
        if diags:
            msg["diagnostics"] = diags
        self._enqueue(_Job("action", f"completing point {point} of run '{self.run_id}'",
                           (P.ACTION_COMPLETE_POINT, P.body(msg), int(point)), 0))

    def flush(self, timeout: float | None = None) -> None:
        """Blocks until everything queued so far is acknowledged (or given up); raises the first
        error the daemon reported, if any."""
        done = threading.Event()
        self._enqueue(_Job("flush", "flush", done, 0))
        if not done.wait(timeout):
            raise TimeoutError(
                f"lrid: {len(self._jobs)} message(s) still unsent after {timeout} s ({self.status})"
            )
        self._raise_reported()

    def close(self, timeout: float | None = None) -> None:
        """Closes the run (points not completed are dropped by the daemon), sends everything
        queued and stops the sender; raises the first error reported, if any."""
        with self._lock:
            if self._closed:
                return
        self._enqueue(_Job("action", f"closing run '{self.run_id}'",
                           (P.ACTION_CLOSE_RUN, P.body({"protocol": P.PROTOCOL_VERSION, "run_id": self.run_id}), None), 0))
        try:
            self.flush(timeout)
        finally:
            with self._lock:
                self._closed = True
                self._jobs.append(_Job("stop", "stop", None, 0))
                self._lock.notify_all()
            _LIVE.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- queueing --------------------------------------------------------------------------

    def _snapshot(self, point, layer: LayerInfo, measure, examples, batch, values, copy):
        """Checks a snapshot against its layer and queues it (values copied unless `copy` is
        False: the caller hands over an array nobody else writes, or a `_Deferred`)."""
        self._raise_reported()
        if not isinstance(layer, LayerInfo):
            raise TypeError(f"layer must be a LayerInfo; got {type(layer).__name__}")
        what = f"the {measure} snapshot of layer {layer.index} ({layer.name}) at point {point}"
        expected = {"weight": layer.weight_count, "act": examples * layer.units, "gradavg": examples}[measure]
        if isinstance(values, _Deferred):
            nbytes = values.nbytes
        else:
            arr = np.asarray(values)
            if arr.dtype not in (np.float32, np.float64):
                arr = arr.astype(np.float32)
                copy = False
            if arr.size != expected:
                raise ValueError(f"{what}: {arr.size} values given, the shapes say {expected}")
            _check_finite(arr, what)
            arr = np.array(arr, copy=True, order="C") if copy else np.ascontiguousarray(arr)
            values = arr.reshape(-1)
            nbytes = values.nbytes
        header = {
            "protocol": P.PROTOCOL_VERSION,
            "run_id": self.run_id,
            "point": int(point),
            "layer": layer.to_wire(),
            "measure": measure,
            "examples": int(examples),
            "batch": int(batch),
        }
        self._enqueue(_Job("snapshot", what, (header, values, expected), nbytes))

    def _enqueue(self, job: _Job):
        with self._lock:
            if self._closed:
                raise RecorderClosed(f"the recorder of run '{self.run_id}' is closed")
            if job.nbytes > self.buffer_bytes:
                raise BufferFull(
                    f"{job.what}: {job.nbytes} bytes can never fit in the recording buffer of "
                    f"{self.buffer_bytes} bytes; raise buffer_bytes"
                )
            while self._used + job.nbytes > self.buffer_bytes:
                if self.when_full == "raise":
                    raise BufferFull(
                        f"the recording buffer is full: {job.what} needs {job.nbytes} more bytes "
                        f"({self._used} of {self.buffer_bytes} in use; lrid is {self._status}); "
                        "wait, skip this snapshot or raise buffer_bytes"
                    )
                self._lock.wait(0.1)
                if self._errors:
                    raise self._errors.pop(0)
            self._used += job.nbytes
            self._jobs.append(job)
            self._lock.notify_all()

    def _raise_reported(self):
        with self._lock:
            if self._errors:
                raise self._errors.pop(0)
            if self._fatal is not None:
                raise self._fatal

    def _at_exit(self):
        """At interpreter exit: send what is queued (the run stays open), saying what is lost."""
        with self._lock:
            if self._closed or not self._jobs:
                return
        try:
            self.flush(timeout=30)
        except Exception as e:  # noqa: BLE001 - at exit, say it and go
            log.error("lrid: run '%s': %s", self.run_id, e)

    # -- the sender thread -----------------------------------------------------------------

    def _run(self):
        # Snapshots go out `snapshots_in_flight` at a time (the daemon summarises one while the
        # next crosses the network); every other message waits for the snapshots before it, so
        # the daemon sees a point's snapshots before its completion.
        pool = ThreadPoolExecutor(self.snapshots_in_flight, thread_name_prefix="lrid-put")
        in_flight: set = set()
        while True:
            with self._lock:
                while not self._jobs:
                    self._lock.wait()
                job = self._jobs[0]
            if job.kind == "snapshot" and self._fatal is None:
                while len(in_flight) >= self.snapshots_in_flight:
                    in_flight = wait(in_flight, return_when=FIRST_COMPLETED).not_done
                with self._lock:
                    self._jobs.popleft()
                try:
                    in_flight.add(pool.submit(self._send_snapshot, job))
                except RuntimeError:
                    # The interpreter is exiting (its thread pools no longer take work): send
                    # here, one at a time.
                    self._send_snapshot(job)
                continue
            wait(in_flight)
            in_flight = set()
            if job.kind == "stop":
                with self._lock:
                    self._jobs.popleft()
                break
            if job.kind == "flush":
                job.payload.set()
            elif self._fatal is not None:
                pass  # the run was never opened: reported once, not once per message
            elif job.kind == "action" and job.payload[2] in self._failed_points:
                # A point one of whose snapshots was not stored stays incomplete (the daemon
                # would otherwise publish the point without that layer's rows).
                self._report(Refused(job.what, f"a snapshot of point {job.payload[2]} was not stored (reported before), so the point is not completed"))
            elif job.kind == "action":
                kind, body, _ = job.payload
                ok = self._deliver(job.what, lambda: self._action(kind, body))
                if not ok and kind == P.ACTION_OPEN_RUN:
                    with self._lock:
                        self._fatal = self._errors[-1] if self._errors else None
            with self._lock:
                self._jobs.popleft()
                self._used -= job.nbytes
                self._lock.notify_all()
        pool.shutdown()
        for client in self._clients:
            client.close()

    def _send_snapshot(self, job: _Job):
        try:
            self._deliver_snapshot(job)
        finally:
            with self._lock:
                self._used -= job.nbytes
                self._lock.notify_all()

    def _deliver_snapshot(self, job: _Job):
        header, values, expected = job.payload
        if isinstance(values, _Deferred):
            try:
                values = np.ascontiguousarray(values.resolve()).reshape(-1)
                if values.size != expected:
                    raise ValueError(f"{values.size} values, the shapes say {expected}")
                _check_finite(values, job.what)
            except Exception as e:  # noqa: BLE001 - reported, not raised in the sender
                self._report(e if isinstance(e, LridError) else Refused(job.what, str(e)))
                self._failed_points.add(header["point"])
                return
        if not self._deliver(job.what, lambda: self._put(header, values)):
            self._failed_points.add(header["point"])

    def _report(self, e: LridError):
        log.error("%s", e)
        with self._lock:
            self._errors.append(e)

    def _deliver(self, what: str, call: Callable[[], None]) -> bool:
        start = time.monotonic()
        backoff = self.initial_backoff
        attempts = 0
        # After a message was given up, the next ones get one attempt each until one gets
        # through: a daemon that stayed away for give_up_after does not cost it again per message.
        give_up_after = 0.0 if self._gave_up else self.give_up_after
        while True:
            attempts += 1
            try:
                call()
                with self._lock:
                    self._status = "connected"
                    self._gave_up = False
                return True
            except _TRANSIENT as e:
                self._drop_client()
                message = _message(e)
                if _untrusted(e):
                    self._report(Refused(what, f"{message}; {UNTRUSTED_HINT}"))
                    return False
                with self._lock:
                    self._status = f"retrying ({attempts} attempts): {message}"
                if time.monotonic() - start >= give_up_after:
                    with self._lock:
                        self._gave_up = True
                    self._report(Unreachable(
                        f"lrid at {self.server} is unreachable after {attempts} attempts: {message}; "
                        f"{what} was given up"))
                    return False
                log.warning("lrid at %s is unreachable (%s); %s waits %.1f s", self.server,
                            message, what, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            except (flight.FlightError, pa.ArrowException) as e:
                if attempts > 1 and _already_exists(e):
                    # A retry of something that did arrive the first time.
                    return True
                self._report(Refused(what, _message(e)))
                return False

    def _drop_client(self):
        """Forgets this thread's connection (after a transport error)."""
        client = getattr(self._local, "client", None)
        if client is not None:
            with self._lock:
                self._clients.remove(client)
            try:
                client.close()
            except Exception:  # noqa: BLE001 - a broken connection may not close cleanly
                pass
            self._local.client = None

    def _connection(self) -> flight.FlightClient:
        """This thread's connection (each sender thread has its own)."""
        client = getattr(self._local, "client", None)
        if client is None:
            kwargs = {"tls_root_certs": self._tls_root_certs} if self._tls_root_certs else {}
            client = self._local.client = flight.FlightClient(self._location, **kwargs)
            with self._lock:
                self._clients.append(client)
        return client

    def _action(self, kind: str, body: bytes):
        for _ in self._connection().do_action(flight.Action(kind, body), self._options):
            pass

    def _put(self, header: dict, values: np.ndarray):
        kind = pa.float32() if values.dtype == np.float32 else pa.float64()
        schema = pa.schema([pa.field(P.VALUE_COLUMN, kind, nullable=False)])
        descriptor = flight.FlightDescriptor.for_command(
            P.protobuf_any(P.SNAPSHOT_TYPE_URL, P.body(header))
        )
        writer, reader = self._connection().do_put(descriptor, schema, self._options)
        try:
            for start in range(0, max(values.size, 1), P.CHUNK_VALUES):
                part = values[start:start + P.CHUNK_VALUES]
                writer.write_batch(pa.record_batch([pa.array(part, type=kind)], schema=schema))
            writer.done_writing()
            ack = reader.read()
        finally:
            writer.close()
        if ack is None:
            raise flight.FlightUnavailableError("the daemon closed the stream without acknowledging")


def _check_finite(arr: np.ndarray, what: str):
    if arr.size and not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{what}: {bad} non-finite value(s) (NaN or infinite) of {arr.size}")


def _message(e: BaseException) -> str:
    """The daemon's message of a Flight error, without the gRPC decoration."""
    text = str(e)
    if "with message: " in text:
        text = text.split("with message: ", 1)[1]
    for marker in (". gRPC client debug context", ". Detail:", "\nDetail:", ". Client context"):
        text = text.split(marker)[0]
    return text.strip()
