"""`LridCallback` for PyTorch Lightning: records the LightningModule with `lrid.watch`.

    trainer = lightning.Trainer(max_epochs=10, callbacks=[LridCallback(probe=x_eval, run_id="r")])

The total number of optimizer steps is Lightning's `trainer.estimated_stepping_batches`
(gradient accumulation and limits included); steps are counted by the optimizer step hook; the
probe goes through the module's `forward` (define it). Only global rank 0 records.
"""

from __future__ import annotations

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone package
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError as e:
        raise ImportError("lrid.integrations.lightning needs PyTorch Lightning (pip install lrid[lightning])") from e

import logging

from ._common import WatchSettings

log = logging.getLogger("lrid")

__all__ = ["LridCallback"]


class LridCallback(Callback):
    """Records training with `lrid.watch(pl_module, probe, total_steps=…, points=…, …)`; the
    keyword arguments are `lrid.watch`'s (`server`, `run_id`, `labels`, `layers`, `token`, …)."""

    def __init__(self, probe, points: int = 21, **watch_options):
        super().__init__()
        self.settings = WatchSettings(probe, points, **watch_options)

    @property
    def handle(self):
        """The `lrid.watch` handle while training runs (None on other ranks)."""
        return self.settings.handle

    def on_train_start(self, trainer, pl_module):
        if trainer.global_rank != 0:
            return
        steps = trainer.estimated_stepping_batches
        if steps == float("inf"):
            log.error("lrid: the training has no known number of steps (set max_steps); it is not recorded")
            return
        self.settings.start(pl_module, pl_module.device, steps)

    def on_train_end(self, trainer, pl_module):
        self.settings.stop()

    def on_exception(self, trainer, pl_module, exception):
        try:
            self.settings.stop()
        except Exception as e:  # noqa: BLE001 - the training's own exception comes first
            log.error("lrid: %s", e)
