"""Snapshots recorded by a Flight client other than lrid's SDK: pyarrow's (Arrow C++) Flight
client speaks the ingest protocol of `sdk/protocol` — `DoAction` for the run and the point,
`DoPut` of record batches for the values — and the daemon stores the statistics numpy gives
for the same tensor. Also a refused snapshot, with the reason."""

import json
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

SNAPSHOT_TYPE_URL = "type.lrid.dev/lrid.v1.Snapshot"


def protobuf_any(type_url: str, value: bytes) -> bytes:
    """A protobuf `Any` (field 1: type_url, field 2: value), encoded by hand."""

    def field(number: int, payload: bytes) -> bytes:
        n, out = len(payload), bytearray([number << 3 | 2])
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out) + payload

    return field(1, type_url.encode()) + field(2, value)


def action(client, kind: str, body: dict):
    return list(client.do_action(flight.Action(kind, json.dumps(body).encode())))


def put_weights(client, run_id: str, point: int, values: np.ndarray, batches: int):
    header = {
        "protocol": 1,
        "run_id": run_id,
        "point": point,
        "layer": {
            "index": 0,
            "name": "conv1",
            "position": "early",
            "weight_shape": list(values.shape),
            "activation_shape": [4],
        },
        "measure": "weight",
        "examples": 0,
        "batch": 0,
    }
    descriptor = flight.FlightDescriptor.for_command(
        protobuf_any(SNAPSHOT_TYPE_URL, json.dumps(header).encode())
    )
    schema = pa.schema([pa.field("value", pa.float32(), nullable=False)])
    writer, reader = client.do_put(descriptor, schema)
    for part in np.array_split(values.ravel(), batches):
        writer.write_batch(pa.record_batch([pa.array(part, pa.float32())], schema=schema))
    writer.done_writing()
    ack = reader.read()
    writer.close()
    return ack


def test_a_pyarrow_client_records_snapshots(daemon, lrid_bin):
    client = flight.connect(f"grpc://{daemon}")
    action(client, "lrid.open_run", {"protocol": 1, "run_id": "py", "labels": {}})
    rng = np.random.default_rng(7)
    weights = rng.normal(0.1, 0.5, size=(64, 32, 3, 3)).astype(np.float32)
    ack = put_weights(client, "py", 0, weights, batches=5)
    assert ack is not None
    action(client, "lrid.complete_point", {"protocol": 1, "run_id": "py", "point": 0})

    # A snapshot with a NaN is refused with the reason; the stored row is unchanged.
    bad = weights.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(pa.ArrowInvalid, match="1 non-finite value"):
        put_weights(client, "py", 1, bad, batches=2)

    out = subprocess.run(
        [lrid_bin, "sql", "--server", f"http://{daemon}", "--format", "json",
         "SELECT point, weightraw_mean AS mean, weightraw_norm AS norm FROM observables "
         "WHERE run_id = 'py'"],
        check=True, capture_output=True, text=True,
    )
    rows = json.loads(out.stdout)
    assert len(rows) == 1 and rows[0]["point"] == 0
    w = weights.astype(np.float64).ravel()
    assert rows[0]["mean"] == pytest.approx(w.mean(), rel=1e-12)
    assert rows[0]["norm"] == pytest.approx(np.sqrt((w * w).sum()), rel=1e-12)
