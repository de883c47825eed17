import json
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def lrid_bin():
    """The real lrid binary: $LRID_BIN, or the release build of this checkout."""
    path = pathlib.Path(os.environ.get("LRID_BIN", ROOT / "target" / "release" / "lrid"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it first (make build)")
    return str(path)


def small_sweep(name, model_seeds, data_seeds, train_examples=16):
    """A sweep file's text: sgdm and adam on a small KNet4 (3 points, CPU), one run a second or
    so; `train_examples / 8` steps per run."""
    return f"""name = "{name}"
workers = 1
[[grid]]
architectures = ["knet4"]
tasks = ["shapes"]
rules = ["sgdm", "adam"]
batch_sizes = [8]
model_seeds = {model_seeds}
data_seeds = {data_seeds}
[train]
epochs = 1
points = 3
train_examples = {train_examples}
eval_examples = 4
resolution = 16
width = 0.25
device = "cpu"
"""


def start_daemon(lrid, data_dir, cwd=None):
    """A real `lrid serve` of `lrid` on a free loopback port: the process and its address."""
    proc = subprocess.Popen(
        [lrid, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    line = proc.stdout.readline()
    assert line.startswith("lrid serve listening on "), line
    return proc, line.split()[4]


def stop_daemon(proc):
    proc.terminate()
    assert proc.wait(timeout=30) == 0


def sql(lrid, server, query):
    """`lrid sql QUERY --format json`: the rows."""
    out = subprocess.run(
        [lrid, "sql", query, "--server", server, "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.fixture()
def daemon(lrid_bin, tmp_path):
    """A real `lrid serve` on a free loopback port, data in a temporary folder: its address."""
    proc, addr = start_daemon(lrid_bin, tmp_path / "data")
    yield addr
    stop_daemon(proc)


@pytest.fixture()
def installed(tmp_path, lrid_bin):
    """`deploy/install.sh` of this build (what `make install` runs): the installed lrid."""
    prefix = tmp_path / "prefix"
    subprocess.run(
        [str(ROOT / "deploy" / "install.sh"), str(prefix), str(pathlib.Path(lrid_bin).parent)],
        check=True,
        capture_output=True,
    )
    return str(prefix / "bin" / "lrid")


@pytest.fixture()
def central(installed, tmp_path):
    """The central daemon of an installed layout (built-in rules, no plugins folder): its URL."""
    proc, addr = start_daemon(installed, tmp_path / "data", cwd=tmp_path)
    yield "http://" + addr
    stop_daemon(proc)
