"""The Python client (`sdk/python`, package `lrid`) against a real `lrid serve`: `watch` on
PyTorch models, `Recorder` on numpy arrays, `connect` for SQL — and what they store compared with
`lrid stats` (lrid-stats) and with the Rust SDK on the same tensors."""

import json
import logging
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import lrid

ROOT = pathlib.Path(__file__).resolve().parents[2]
POINTS = 21
STEPS = 40


def url(daemon):
    return f"http://{daemon}"


class Net(torch.nn.Module):
    """A small CNN + MLP, with BatchNorm and Dropout so that mode, statistics and RNG matter, a
    draw from the RNG in every forward (eval mode too: only restoring the RNG state keeps the
    training's dropout masks) and an in-place ReLU after a recorded layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.conv2 = torch.nn.Conv2d(4, 6, 3)
        self.act = torch.nn.ReLU(inplace=True)
        self.drop = torch.nn.Dropout(0.3)
        self.fc1 = torch.nn.Linear(6 * 6 * 6, 16)
        self.fc2 = torch.nn.Linear(16, 3)

    def forward(self, x):
        x = x + 0.0 * torch.randn_like(x)
        x = torch.relu(self.bn(self.conv1(x)))
        x = self.act(self.conv2(x))
        x = self.drop(x.flatten(1))
        return self.fc2(torch.relu(self.fc1(x)))


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, 8, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (STEPS, 8), generator=g)
    probe = torch.randn(10, 1, 8, 8, generator=g)
    return x, y, probe


def train(watched=None, capture=None, optimizer="sgd", **watch_args):
    """Trains Net for STEPS steps; returns losses and final parameters. `watched`: record with
    lrid.watch into that server; `capture(step, model)`: called at step 0 and after each step."""
    torch.manual_seed(0)
    model = Net()
    opt = (torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=1e-3))
    x, y, probe = data()
    losses = []
    handle = lrid.watch(model, probe, total_steps=STEPS, points=POINTS, server=watched,
                        **watch_args) if watched else None
    if capture:
        capture(0, model, probe)
    for s in range(STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[s]), y[s])
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if capture:
            capture(s + 1, model, probe)
    if handle:
        handle.close()
    return losses, {k: v.clone() for k, v in model.state_dict().items()}, handle


def rows(daemon, query):
    with lrid.connect(url(daemon)) as db:
        return db.sql(query).to_pylist()


def test_losses_and_parameters_are_bit_identical_with_and_without_watch(daemon):
    plain_losses, plain_params, _ = train()
    losses, params, handle = train(url(daemon), run_id="bitwise")
    assert handle.points_recorded == POINTS and not handle.errors
    assert losses == plain_losses
    # Parameters and buffers (BatchNorm's running statistics and its step count).
    assert params.keys() == plain_params.keys()
    assert all(torch.equal(params[k], plain_params[k]) for k in params)
    assert rows(daemon, "SELECT count(*) AS n FROM observables WHERE run_id = 'bitwise' AND model = 'ideal'")[0]["n"] == 4 * POINTS


def weight_layout(m, w):
    return w.permute(2, 3, 1, 0) if isinstance(m, torch.nn.Conv2d) else w.t()


def test_every_layer_and_point_is_stored_with_the_statistics_lrid_stats_computes(daemon, lrid_bin, tmp_path):
    """The same tensors, taken from an unwatched twin of the training at the point steps, given
    to `lrid stats`: the daemon's rows agree."""
    steps = lrid.point_steps(STEPS, POINTS)
    taken = {}

    def capture(step, model, probe):
        if step in steps and step not in taken:
            outs = {}
            hooks = [m.register_forward_hook(lambda m, a, o, n=n: outs.__setitem__(n, o.detach().clone()))
                     for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
            training = model.training
            model.eval()
            with torch.no_grad(), torch.random.fork_rng():  # Net's forward draws from the RNG
                model(probe)
            model.train(training)
            for h in hooks:
                h.remove()
            taken[step] = {n: (weight_layout(m, m.weight.detach()).contiguous().numpy().copy(),
                               (outs[n].permute(0, 2, 3, 1) if outs[n].dim() == 4 else outs[n]).contiguous().numpy())
                           for n, m in model.named_modules() if n in outs}

    train(capture=capture)
    train(url(daemon), run_id="stats")
    got = rows(daemon, "SELECT * FROM observables WHERE run_id = 'stats' AND model = 'ideal' ORDER BY point, layer_index")
    assert [(r["point"], r["layer_name"]) for r in got] == [
        (p, n) for p in range(POINTS) for n in ("conv1", "conv2", "fc1", "fc2")]
    assert [r["step"] for r in got[::4]] == steps
    assert [r["position"] for r in got[:4]] == ["early", "middle", "deep", "deep"]
    for point in (0, 7, 20):
        for r in got[point * 4:(point + 1) * 4]:
            w, a = taken[steps[point]][r["layer_name"]]
            for measure, arr in (("weight", w), ("act", a)):
                f = tmp_path / f"{measure}.npy"
                np.save(f, arr)
                out = subprocess.run([lrid_bin, "stats", str(f), "--measure", measure, "--format", "json"],
                                     check=True, capture_output=True, text=True)
                for name, want in json.loads(out.stdout).items():
                    if want is None:
                        assert r[name] is None, (point, r["layer_name"], name)
                    else:
                        assert r[name] == pytest.approx(want, rel=1e-9, abs=1e-12), (point, r["layer_name"], name)


def test_the_activity_change_of_a_linear_layer_is_its_closed_form(daemon):
    """For y = xWᵀ + b, gₙ = (1/|O|) Σₒ Σᵢ W_oi for every example."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 4))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    probe = torch.randn(6, 5)
    expected = []
    with lrid.watch(model, probe, total_steps=10, points=3, server=url(daemon), run_id="linear") as h:
        for step in range(10):
            if step in (0, 5):
                expected.append(model[2].weight.detach().double().sum().item() / 4)
            opt.zero_grad()
            model(torch.randn(8, 5)).pow(2).mean().backward()
            opt.step()
        expected.append(model[2].weight.detach().double().sum().item() / 4)
    assert h.points_recorded == 3
    got = rows(daemon, "SELECT point, gradavgraw_id, gradavgsq_id FROM observables "
                       "WHERE run_id = 'linear' AND layer_index = 1 AND model = 'ideal' ORDER BY point")
    assert [r["gradavgraw_id"] for r in got] == pytest.approx(expected, rel=1e-5)
    # The same for every example: the mean of the squares is the square of the mean.
    assert [r["gradavgsq_id"] for r in got] == pytest.approx([e * e for e in expected], rel=1e-5)


def test_python_and_the_rust_sdk_store_the_same_rows_for_the_same_tensors(daemon, tmp_path):
    example = ROOT / "target" / "release" / "examples" / "record_npy"
    assert example.exists(), f"{example} is missing: cargo test --release --workspace builds it"
    rng = np.random.default_rng(5)
    layers = [lrid.LayerInfo(0, "conv", "early", (3, 3, 2, 4), (6, 6, 4)),
              lrid.LayerInfo(1, "dense", "deep", (144, 5), (5,))]
    manifest = {"server": url(daemon), "run_id": "rust", "labels": {"learning_rule": "sgdm"},
                "layers": [l.to_wire() for l in layers], "points": []}
    with lrid.Recorder(url(daemon), "python", labels={"learning_rule": "sgdm"}) as rec:
        for point in range(3):
            snaps = []
            for layer in layers:
                tensors = {
                    "weight": rng.normal(0, 0.3, layer.weight_shape).astype(np.float32),
                    "act": rng.standard_t(4, (9, *layer.activation_shape)).astype(np.float32),
                    "gradavg": rng.normal(0.1, 1, 9).astype(np.float32),
                }
                for measure, values in tensors.items():
                    f = f"{point}-{layer.index}-{measure}.npy"
                    np.save(tmp_path / f, values)
                    snaps.append({"layer": layer.index, "measure": measure, "file": f, "batch": 0})
                rec.record_weights(point, layer, tensors["weight"])
                rec.record_activations(point, layer, tensors["act"])
                rec.record_activity_change(point, layer, tensors["gradavg"])
            rec.complete_point(point, step=10 * point)
            manifest["points"].append({"point": point, "step": 10 * point, "snapshots": snaps})
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    subprocess.run([str(example), str(tmp_path / "manifest.json")], check=True)
    q = "SELECT * EXCLUDE (run_id) FROM observables WHERE run_id = '{}' ORDER BY model, point, layer_index"
    py, rust = rows(daemon, q.format("python")), rows(daemon, q.format("rust"))
    assert len(py) == len(rust) > 0
    assert py == rust


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_daemon_down_then_up_loses_nothing_and_never_blocks_beyond_the_buffer(lrid_bin, tmp_path):
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    layer = lrid.LayerInfo(0, "w", "early", (256, 256), (1,))
    weights = np.ones((256, 256), np.float32)  # 256 KiB per snapshot
    rec = lrid.Recorder(server, "outage", buffer_bytes=1 << 20, when_full="raise",
                        initial_backoff=0.05, max_backoff=0.2)
    slowest, queued, full = 0.0, 0, 0
    for point in range(8):
        t = time.perf_counter()
        try:
            rec.record_weights(point, layer, weights * point)
            rec.complete_point(point)
            queued += 1
        except lrid.BufferFull as e:
            full += 1
            assert "buffer is full" in str(e)
        slowest = max(slowest, time.perf_counter() - t)
        assert rec.buffered_bytes <= 1 << 20
    assert queued == 4 and full == 4, "a 1 MiB buffer holds four 256 KiB snapshots"
    assert slowest < 0.5, f"a record call blocked {slowest:.3f} s while the daemon was down"
    time.sleep(0.5)
    assert rec.status.startswith("retrying")
    proc = subprocess.Popen([lrid_bin, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir",
                             str(tmp_path / "data")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("lrid serve listening on ")
        rec.close(timeout=60)
        assert rec.status == "connected"
        with lrid.connect(server) as db:
            got = db.sql("SELECT point, weightraw_mean FROM observables WHERE run_id = 'outage' "
                         "AND model = 'ideal' ORDER BY point").to_pylist()
            assert got == [{"point": p, "weightraw_mean": float(p)} for p in range(4)]
            assert db.sql("SELECT status FROM runs WHERE run_id = 'outage'").to_pylist() == [{"status": "closed"}]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_non_finite_tensors_are_refused_and_reported_without_stopping_training(daemon, caplog):
    layer = lrid.LayerInfo(0, "w", "early", (2, 3), (3,))
    with lrid.Recorder(url(daemon), "nan") as rec:
        bad = np.ones((2, 3), np.float32)
        bad[1, 2] = np.inf
        with pytest.raises(ValueError, match=r"weight snapshot of layer 0 \(w\) at point 0: 1 non-finite"):
            rec.record_weights(0, layer, bad)
        with pytest.raises(ValueError, match="5 values given, the shapes say 6"):
            rec.record_weights(0, layer, np.ones(5, np.float32))
    # Through watch: a layer whose weights became NaN mid-training; training goes on, the
    # point is reported, close() raises it.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    h = lrid.watch(model, torch.randn(5, 4), total_steps=4, points=5, server=url(daemon), run_id="nan-watch")
    for step in range(4):
        if step == 2:
            with torch.no_grad():
                model[2].weight[0, 0] = float("nan")
        opt.zero_grad()
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
    assert h.steps == 4 and len(h.errors) >= 1
    with pytest.raises(lrid.LridError, match="non-finite"):
        h.close()
    stored = rows(daemon, "SELECT DISTINCT point FROM observables WHERE run_id = 'nan-watch' ORDER BY point")
    assert [r["point"] for r in stored] == [0, 1, 2]


def test_a_module_without_weights_is_skipped_with_a_log_line(daemon, caplog):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    with caplog.at_level(logging.WARNING, logger="lrid"):
        with lrid.watch(model, torch.randn(5, 4), total_steps=1, points=2, server=url(daemon),
                        run_id="skip", layers=["0", "1", "2"]) as h:
            h.step()
    assert "module '1' (ReLU) has no weight tensor; it is skipped" in caplog.text
    got = rows(daemon, "SELECT DISTINCT layer_name FROM observables WHERE run_id = 'skip' ORDER BY layer_name")
    assert [r["layer_name"] for r in got] == ["0", "2"]
    with pytest.raises(ValueError, match="no module named 'nope'"):
        lrid.watch(model, torch.randn(5, 4), total_steps=1, server=url(daemon), run_id="skip2", layers=["nope"])


def test_bad_arguments_are_refused_with_what_is_wrong(daemon):
    with pytest.raises(ValueError, match="invalid run id"):
        lrid.Recorder(url(daemon), "bad id")
    with pytest.raises(ValueError, match="unknown label"):
        lrid.Recorder(url(daemon), "r", labels={"rule": "sgdm"})
    with pytest.raises(ValueError, match="not a server address"):
        lrid.Recorder("ftp://x:1", "r")
    with pytest.raises(ValueError, match="at least 2 points"):
        lrid.watch(torch.nn.Linear(2, 2), torch.randn(1, 2), total_steps=5, points=1, server=url(daemon))
    # A run id that exists and is closed: the refusal says so, once, and every later call too.
    with lrid.Recorder(url(daemon), "twice") as rec:
        with pytest.raises(lrid.Refused, match="point 0 of run 'twice' has no snapshots to complete"):
            rec.complete_point(0)
            rec.flush()
    rec = lrid.Recorder(url(daemon), "twice")
    with pytest.raises(lrid.Refused, match="exists and is closed"):
        rec.flush()
    with pytest.raises(lrid.Refused, match="exists and is closed"):
        rec.complete_point(1)


def test_sql_trajectories_and_identify(daemon):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with lrid.watch(model, torch.randn(4, 3), total_steps=2, points=3, server=url(daemon), run_id="q/1",
                    labels={"learning_rule": "sgdm", "batch_size": 4}) as h:
        h.step(2)
    with lrid.connect(url(daemon)) as db:
        t = db.trajectories("q/1", layer="0", statistic=["weightraw_norm", "actraw_mean"])
        assert t.column_names == ["run_id", "layer_index", "layer_name", "position", "model", "point",
                                  "step", "statistic", "value"]
        assert t.num_rows == 6
        frame = t.to_pandas()
        assert frame.shape == (6, 9) and set(frame["statistic"]) == {"weightraw_norm", "actraw_mean"}
        assert db.runs().to_pylist()[0]["learning_rule"] == "sgdm"
        assert db.identify("q/1") is None, "no identifier is loaded in this daemon"
        with pytest.raises(lrid.LridError, match="nope"):
            db.sql("SELECT nope FROM runs")
        assert db.sql("SELECT run_id FROM runs WHERE batch_size = $1", [4]).to_pylist() == [{"run_id": "q/1"}]


DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist, lrid
    def main(rank, server, init):
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        with lrid.watch(model, torch.randn(6, 4), total_steps=10, points=5, server=server, run_id="ddp") as h:
            for _ in range(10):
                opt.zero_grad(); model(torch.randn(5, 4)).pow(2).mean().backward(); opt.step()
        print(rank, h.recorder is not None, h.points_recorded, flush=True)
        dist.destroy_process_group()
    if __name__ == "__main__":
        torch.multiprocessing.spawn(main, args=(sys.argv[1], sys.argv[2]), nprocs=2)
""")


def test_ddp_with_two_cpu_processes_records_one_run_without_hanging(daemon, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = subprocess.run([sys.executable, str(script), url(daemon), f"file://{tmp_path / 'rendezvous'}"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split("\n")[:2]) == ["0 True 5", "1 False 0"]
    got = rows(daemon, "SELECT run_id, count(DISTINCT point) AS points FROM observables GROUP BY run_id")
    assert got == [{"run_id": "ddp", "points": 5}]


def test_the_lightning_callback_records_a_lightning_training(daemon):
    import lightning
    from lrid.integrations.lightning import LridCallback

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(48, 4, generator=g), torch.randint(0, 2, (48,), generator=g))
    callback = LridCallback(probe=torch.randn(6, 4, generator=g), points=5, server=url(daemon),
                            run_id="lightning", labels={"learning_rule": "sgdm"})
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                callbacks=[callback])
    trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=8))
    got = rows(daemon, "SELECT point, step, count(*) AS layers FROM observables WHERE run_id = 'lightning' "
                       "AND model = 'ideal' GROUP BY point, step ORDER BY point")
    assert got == [{"point": p, "step": s, "layers": 2} for p, s in enumerate(lrid.point_steps(12, 5))]
    assert rows(daemon, "SELECT status FROM runs WHERE run_id = 'lightning'") == [{"status": "closed"}]


def test_the_huggingface_callback_records_a_trainer_training(daemon, tmp_path):
    import transformers
    from lrid.integrations.huggingface import LridCallback

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3)
    model = transformers.BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(0, 40, (8,), generator=g), "labels": int(i % 3)} for i in range(24)]
    probe = {"input_ids": torch.randint(0, 40, (5, 8), generator=g)}
    callback = LridCallback(probe=probe, points=3, server=url(daemon), run_id="hf",
                            labels={"learning_rule": "adam"})
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=4,
                                          report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
                                          disable_tqdm=True)
    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    got = rows(daemon, "SELECT point, step, count(*) AS layers FROM observables WHERE run_id = 'hf' "
                       "AND model = 'ideal' GROUP BY point, step ORDER BY point")
    assert got == [{"point": p, "step": s, "layers": len(linear)} for p, s in enumerate(lrid.point_steps(6, 3))]
    names = rows(daemon, "SELECT layer_name FROM layers WHERE run_id = 'hf' ORDER BY layer_index")
    assert [r["layer_name"] for r in names] == linear


@pytest.fixture()
def forest_daemon(lrid_bin, tmp_path):
    """A real `lrid serve` whose plugins folder holds the random-forest classifier."""
    plugins = tmp_path / "data" / "plugins"
    plugins.mkdir(parents=True)
    so = ROOT / "target" / "release" / "liblrid_classifier_random_forest.so"
    assert so.exists(), f"{so} is missing: build the workspace first"
    (plugins / "random-forest.so").write_bytes(so.read_bytes())
    proc = subprocess.Popen([lrid_bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("lrid serve listening on "), line
    yield line.split()[4]
    proc.terminate()
    assert proc.wait(timeout=30) == 0


RULES = ("adam", "feedback-alignment", "information-alignment", "sgdm")


def record_synthetic_run(server, run_id, rule_index, seed, rule=None):
    """A 2-layer run whose weights drift by an amount set by its rule (its label `rule`)."""
    rng = np.random.default_rng(seed)
    layers = [lrid.LayerInfo(0, "a", "early", (6, 5), (5,)), lrid.LayerInfo(1, "b", "deep", (5, 3), (3,))]
    base = [rng.normal(0, 0.2, l.weight_shape) for l in layers]
    with lrid.Recorder(server, run_id, labels={"learning_rule": rule, "architecture": "toy"}) as rec:
        for point in range(21):
            for layer, w0 in zip(layers, base):
                drift = 0.1 * (rule_index + 1) * point / 20
                w = (w0 * (1 + drift) + 0.01 * rng.normal(size=w0.shape)).astype(np.float32)
                rec.record_weights(point, layer, w)
                rec.record_activations(point, layer, rng.normal(drift, 1, (4, *layer.activation_shape)).astype(np.float32))
                rec.record_activity_change(point, layer, rng.normal(-drift, 0.1, 4).astype(np.float32))
            rec.complete_point(point, step=point)


def test_identify_returns_the_live_identification_of_a_run(forest_daemon, lrid_bin):
    server = url(forest_daemon)
    for r, rule in enumerate(RULES):
        for i in range(6):
            record_synthetic_run(server, f"corpus/{rule}/{i}", r, 100 * r + i, rule)
    subprocess.run([lrid_bin, "identify", "fit", "--name", "toy", "--server", server,
                    "--where", "starts_with(run_id, 'corpus/')"], check=True, capture_output=True)
    record_synthetic_run(server, "live/1", 0, 999)  # adam's drift; no label
    with lrid.connect(server) as db:
        found = None
        for _ in range(100):
            found = db.identify("live/1", identifier="toy")
            if found and found["points_seen"] == 21:
                break
            time.sleep(0.05)
    assert found is not None and found["points_seen"] == 21 and found["status"] == "ok"
    assert found["identifier"] == "toy" and found["point"] == 20
    assert sorted(found["probabilities"]) == sorted(RULES)
    assert found["predicted"] == "adam"
    assert found["probability"] == max(found["probabilities"].values())


def test_modes_and_hooks_are_restored_when_the_probe_forward_raises(daemon):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    model.train()
    model[1].eval()  # a mixed state, restored as it was
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    bad_probe = torch.randn(5, 7)  # the wrong width: the forward raises at every point
    h = lrid.watch(model, bad_probe, total_steps=2, points=3, server=url(daemon), run_id="raises")
    for _ in range(2):
        opt.zero_grad()
        model[0].train()
        model(torch.randn(6, 4)).sum().backward()
        opt.step()
    assert h.steps == 2 and len(h.errors) == 3 and all(isinstance(e, RuntimeError) for e in h.errors)
    assert [m.training for m in model] == [True, False, True]
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(lrid.LridError, match="mat1 and mat2 shapes cannot be multiplied"):
        h.close()
    # on_error="raise": watch() itself raises, and leaves no optimizer hook behind.
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        lrid.watch(model, bad_probe, total_steps=2, points=3, server=url(daemon), run_id="raises2",
                   on_error="raise")
    opt.zero_grad()
    model(torch.randn(6, 4)).sum().backward()
    opt.step()


def test_a_point_with_a_refused_snapshot_is_not_completed(daemon):
    layer = lrid.LayerInfo(0, "w", "early", (2, 3), (3,))
    renamed = lrid.LayerInfo(0, "renamed", "early", (2, 3), (3,))
    rec = lrid.Recorder(url(daemon), "partial")
    rec.record_weights(0, layer, np.ones((2, 3), np.float32))
    rec.complete_point(0)
    rec.record_weights(1, renamed, np.ones((2, 3), np.float32))  # the daemon refuses it
    rec.record_weights(1, lrid.LayerInfo(1, "v", "deep", (2, 2), (2,)), np.ones((2, 2), np.float32))
    rec.complete_point(1)
    with pytest.raises(lrid.Refused, match="weight snapshot of layer 0 \\(renamed\\) at point 1"):
        rec.flush()
    with pytest.raises(lrid.Refused, match="a snapshot of point 1 was not stored .* not completed"):
        rec.flush()
    rec.close()
    got = rows(daemon, "SELECT DISTINCT point FROM observables WHERE run_id = 'partial' ORDER BY point")
    assert [r["point"] for r in got] == [0]
