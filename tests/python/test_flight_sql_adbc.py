"""`lrid serve` through a standard Flight SQL client: the ADBC Flight SQL driver (PyPI), as
pandas/polars/DuckDB users reach it. Statement queries, bound parameters, the metadata calls,
and an error that names the problem."""

import warnings

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pytest


def connect(addr):
    with warnings.catch_warnings():
        # Flight SQL has no transactions; the DB-API wrapper warns about autocommit.
        warnings.simplefilter("ignore")
        return flight_sql.connect(f"grpc://{addr}")


def test_statements_parameters_and_metadata(daemon):
    with connect(daemon) as conn:
        cur = conn.cursor()
        cur.execute("SELECT 1 AS one, 'x' AS s")
        assert cur.fetchall() == [(1, "x")]
        cur.execute("SELECT $1 + 1 AS two", parameters=(41,))
        assert cur.fetchall() == [(42,)]
        cur.execute("SELECT count(*) AS n FROM observables")
        assert cur.fetch_arrow_table().column("n").to_pylist() == [0]

        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        lrid = [c for c in objects if c["catalog_name"] == "lrid"][0]
        tables = {
            t["table_name"]
            for s in lrid["catalog_db_schemas"]
            for t in s["db_schema_tables"]
        }
        assert {"runs", "layers", "observables", "trajectories"} <= tables
        schema = conn.adbc_get_table_schema("observables")
        assert schema.names[:7] == [
            "run_id", "point", "step", "layer_index", "layer_name", "position", "model"
        ]
        assert len(schema.names) == 7 + 45
        assert "weightraw_median" in schema.names and "gradavgsq_id" in schema.names
        assert conn.adbc_get_info()["vendor_name"] == "lrid"


def test_a_bad_query_is_an_error_naming_the_problem(daemon):
    with connect(daemon) as conn:
        cur = conn.cursor()
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute("SELECT no_such_column FROM observables")
        assert "no_such_column" in str(e.value)
        # The daemon still answers.
        cur.execute("SELECT 2 AS two")
        assert cur.fetchall() == [(2,)]


def test_jdbc_style_and_numbered_placeholders_bind_by_position(daemon):
    import lrid
    import numpy as np

    layer = lrid.LayerInfo(0, "w", "early", (2, 2), (1,))
    with lrid.Recorder(f"http://{daemon}", "p/1", labels={"learning_rule": "sgdm", "batch_size": 32}) as rec:
        for point in range(4):
            rec.record_weights(point, layer, np.full((2, 2), point, np.float32))
            rec.complete_point(point, step=10 * point)
    with connect(daemon) as conn:
        cur = conn.cursor()
        # `?` placeholders (JDBC style), several types, re-executed with new values.
        query = ("SELECT point, weightraw_mean FROM observables o JOIN runs r ON o.run_id = r.run_id "
                 "WHERE o.run_id = ? AND point >= ? AND r.batch_size = ? AND weightraw_mean < ? "
                 "AND layer_name <> '?' ORDER BY point")
        cur.execute(query, parameters=("p/1", 1, 32, 2.5))
        assert cur.fetchall() == [(1, 1.0), (2, 2.0)]
        cur.execute(query, parameters=("p/1", 0, 32, 10.0))
        assert [p for p, _ in cur.fetchall()] == [0, 1, 2, 3]
        cur.execute(query, parameters=("nope", 0, 32, 10.0))
        assert cur.fetchall() == []
        # Numbered placeholders, one used twice, out of order.
        cur.execute("SELECT count(*) AS n FROM observables WHERE point BETWEEN $2 AND $1 AND run_id = $3 "
                    "AND run_id = $3", parameters=(2, 1, "p/1"))
        assert cur.fetchall() == [(2,)]
        # The parameter schema comes with the prepared statement (what JDBC drivers read).
        params = cur.adbc_prepare("SELECT point FROM observables WHERE run_id = ? AND point = ?")
        assert params.names == ["$1", "$2"]
        with pytest.raises(adbc_driver_manager.Error, match="mixes"):
            cur.execute("SELECT ? + $1", parameters=(1,))
