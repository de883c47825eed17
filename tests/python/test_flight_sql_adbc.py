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
