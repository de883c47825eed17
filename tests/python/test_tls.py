"""TLS on the Flight port with the standard clients: a CA and a server certificate made with
openssl, `lrid serve --tls-cert/--tls-key`, the Python client's Recorder over https://, ADBC
Flight SQL over grpc+tls:// (with `?` parameters), `lrid.connect`; clients without the CA are
refused, saying why."""

import subprocess
import time

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as dbapi
import numpy as np
import pyarrow.flight as flight
import pytest

import lrid

from conftest import stop_daemon


def make_pki(dir, name):
    """A CA and a certificate it signed for 127.0.0.1 and localhost: (ca, cert, key) paths."""
    ca_key, ca = dir / f"{name}-ca.key", dir / f"{name}-ca.pem"
    key, csr, cert = dir / f"{name}.key", dir / f"{name}.csr", dir / f"{name}.pem"
    ext = dir / f"{name}.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    run = lambda *args: subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", f"/CN=lrid test CA {name}")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=lrid test server")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext)
    return ca, cert, key


@pytest.fixture()
def tls_daemon(lrid_bin, tmp_path):
    ca, cert, key = make_pki(tmp_path, "good")
    proc = subprocess.Popen(
        [lrid_bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
         "--tls-cert", str(cert), "--tls-key", str(key)],
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("lrid serve listening on ") and "(TLS: https://" in line, line
    yield line.split()[4], ca, make_pki(tmp_path, "other")[0]
    stop_daemon(proc)


def record(server, ca_file, run_id, **options):
    layer = lrid.LayerInfo(0, "conv", "early", weight_shape=(3, 3, 2, 4), activation_shape=(5,))
    rec = lrid.Recorder(server, run_id, labels={"learning_rule": "adam"}, ca_file=ca_file,
                        **options)
    for p in range(3):
        w = np.linspace(-1, 1, 72, dtype=np.float32) * (p + 1)
        rec.record_weights(p, layer, w)
        rec.record_activations(p, layer, np.ones((4, 5), dtype=np.float32) * p)
        rec.record_activity_change(p, layer, np.full(4, 0.5, dtype=np.float32))
        rec.complete_point(p, step=p)
    rec.close()
    return w


def test_recorder_adbc_and_connect_over_tls(tls_daemon):
    addr, ca, _ = tls_daemon
    w = record(f"https://{addr}", str(ca), "tls/py")

    # ADBC Flight SQL over TLS, JDBC-style parameters, re-executed with new values.
    with dbapi.connect(f"grpc+tls://{addr}", db_kwargs={
        adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value: ca.read_text(),
    }, autocommit=True) as conn, conn.cursor() as cur:
        query = ("SELECT count(*) AS n, max(weightraw_norm) AS norm FROM observables "
                 "WHERE run_id = ? AND point >= ? AND model = 'ideal'")
        cur.execute(query, ("tls/py", 2))
        n, norm = cur.fetchone()
        assert n == 1
        assert norm == pytest.approx(float(np.sqrt(np.sum(w.astype(np.float64) ** 2))), rel=1e-6)
        cur.execute(query, ("tls/py", 0))
        assert cur.fetchone()[0] == 3

    # The Python client's own queries, the CA from the environment.
    with lrid.connect(f"https://{addr}", ca_file=str(ca)) as c:
        runs = c.runs().to_pylist()
    assert [(r["run_id"], r["status"]) for r in runs] == [("tls/py", "closed")]


def test_clients_without_the_ca_are_refused(tls_daemon, monkeypatch):
    addr, ca, other_ca = tls_daemon
    monkeypatch.delenv("LRID_CA_FILE", raising=False)
    # ADBC trusting another CA.
    with pytest.raises(Exception) as e:
        with dbapi.connect(f"grpc+tls://{addr}", db_kwargs={
            adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value: other_ca.read_text(),
        }, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert "certificate" in str(e.value).lower(), e.value
    # pyarrow Flight with the system's roots only.
    client = flight.FlightClient(f"grpc+tls://{addr}")
    with pytest.raises(flight.FlightError) as e:
        list(client.do_action(flight.Action("lrid.noop", b"")))
    assert "certificate" in str(e.value).lower(), e.value
    # The Recorder: refused at once (not retried for give_up_after), saying what to give.
    started = time.monotonic()
    with pytest.raises(lrid.LridError) as e:
        record(f"https://{addr}", str(other_ca), "tls/refused", give_up_after=60)
    assert "not trusted" in str(e.value) and "ca_file" in str(e.value), e.value
    assert time.monotonic() - started < 20
    # A CA file that is not one, named.
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        lrid.Recorder(f"https://{addr}", "tls/x", ca_file=__file__)
    # Nothing of theirs reached the store.
    with lrid.connect(f"https://{addr}", ca_file=str(ca)) as c:
        assert c.sql("SELECT count(*) AS n FROM runs").column("n").to_pylist() == [0]


def test_addresses_map_to_flight_locations_and_ca_files_are_checked(tmp_path, monkeypatch):
    from lrid.recorder import flight_location, tls_root_certs

    assert flight_location("http://h:1") == "grpc+tcp://h:1"
    assert flight_location("h:1") == "grpc+tcp://h:1"
    assert flight_location("https://h:1/") == "grpc+tls://h:1"
    assert flight_location("grpc+tls://h:1") == "grpc+tls://h:1"
    with pytest.raises(ValueError, match="https://host:port"):
        flight_location("ftp://h:1")
    monkeypatch.delenv("LRID_CA_FILE", raising=False)
    # Plain HTTP/2 never reads a CA file; TLS without one trusts the system's roots.
    assert tls_root_certs("grpc+tcp://h:1", tmp_path / "missing.pem") is None
    assert tls_root_certs("grpc+tls://h:1") is None
    with pytest.raises(ValueError, match="cannot read the CA file"):
        tls_root_certs("grpc+tls://h:1", tmp_path / "missing.pem")
    ca, _, _ = make_pki(tmp_path, "env")
    monkeypatch.setenv("LRID_CA_FILE", str(ca))
    assert tls_root_certs("grpc+tls://h:1") == ca.read_bytes()
