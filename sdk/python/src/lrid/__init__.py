"""lrid: record a training job's layer observables into `lrid serve`, and query them.

    import lrid
    with lrid.watch(model, probe=x_eval, total_steps=steps, run_id="my-run"):
        train(model)                      # unchanged
    with lrid.connect() as db:
        db.trajectories("my-run", layer="fc", statistic="weightraw_norm").to_pandas()

`Recorder` is the lower-level client (numpy arrays per layer and point); `watch` records a
PyTorch module by itself; `connect` runs SQL through the daemon's Flight SQL endpoint.
"""

from ._protocol import PROTOCOL_VERSION, point_steps, position_of
from .client import Client, connect
from .recorder import (
    BufferFull,
    LayerInfo,
    LridError,
    Recorder,
    RecorderClosed,
    Refused,
    Unreachable,
)

__version__ = "0.1.0"


def watch(*args, **kwargs):
    """Records a PyTorch model while it trains: see `lrid._watch.watch` (imported on first
    use, so that recording numpy arrays and querying need no torch)."""
    from ._watch import watch as _watch

    return _watch(*args, **kwargs)


__all__ = [
    "PROTOCOL_VERSION",
    "BufferFull",
    "Client",
    "LayerInfo",
    "LridError",
    "Recorder",
    "RecorderClosed",
    "Refused",
    "Unreachable",
    "connect",
    "point_steps",
    "position_of",
    "watch",
]
