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


@pytest.fixture()
def daemon(lrid_bin, tmp_path):
    """A real `lrid serve` on a free loopback port, data in a temporary folder: its address."""
    proc = subprocess.Popen(
        [lrid_bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("lrid serve listening on "), line
    yield line.split()[4]
    proc.terminate()
    assert proc.wait(timeout=30) == 0


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
    """The central daemon (installed layout: built-in rules, no plugins folder)."""
    proc = subprocess.Popen(
        [installed, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    line = proc.stdout.readline()
    assert line.startswith("lrid serve listening on "), line
    yield "http://" + line.split()[4]
    proc.terminate()
    assert proc.wait(timeout=30) == 0
