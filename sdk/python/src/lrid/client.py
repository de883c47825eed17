"""`connect`: SQL over what `lrid serve` stores, as Arrow tables.

In: a daemon's address (and its token). Out: `pyarrow.Table`s, through the daemon's Flight SQL
endpoint with the ADBC Flight SQL driver (the same path as any ADBC/JDBC client). Tables convert
with ``.to_pandas()`` when pandas is installed.
"""

from __future__ import annotations

import os

import pyarrow as pa

from .recorder import LridError, flight_location, tls_root_certs

__all__ = ["connect", "Client"]


def _literal(value) -> str:
    """A SQL literal of a string or a number (strings quoted, quotes doubled)."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"not a SQL literal: {value!r}")
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


class Client:
    """A connection to `lrid serve` for queries. Use `connect()`."""

    def __init__(self, server: str, token: str | None = None, ca_file=None):
        try:
            import adbc_driver_flightsql
            import adbc_driver_flightsql.dbapi as dbapi
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise ImportError("lrid.connect needs adbc-driver-flightsql (pip install adbc-driver-flightsql)") from e
        self.server = server
        kwargs = {}
        if token:
            kwargs[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = f"Bearer {token}"
        location = flight_location(server)
        pem = tls_root_certs(location, ca_file)
        if pem:
            kwargs[adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value] = pem.decode()
        self._conn = dbapi.connect(location, db_kwargs=kwargs, autocommit=True)

    def sql(self, query: str, parameters=None) -> pa.Table:
        """Runs one SQL statement; returns its rows. `parameters` bind `$1, $2, …`."""
        with self._conn.cursor() as cur:
            try:
                if parameters is None:
                    cur.execute(query)
                else:
                    cur.execute(query, parameters)
                return cur.fetch_arrow_table()
            except Exception as e:
                raise LridError(f"lrid could not run the query: {_adbc_message(e)}") from e

    def runs(self) -> pa.Table:
        """The `runs` table (labels, status, open and close times), newest first."""
        return self.sql("SELECT * FROM runs ORDER BY opened_at DESC")

    def trajectories(
        self,
        run_id: str,
        layer: str | int | None = None,
        statistic: str | list[str] | None = None,
        model: str = "ideal",
    ) -> pa.Table:
        """One run's observables in long form: run_id, layer_index, layer_name, position, model,
        point, step, statistic, value — ordered by layer, statistic and point. `layer`: a name or
        an index; `statistic`: one name or several (e.g. ``"weightraw_norm"``)."""
        where = [f"run_id = {_literal(run_id)}", f"model = {_literal(model)}"]
        if isinstance(layer, int):
            where.append(f"layer_index = {layer}")
        elif layer is not None:
            where.append(f"layer_name = {_literal(layer)}")
        if statistic is not None:
            names = [statistic] if isinstance(statistic, str) else list(statistic)
            where.append(f"statistic IN ({', '.join(_literal(s) for s in names)})")
        return self.sql(
            "SELECT run_id, layer_index, layer_name, position, model, point, step, statistic, value "
            f"FROM trajectories WHERE {' AND '.join(where)} ORDER BY layer_index, statistic, point"
        )

    def identify(self, run_id: str, identifier: str | None = None) -> dict | None:
        """What live identification says of the run now: the latest run-level row of the
        `identifications` table (of `identifier`, or of any identifier), as a dict with
        ``identifier``, ``point``, ``points_seen``, ``predicted``, ``probability``,
        ``probabilities`` (rule → probability), ``status`` and ``note``; None before the first."""
        where = f"run_id = {_literal(run_id)} AND layer_index IS NULL"
        if identifier is not None:
            where += f" AND identifier = {_literal(identifier)}"
        rows = self.sql(
            "SELECT identifier, point, points_seen, predicted, probability, probabilities, status, note "
            f"FROM identification_rows WHERE {where} ORDER BY point DESC, identified_at DESC LIMIT 1"
        ).to_pylist()
        if not rows:
            return None
        row = rows[0]
        row["probabilities"] = dict(row["probabilities"] or [])
        return row

    def close(self):
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def connect(server: str | None = None, token: str | None = None, ca_file=None) -> Client:
    """A `Client` of `lrid serve` at `server` (``http://host:port``, or ``https://host:port``
    for TLS; default ``$LRID_SERVER`` or ``http://127.0.0.1:50051``), with its bearer `token`
    (default ``$LRID_TOKEN``); `ca_file`: the CA (PEM) that signed an https daemon's
    certificate (default ``$LRID_CA_FILE``, else the system's roots)."""
    server = server or os.environ.get("LRID_SERVER", "http://127.0.0.1:50051")
    token = token if token is not None else os.environ.get("LRID_TOKEN") or None
    return Client(server, token, ca_file)


def _adbc_message(e: Exception) -> str:
    text = str(e)
    for marker in ("INVALID_ARGUMENT: ", "INTERNAL: ", "UNAVAILABLE: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.split(". Vendor code")[0].strip()
