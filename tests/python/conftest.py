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
