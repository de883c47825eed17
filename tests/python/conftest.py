import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def lrid_bin():
    """The real lrid binary: $LRID_BIN, or the release build of this checkout."""
    path = pathlib.Path(os.environ.get("LRID_BIN", ROOT / "target" / "release" / "lrid"))
    if not path.exists():
        pytest.fail(f"{path} does not exist: build it first (make build)")
    return str(path)
