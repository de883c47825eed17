"""`lrid dataset export` against the classifiers' dataset built independently, with pandas and
numpy, from the daemon's Parquet files (spec §1.5, §1.6, §2).

A small corpus is recorded through the ingest protocol with pyarrow's Flight client (not lrid's
SDK): 3 rules × 3 closed runs of 3 or 4 layers × 21 points, all three measures, with labels
(one run unseeded: NULL seeds), under two measurement models (`ideal` and a subsampled one, so
that `--model ideal` has something to select from). Beside it, runs the dataset must not hold:

- a closed run with only 20 points (left out with a warning naming it),
- a closed run without a `learning_rule` label (left out with a warning),
- a closed run whose activity change is missing at one point of one layer, so that three
  admissible statistics are NULL there (left out whole, with a warning),
- a run left open (not in the dataset; it never reaches the classifier_examples view).

The corpus is recorded in two halves with one of the daemon's periodic checkpoints between them,
so that the export, run against the live daemon, reads rows both from Parquet files and from the
daemon's memory. The daemon is then stopped with SIGTERM, which checkpoints everything to
Parquet, and the expected dataset is built from the `observables/*.parquet` and
`runs/*.parquet` files that `manifest.json` names: closed runs with exactly the points 0..20, every
admissible value finite, a rule label; one row per (run_id, model, layer_index) in that order;
metadata, `label` = index of the rule among the sorted rule names, `grp_id0..2` = one-hot of
early/middle/deep, then `<statistic>_t<point>` for the 24 admissible statistics in the reference
order. The exported file must equal it: same column names in the same order, same rows in the
same order, metadata equal, features equal to 1e-12 relative (in practice exactly: both come from
the same Float64 values).

The comparison is checked against itself: a feature order, time order, label or row order that
differs from the reference (mutations of the expected table) must be reported as a difference.
"""

import concurrent.futures
import json
import pathlib
import re
import signal
import subprocess
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from test_pyarrow_flight_ingest import action, protobuf_any

SNAPSHOT_TYPE_URL = "type.lrid.dev/lrid.v1.Snapshot"
POINTS = 21

ADMISSIBLE = [
    "weightabs_mean", "weightabs_median", "weightabs_norm", "weightabs_thirdquartile",
    "weightabs_var", "weightraw_mean", "weightraw_median", "weightraw_norm",
    "weightraw_thirdquartile", "weightraw_var", "weightsq_mean", "weightsq_median",
    "weightsq_thirdquartile",
    "actabs_mean", "actabs_median", "actabs_norm", "actabs_thirdquartile", "actraw_mean",
    "actraw_median", "actraw_norm", "actraw_thirdquartile",
    "gradavgabs_id", "gradavgraw_id", "gradavgsq_id",
]
METADATA = [
    "run_id", "layer_index", "layer_name", "position", "model", "learning_rule", "label",
    "architecture", "task", "batch_size", "model_seed", "data_seed",
]
GROUPS = ["grp_id0", "grp_id1", "grp_id2"]
FEATURES = [f"{s}_t{t}" for s in ADMISSIBLE for t in range(POINTS)]
POSITIONS = ["early", "middle", "deep"]

# Layers: (name, position, weight_shape HWIO / IO, activation_shape of one example).
ARCHITECTURES = {
    "knet4": [
        ("conv1", "early", [3, 3, 2, 4], [5, 5, 4]),
        ("conv2", "middle", [3, 3, 4, 6], [3, 3, 6]),
        ("fc", "deep", [54, 8], [8]),
    ],
    "resnet18-v1": [
        ("stem/conv", "early", [3, 3, 3, 5], [4, 4, 5]),
        ("block1/conv", "middle", [3, 3, 5, 5], [4, 4, 5]),
        ("block2/conv", "deep", [3, 3, 5, 7], [2, 2, 7]),
        ("logits", "deep", [28, 6], [6]),
    ],
}
EXAMPLES = 3

# The nine runs of the dataset: id → labels. Ids are chosen so that their sorted order is none
# of the orders they are recorded in (nor rule order).
CORPUS = {
    "corpus/knet4-sgdm-0": dict(learning_rule="sgdm", architecture="knet4", task="shapes",
                                batch_size=32, model_seed=0, data_seed=1),
    "corpus/Knet4-adam-1": dict(learning_rule="adam", architecture="knet4", task="shapes",
                                batch_size=64, model_seed=1, data_seed=0),
    "corpus/knet4-feedback-2": dict(learning_rule="feedback", architecture="knet4",
                                    task="audio", batch_size=256, model_seed=2, data_seed=2),
    "corpus/resnet-sgdm-3": dict(learning_rule="sgdm", architecture="resnet18-v1",
                                 task="audio", batch_size=64, model_seed=None, data_seed=None,
                                 hyperparameters={"drawn_model_seed": 91, "drawn_data_seed": 17}),
    "corpus/resnet-adam-4": dict(learning_rule="adam", architecture="resnet18-v1",
                                 task="shapes", batch_size=32, model_seed=4, data_seed=5),
    "corpus/a-feedback-5": dict(learning_rule="feedback", architecture="resnet18-v1",
                                task="shapes", batch_size=32, model_seed=5, data_seed=4,
                                hyperparameters={"lr": 0.01}),
    "corpus/z-sgdm-6": dict(learning_rule="sgdm", architecture="knet4", task="simclr",
                            batch_size=256, model_seed=6, data_seed=6),
    "corpus/m-adam-7": dict(learning_rule="adam", architecture="knet4", task="audio",
                            batch_size=32, model_seed=7, data_seed=8),
    "corpus/knet4-feedback-8": dict(learning_rule="feedback", architecture="resnet18-v1",
                                    task="simclr", batch_size=64, model_seed=8, data_seed=9),
}
SHORT = "corpus/knet4-sgdm-short"          # closed, 20 points
NO_RULE = "corpus/knet4-unlabelled"        # closed, 21 points, no learning_rule
NULL_GRAD = "corpus/knet4-adam-nullgrad"   # closed, 21 points, a missing gradavg snapshot
OPEN = "corpus/knet4-adam-open"            # 21 points, never closed
LEFT_OUT = {
    SHORT: dict(learning_rule="sgdm", architecture="knet4", task="shapes", batch_size=32,
                model_seed=10, data_seed=10),
    NO_RULE: dict(architecture="knet4", task="shapes", batch_size=32, model_seed=11,
                  data_seed=11),
    NULL_GRAD: dict(learning_rule="adam", architecture="knet4", task="audio", batch_size=64,
                    model_seed=12, data_seed=12),
    OPEN: dict(learning_rule="adam", architecture="knet4", task="shapes", batch_size=32,
               model_seed=13, data_seed=13),
}
SHUFFLED_POINTS = "corpus/resnet-adam-4"   # its points are recorded in a random order
REVERSED_LAYERS = "corpus/z-sgdm-6"        # its layers are recorded last first

CONFIG = """
[store]
# Throwaway data: no fsync per snapshot (the test's speed); SIGTERM still checkpoints.
sync = false

[[store.models]]
name = "ideal"

[[store.models]]
name = "half"
unit_fraction = 0.5
seed = 3
"""


# --- recording with pyarrow Flight -----------------------------------------------------------


SCHEMA = pa.schema([pa.field("value", pa.float32(), nullable=False)])


def put(client, run_id, point, index, layer, measure, values, examples=0, batch=0):
    name, position, wshape, ashape = layer
    header = {
        "protocol": 1,
        "run_id": run_id,
        "point": point,
        "layer": {
            "index": index,
            "name": name,
            "position": position,
            "weight_shape": wshape,
            "activation_shape": ashape,
        },
        "measure": measure,
        "examples": examples,
        "batch": batch,
    }
    descriptor = flight.FlightDescriptor.for_command(
        protobuf_any(SNAPSHOT_TYPE_URL, json.dumps(header).encode())
    )
    writer, reader = client.do_put(descriptor, SCHEMA)
    writer.write_batch(pa.record_batch([pa.array(values.ravel(), pa.float32())], schema=SCHEMA))
    writer.done_writing()
    ack = reader.read()
    writer.close()
    assert ack is not None


def record_run(address, run_id, labels, points, close=True, skip_gradavg=None):
    """Records one run; returns {(point, layer_index): float64 weights sent} for spot checks."""
    client = flight.connect(f"grpc://{address}")
    seed = sum(run_id.encode())
    rng = np.random.default_rng(seed)
    layers = ARCHITECTURES[labels["architecture"]]
    action(client, "lrid.open_run", {"protocol": 1, "run_id": run_id, "labels": labels})
    order = list(range(len(layers)))
    if run_id == REVERSED_LAYERS:
        order.reverse()
    base = [rng.normal(0, 0.3, size=l[2]) for l in layers]
    sent = {}
    for point in points:
        prng = np.random.default_rng([seed, point])
        for i in order:
            layer = layers[i]
            drift = 1.0 + 0.05 * point * (i + 1)
            w = (base[i] * drift + prng.normal(0.01 * point, 0.05, size=layer[2])).astype(
                np.float32
            )
            put(client, run_id, point, i, layer, "weight", w)
            sent[(point, i)] = w.astype(np.float64)
            units = int(np.prod(layer[3]))
            acts = np.maximum(prng.normal(0.1 * i, 1.0 + 0.02 * point, size=(EXAMPLES, units)),
                              -0.2).astype(np.float32)
            # The evaluation pass in two snapshots: 2 examples, then 1.
            put(client, run_id, point, i, layer, "act", acts[:2], examples=2, batch=0)
            put(client, run_id, point, i, layer, "act", acts[2:], examples=1, batch=1)
            if skip_gradavg != (point, i):
                g = prng.normal(0.5 - 0.02 * point, 0.3, size=EXAMPLES).astype(np.float32)
                put(client, run_id, point, i, layer, "gradavg", g, examples=EXAMPLES)
        action(client, "lrid.complete_point",
               {"protocol": 1, "run_id": run_id, "point": point, "step": 100 * point})
    if close:
        action(client, "lrid.close_run", {"protocol": 1, "run_id": run_id})
    client.close()
    return sent


def record_corpus(address, data: pathlib.Path):
    """Records the corpus in two halves with a checkpoint between them, so that the export
    reads rows from Parquet files and from the daemon's memory at once."""
    full = list(range(POINTS))
    shuffled = [int(p) for p in np.random.default_rng(5).permutation(POINTS)]
    plan = [
        (run_id, labels, shuffled if run_id == SHUFFLED_POINTS else full, {})
        for run_id, labels in reversed(CORPUS.items())
    ] + [
        (SHORT, LEFT_OUT[SHORT], full[:20], {}),
        (NO_RULE, LEFT_OUT[NO_RULE], full, {}),
        (NULL_GRAD, LEFT_OUT[NULL_GRAD], full, dict(skip_gradavg=(7, 1))),
        (OPEN, LEFT_OUT[OPEN], full, dict(close=False)),
    ]
    sent = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        for n, half in enumerate((plan[::2], plan[1::2])):
            jobs = {r: pool.submit(record_run, address, r, l, p, **kw) for r, l, p, kw in half}
            sent.update({r: job.result() for r, job in jobs.items()})
            if n == 0:
                wait_for_checkpoint(data)
    return sent


def wait_for_checkpoint(data: pathlib.Path, timeout=20.0):
    """Waits until the daemon's periodic checkpoint (every 5 s) has moved rows to Parquet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads((data / "manifest.json").read_text()).get("observables"):
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.2)
    pytest.fail(f"no checkpoint within {timeout} s")


# --- the daemon ------------------------------------------------------------------------------


@pytest.fixture()
def own_daemon(lrid_bin, tmp_path):
    """`lrid serve` with two measurement models; yields (process, address, data folder). The
    test stops it with SIGTERM itself; teardown kills it only if the test did not."""
    config = tmp_path / "lrid.toml"
    config.write_text(CONFIG)
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [lrid_bin, "serve", "--config", str(config), "--listen", "127.0.0.1:0",
         "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("lrid serve listening on "), line
        yield proc, line.split()[4], data
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


# --- the dataset, built independently from the Parquet files -----------------------------------


def read_tables(data: pathlib.Path):
    manifest = json.loads((data / "manifest.json").read_text())
    obs_files = [data / "observables" / f for f in manifest["observables"]]
    assert obs_files, manifest
    observables = pa.concat_tables([pq.read_table(f) for f in obs_files])
    runs = pq.read_table(data / "runs" / manifest["runs"])
    return observables, runs


def expected_dataset(observables: pa.Table, runs: pa.Table, model="ideal"):
    """(metadata rows as dicts, one-hot matrix, feature matrix, left-out runs → reason)."""
    run_rows = runs.to_pylist()
    ids = [r["run_id"] for r in run_rows]
    assert len(ids) == len(set(ids)), "one runs row per run"
    run_of = {r["run_id"]: r for r in run_rows}

    obs = observables.to_pandas()
    assert not obs.duplicated(["run_id", "model", "layer_index", "point"]).any()
    obs = obs[obs["model"] == model]
    closed = {r for r, row in run_of.items() if row["status"] == "closed"}
    obs = obs[obs["run_id"].isin(closed)]

    left_out = {}
    for run_id, g in obs.groupby("run_id", sort=True):
        per_layer = g.groupby("layer_index")["point"].apply(lambda p: sorted(p.tolist()))
        if any(pts != list(range(POINTS)) for pts in per_layer):
            left_out[run_id] = "points"
            continue
        values = g[ADMISSIBLE].to_numpy(dtype=np.float64, na_value=np.nan)
        if not np.isfinite(values).all():
            left_out[run_id] = "null"
            continue
        if run_of[run_id]["learning_rule"] is None:
            left_out[run_id] = "rule"
    obs = obs[~obs["run_id"].isin(left_out)]

    # Python's string order (code points) is the byte order for these ASCII ids.
    obs = obs.assign(_rid=obs["run_id"].astype(object)).sort_values(
        ["_rid", "model", "layer_index", "point"], kind="stable"
    )
    n = len(obs) // POINTS
    assert len(obs) == n * POINTS
    assert (obs["point"].to_numpy().reshape(n, POINTS) == np.arange(POINTS)).all()

    first = obs.iloc[::POINTS]
    rules = sorted({run_of[r]["learning_rule"] for r in first["run_id"]})
    meta = []
    for row in first.itertuples(index=False):
        run = run_of[row.run_id]
        meta.append({
            "run_id": row.run_id,
            "layer_index": int(row.layer_index),
            "layer_name": row.layer_name,
            "position": row.position,
            "model": row.model,
            "learning_rule": run["learning_rule"],
            "label": rules.index(run["learning_rule"]),
            "architecture": run["architecture"],
            "task": run["task"],
            "batch_size": run["batch_size"],
            "model_seed": run["model_seed"],
            "data_seed": run["data_seed"],
        })
    onehot = np.zeros((n, 3))
    onehot[np.arange(n), [POSITIONS.index(p) for p in first["position"]]] = 1.0
    # Feature k·21 + t = statistic k at point t (spec §2, 2-D form).
    features = np.stack(
        [obs[s].to_numpy(dtype=np.float64).reshape(n, POINTS) for s in ADMISSIBLE], axis=1
    ).reshape(n, len(ADMISSIBLE) * POINTS)
    return meta, onehot, features, left_out


def differences(table: pa.Table, meta, onehot, features):
    """What differs between the exported table and the expected dataset (empty: nothing)."""
    out = []
    want = METADATA + GROUPS + FEATURES
    if table.column_names != want:
        extra = [c for c in table.column_names if c not in want]
        missing = [c for c in want if c not in table.column_names]
        first = next((i for i, (a, b) in enumerate(zip(table.column_names, want)) if a != b),
                     None)
        out.append(f"columns differ: {len(table.column_names)} vs {len(want)} expected; "
                   f"missing {missing[:5]}, unexpected {extra[:5]}, first differing position "
                   f"{first}: {table.column_names[first] if first is not None else None!r} "
                   f"instead of {want[first] if first is not None else None!r}")
        return out
    if table.num_rows != len(meta):
        got = sorted(set(table.column("run_id").to_pylist()))
        out.append(f"{table.num_rows} rows instead of {len(meta)}; exported runs {got}")
        return out
    for c in METADATA:
        got = table.column(c).to_pylist()
        exp = [m[c] for m in meta]
        if got != exp:
            i = next(i for i, (a, b) in enumerate(zip(got, exp)) if a != b)
            out.append(f"column {c}, row {i} ({meta[i]['run_id']} layer "
                       f"{meta[i]['layer_index']}): {got[i]!r} instead of {exp[i]!r}")
    got = np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                           for c in GROUPS])
    if not np.array_equal(got, onehot):
        i = int(np.argwhere((got != onehot).any(axis=1))[0, 0])
        out.append(f"one-hot of row {i} ({meta[i]['position']}): {got[i]} instead of "
                   f"{onehot[i]}")
    got = np.column_stack([table.column(c).to_numpy(zero_copy_only=False)
                           for c in FEATURES]).astype(np.float64)
    close = np.isclose(got, features, rtol=1e-12, atol=0.0) | (got == features)
    if not close.all():
        i, j = (int(x) for x in np.argwhere(~close)[0])
        out.append(f"{int((~close).sum())} feature values differ; first: row {i} "
                   f"({meta[i]['run_id']} layer {meta[i]['layer_index']}) column "
                   f"{FEATURES[j]}: {got[i, j]!r} instead of {features[i, j]!r}")
    return out


# --- the test ---------------------------------------------------------------------------------


def test_dataset_export_equals_the_dataset_built_from_parquet(own_daemon, lrid_bin, tmp_path):
    proc, address, data = own_daemon
    sent = record_corpus(address, data)

    out_file = tmp_path / "ds.parquet"
    export = subprocess.run(
        [lrid_bin, "dataset", "export", "--server", f"http://{address}", "--out", str(out_file)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert export.returncode == 0, export.stderr

    # Everything to Parquet: a clean shutdown checkpoints.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0

    observables, runs = read_tables(data)
    meta, onehot, features, left_out = expected_dataset(observables, runs)

    # The independent construction itself: the corpus as recorded.
    assert {m["run_id"] for m in meta} == set(CORPUS)
    assert left_out == {SHORT: "points", NO_RULE: "rule", NULL_GRAD: "null"}
    assert len(meta) == sum(len(ARCHITECTURES[l["architecture"]]) for l in CORPUS.values())
    assert sorted({m["learning_rule"] for m in meta}) == ["adam", "feedback", "sgdm"]
    assert set(observables.column("model").to_pylist()) == {"ideal", "half"}
    unseeded = [m for m in meta if m["run_id"] == "corpus/resnet-sgdm-3"]
    assert unseeded and all(m["model_seed"] is None and m["data_seed"] is None
                            for m in unseeded)
    # A spot check of the Parquet values against the tensors sent.
    k = FEATURES.index("weightraw_mean_t0")
    for i, m in enumerate(meta):
        for t in (0, 20):
            w = sent[m["run_id"]][(t, m["layer_index"])]
            assert features[i, k + t] == pytest.approx(w.mean(), rel=1e-12)
    assert np.isfinite(features).all()

    # The export.
    table = pq.read_table(out_file)
    assert differences(table, meta, onehot, features) == []
    assert table.schema.field("label").type == pa.uint32()
    for c in FEATURES:
        assert table.schema.field(c).type == pa.float64(), c
    m = re.search(r"(\d+) examples", export.stdout)
    assert m and int(m.group(1)) == len(meta) == table.num_rows, export.stdout

    # One warning line per left-out run, naming it; none for the others (the open run is not
    # a candidate: only closed runs are).
    warnings = re.findall(r"^warning: run (\S+) left out: (.+)$", export.stderr, re.M)
    assert sorted(r for r, _ in warnings) == sorted([SHORT, NO_RULE, NULL_GRAD]), export.stderr
    short = [reason for r, reason in warnings if r == SHORT]
    assert len(short) == 1 and short[0].strip(), export.stderr

    # The comparison catches what it is meant to: each mutation of the expected dataset differs.
    swapped = features.copy()
    a, b = ADMISSIBLE.index("weightabs_median"), ADMISSIBLE.index("weightabs_mean")
    swapped[:, a * POINTS:(a + 1) * POINTS] = features[:, b * POINTS:(b + 1) * POINTS]
    swapped[:, b * POINTS:(b + 1) * POINTS] = features[:, a * POINTS:(a + 1) * POINTS]
    time_reversed = features.reshape(len(meta), len(ADMISSIBLE), POINTS)[:, :, ::-1].reshape(
        len(meta), -1)
    relabelled = [dict(m, label=2 - m["label"]) for m in meta]
    for mutated in (
        differences(table, meta, onehot, swapped),
        differences(table, meta, onehot, time_reversed),
        differences(table, relabelled, onehot, features),
        differences(table, meta[::-1], onehot[::-1], features[::-1]),
        differences(table, meta, onehot[:, ::-1], features),
        differences(table.select(METADATA + GROUPS + FEATURES[1:] + FEATURES[:1]), meta, onehot,
                    features),
    ):
        assert mutated, "the comparison missed a mutation"
