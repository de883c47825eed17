"""The store in S3 for real: moto's S3 server on 127.0.0.1, two writing daemons under one bucket
prefix (each under node=<id>/), a read-only daemon that answers SQL over both and sees new
files without a restart; a writer SIGKILLed mid-run and restarted (every acknowledged point
exactly once); a bucket that refuses writes (it does not exist yet): a clear error, nothing
lost, the write-ahead log keeps the rows until the bucket accepts them. The layout is read back
with boto3 + pyarrow alone, as a user without lrid would."""

import io
import json
import os
import socket
import subprocess
import time

import adbc_driver_flightsql.dbapi as dbapi
import boto3
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

import lrid

from conftest import sql, stop_daemon

BUCKET = "lrid-corpus"
PREFIX = "study"
LAYERS = 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(tmp_path, env=None):
    """`moto_server` on a free loopback port: (process, endpoint)."""
    port = free_port()
    log = open(tmp_path / f"moto-{port}.log", "w")
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture()
def s3(tmp_path):
    """A moto S3 server on a free loopback port with one bucket: (endpoint, boto3 client)."""
    proc, endpoint = start_moto(tmp_path)
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
    deadline = time.time() + 30
    while True:
        try:
            client.list_buckets()
            break
        except Exception:
            assert time.time() < deadline, "moto_server did not answer"
            time.sleep(0.2)
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    proc.terminate()
    proc.wait(timeout=30)


def s3_env(endpoint):
    env = dict(os.environ)
    env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
               AWS_ENDPOINT=endpoint, AWS_ALLOW_HTTP="true")
    return env


def serve(lrid_bin, tmp_path, name, endpoint, *args, checkpoint_ms=200):
    """`lrid serve` with its files in the bucket: (process, address, first line, log path)."""
    config = tmp_path / f"{name}.toml"
    config.write_text(f"[server]\ncheckpoint_interval_ms = {checkpoint_ms}\n")
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen(
        [lrid_bin, "serve", "--config", str(config), "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / name), *args],
        stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=s3_env(endpoint))
    line = proc.stdout.readline()
    assert line.startswith("lrid serve listening on "), log.read_text()
    return proc, line.split()[4], line, log


def record(server, run_id, points, rule="sgdm", close=True):
    """Records `points` of a run (two layers); waits for every acknowledgement."""
    rec = lrid.Recorder(server, run_id, labels={"learning_rule": rule, "architecture": "knet4"})
    for p in points:
        for i in range(LAYERS):
            layer = lrid.LayerInfo(i, f"conv{i}", "early", weight_shape=(3, 3, 2, 4),
                                   activation_shape=(5,))
            rec.record_weights(p, layer, np.linspace(-1, 1, 72, dtype=np.float32) * (p + i + 1))
            rec.record_activations(p, layer, np.ones((4, 5), dtype=np.float32) * p)
            rec.record_activity_change(p, layer, np.full(4, 0.5, dtype=np.float32))
        rec.complete_point(p, step=10 * p)
    rec.flush(timeout=60)
    if close:
        rec.close(timeout=60)


def counts(lrid_bin, server):
    """{(run, point, layer): rows} of `observables`."""
    rows = sql(lrid_bin, server, "SELECT run_id, point, layer_index, count(*) AS n "
               "FROM observables GROUP BY run_id, point, layer_index")
    return {(r["run_id"], r["point"], r["layer_index"]): r["n"] for r in rows}


def put_analysis(server, name):
    """Stores a one-row analysis named `name` (the Flight action lrid.put_analysis), its
    columns those of the `analyses` table (read from the daemon)."""
    with dbapi.connect(f"grpc://{server}") as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM analyses")
        schema = cur.fetch_arrow_table().schema
    values = {pa.string(): "x", pa.uint32(): 1, pa.uint64(): 1, pa.float64(): 0.5}
    row = {}
    for f in schema:
        if f.name == "analysis":
            row[f.name] = pa.array([name], f.type)
        elif pa.types.is_timestamp(f.type):
            row[f.name] = pa.array([0], f.type)
        else:
            row[f.name] = pa.array([values[f.type]], f.type)
    table = pa.table(row, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    client = flight.connect(f"grpc://{server}")
    out = list(client.do_action(flight.Action("lrid.put_analysis", sink.getvalue())))
    assert json.loads(out[0].body.to_pybytes()) == {"rows": 1}


def wait_for(what, check, timeout=30):
    deadline = time.time() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def keys(client, prefix):
    out = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in out.get("Contents", []))


def test_two_writers_one_read_only_daemon_and_a_layout_any_tool_reads(lrid_bin, tmp_path, s3):
    endpoint, client = s3
    url = f"s3://{BUCKET}/{PREFIX}"
    a, a_addr, a_line, _ = serve(lrid_bin, tmp_path, "a", endpoint, "--store", url, "--node-id", "a")
    b, b_addr, _, _ = serve(lrid_bin, tmp_path, "b", endpoint, "--store", url, "--node-id", "b")
    assert f"files in {url}/node=a" in a_line, a_line
    record(a_addr, "run-a1", range(3))
    record(b_addr, "run-b1", range(3), rule="adam")
    # Each writer's files land under its own prefix once checkpointed.
    for node in "ab":
        wait_for(f"node {node}'s manifest", lambda: f"{PREFIX}/node={node}/manifest.json"
                 in keys(client, f"{PREFIX}/node={node}/"))
    wait_for("both runs' rows in the bucket", lambda: all(
        any(k.startswith(f"{PREFIX}/node={n}/observables/") for k in keys(client, f"{PREFIX}/node={n}/"))
        for n in "ab"))

    ro, ro_addr, ro_line, ro_log = serve(lrid_bin, tmp_path, "ro", endpoint, "--store", url,
                                         "--read-only")
    assert "read-only" in ro_line, ro_line
    try:
        want = {**counts(lrid_bin, a_addr), **counts(lrid_bin, b_addr)}
        assert len(want) == 2 * 3 * LAYERS and set(want.values()) == {1}
        assert wait_for("both nodes in the read-only daemon",
                        lambda: counts(lrid_bin, ro_addr) == want)
        # The same values as the writers', the runs and layers of both nodes.
        query = ("SELECT run_id, point, layer_index, weightraw_norm FROM observables "
                 "ORDER BY run_id, point, layer_index")
        assert sql(lrid_bin, ro_addr, query) == sql(lrid_bin, a_addr, query) + sql(lrid_bin, b_addr, query)
        runs = sql(lrid_bin, ro_addr, "SELECT run_id, learning_rule, status FROM runs ORDER BY run_id")
        assert runs == [{"run_id": "run-a1", "learning_rule": "sgdm", "status": "closed"},
                        {"run_id": "run-b1", "learning_rule": "adam", "status": "closed"}]
        layers = sql(lrid_bin, ro_addr, "SELECT count(*) AS n FROM layers")
        assert layers == [{"n": 2 * LAYERS}]

        # A new run on a writer appears in the read-only daemon without a restart.
        record(a_addr, "run-a2", range(2))
        wait_for("run-a2 in the read-only daemon", lambda: sum(
            1 for k in counts(lrid_bin, ro_addr) if k[0] == "run-a2") == 2 * LAYERS)

        # An analysis stored on a writer (in its node's folder) is a row of the read-only
        # daemon's `analyses` table too.
        put_analysis(a_addr, "study-a")
        assert any(k.startswith(f"{PREFIX}/node=a/analyses/") for k in keys(client, f"{PREFIX}/node=a/"))
        assert sql(lrid_bin, ro_addr, "SELECT analysis FROM analyses") == [{"analysis": "study-a"}]

        # The read-only daemon takes no ingest, and says so.
        with pytest.raises(Exception, match="read-only"):
            record(ro_addr, "run-ro", range(1))
    finally:
        stop_daemon(ro)

    # The layout without lrid: each node's manifest names its Parquet files; pyarrow reads them.
    stop_daemon(a)
    stop_daemon(b)
    total = 0
    for node in "ab":
        base = f"{PREFIX}/node={node}"
        manifest = json.loads(client.get_object(Bucket=BUCKET, Key=f"{base}/manifest.json")["Body"].read())
        for f in manifest["observables"]:
            body = client.get_object(Bucket=BUCKET, Key=f"{base}/observables/{f}")["Body"].read()
            total += pq.read_table(io.BytesIO(body)).num_rows
    assert total == (3 + 2 + 3) * LAYERS
    # The write-ahead log stayed on local disk; no Parquet file there.
    assert not list((tmp_path / "a").glob("observables/*.parquet"))
    assert list((tmp_path / "a" / "wal").iterdir())


def test_a_writer_killed_mid_run_keeps_every_acknowledged_point_exactly_once(lrid_bin, tmp_path, s3):
    endpoint, client = s3
    url = f"s3://{BUCKET}/{PREFIX}"
    a, a_addr, _, _ = serve(lrid_bin, tmp_path, "a", endpoint, "--store", url, "--node-id", "a")
    record(a_addr, "run-k", range(3), close=False)
    # Points 0-2 reach the bucket; points 3-5 are acknowledged (in the log) when the daemon dies.
    wait_for("the first points in the bucket", lambda: any(
        "/observables/" in k for k in keys(client, f"{PREFIX}/node=a/")))
    record(a_addr, "run-k", range(3, 6), close=False)
    a.kill()
    a.wait(timeout=30)
    # As if it had died inside a checkpoint, after its files and before its manifest: files
    # under the names the next checkpoint would take, named by no manifest.
    base = f"{PREFIX}/node=a"
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=f"{base}/manifest.json")["Body"].read())
    seq = manifest["next_seq"]
    stray = [f"{base}/observables/part-{seq:08}.parquet", f"{base}/runs/runs-{seq:08}.parquet"]
    for key in stray:
        client.put_object(Bucket=BUCKET, Key=key, Body=b"left by a checkpoint that died")

    # Restarted on the same data folder (its node id is kept there): the log replays.
    a, a_addr, _, _ = serve(lrid_bin, tmp_path, "a", endpoint, "--store", url)
    try:
        got = counts(lrid_bin, a_addr)
        assert got == {("run-k", p, i): 1 for p in range(6) for i in range(LAYERS)}
    finally:
        stop_daemon(a)  # a clean stop checkpoints what is left into the bucket
    # The new files were numbered after the stray ones, which went once the manifest was
    # replaced.
    left = keys(client, f"{base}/")
    assert not set(stray) & set(left), left
    ro, ro_addr, _, _ = serve(lrid_bin, tmp_path, "ro", endpoint, "--store", url, "--read-only")
    try:
        assert counts(lrid_bin, ro_addr) == {("run-k", p, i): 1 for p in range(6) for i in range(LAYERS)}
    finally:
        stop_daemon(ro)


def test_a_bucket_that_refuses_writes_loses_nothing(lrid_bin, tmp_path, s3):
    endpoint, client = s3
    url = "s3://lrid-later/corpus"  # not created yet: every write is refused
    a, a_addr, _, a_log = serve(lrid_bin, tmp_path, "a", endpoint, "--store", url, "--node-id", "a")
    record(a_addr, "run-r", range(3))
    # The checkpoint fails, saying where and why; the rows stay queryable from memory.
    wait_for("the refused checkpoint in the log",
             lambda: "checkpoint failed" in a_log.read_text() and "lrid-later" in a_log.read_text())
    assert "s3://lrid-later/corpus/node=a/" in a_log.read_text()
    assert "the bucket does not exist" in a_log.read_text() and "NoSuchBucket" in a_log.read_text()
    want = {("run-r", p, i): 1 for p in range(3) for i in range(LAYERS)}
    assert counts(lrid_bin, a_addr) == want
    # Killed while the bucket still refuses: the write-ahead log has every acknowledged row.
    a.kill()
    a.wait(timeout=30)
    a, a_addr, _, a_log = serve(lrid_bin, tmp_path, "a", endpoint, "--store", url)
    try:
        assert counts(lrid_bin, a_addr) == want
        # Once the bucket accepts writes, the next checkpoint puts the rows there.
        client.create_bucket(Bucket="lrid-later")
        wait_for("the rows in the bucket", lambda: "corpus/node=a/manifest.json" in [
            o["Key"] for o in client.list_objects_v2(Bucket="lrid-later").get("Contents", [])])
    finally:
        stop_daemon(a)
    ro, ro_addr, _, _ = serve(lrid_bin, tmp_path, "ro", endpoint, "--store", url, "--read-only")
    try:
        assert counts(lrid_bin, ro_addr) == want
    finally:
        stop_daemon(ro)


def test_bad_object_store_settings_are_clear_errors(lrid_bin, tmp_path, s3):
    endpoint, _ = s3

    def refused(*args, data="bad", at=endpoint):
        out = subprocess.run([lrid_bin, "serve", "--listen", "127.0.0.1:0", "--data-dir",
                              str(tmp_path / data), *args],
                             capture_output=True, text=True, env=s3_env(at), timeout=60)
        assert out.returncode != 0
        return out.stderr

    # A server that checks credentials (moto with authentication on) refuses ours: the daemon
    # does not start, and says why in one line.
    proc, checked = start_moto(tmp_path, {"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", int(checked.rsplit(":", 1)[1])), 1).close()
                break
            except OSError:
                assert time.time() < deadline, "moto_server did not answer"
                time.sleep(0.2)
        err = refused("--store", f"s3://{BUCKET}/x", "--node-id", "c", data="creds", at=checked)
        assert "the credentials are refused" in err and "InvalidAccessKeyId" in err, err
        assert "<?xml" not in err, err
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    assert "only s3:// URLs" in refused("--store", "gs://bucket/x")
    assert "node id" in refused("--store", f"s3://{BUCKET}/x", "--node-id", "a/b")
    # A data folder belongs to one node: its log is that node's.
    a, _, _, _ = serve(lrid_bin, tmp_path, "owned", endpoint, "--store", f"s3://{BUCKET}/x",
                       "--node-id", "n1")
    stop_daemon(a)
    err = refused("--store", f"s3://{BUCKET}/x", "--node-id", "n2", data="owned")
    assert "belongs to node \"n1\"" in err, err
    err = refused(data="owned")
    assert "belongs to node" in err and "object_store" in err, err


def test_two_daemons_given_one_node_id_never_overwrite_each_other(lrid_bin, tmp_path, s3):
    endpoint, client = s3
    url = f"s3://{BUCKET}/{PREFIX}"
    a, a_addr, _, _ = serve(lrid_bin, tmp_path, "a", endpoint, "--store", url, "--node-id", "same")
    # The second daemon reads the node's manifest before the first has written one.
    b, b_addr, _, b_log = serve(lrid_bin, tmp_path, "b", endpoint, "--store", url, "--node-id", "same")
    try:
        record(a_addr, "run-first", range(2))
        wait_for("the first daemon's manifest",
                 lambda: f"{PREFIX}/node=same/manifest.json" in keys(client, f"{PREFIX}/node=same/"))
        before = {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read()
                  for k in keys(client, f"{PREFIX}/node=same/")}
        record(b_addr, "run-second", range(2))
        wait_for("the second daemon's refusal", lambda: "give each daemon its own" in b_log.read_text())
        # Nothing of the first daemon's was replaced; the second keeps its rows (log, memory).
        after = {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in before}
        assert after == before
        assert {k[0] for k in counts(lrid_bin, b_addr)} == {"run-second"}
    finally:
        a.terminate()
        a.wait(timeout=30)
        b.kill()
        b.wait(timeout=30)
    ro, ro_addr, _, _ = serve(lrid_bin, tmp_path, "ro", endpoint, "--store", url, "--read-only")
    try:
        assert {k[0] for k in counts(lrid_bin, ro_addr)} == {"run-first"}
    finally:
        stop_daemon(ro)
