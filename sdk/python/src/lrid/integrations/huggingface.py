"""`LridCallback` for the Hugging Face `Trainer`: records the model with `lrid.watch`.

    probe = tokenizer(texts, return_tensors="pt", padding=True)   # a dict of tensors
    Trainer(model, args, train_dataset=ds, callbacks=[LridCallback(probe=dict(probe), run_id="r")])

The total number of optimizer steps is the Trainer's `state.max_steps`; steps are counted by the
optimizer step hook (the Trainer's optimizer is a `torch.optim` optimizer, wrapped or not); the
probe is passed to the model as keyword arguments when it is a dict. Default layers: every
`torch.nn.Linear`/`Conv*d` (name others with `layers=`). Only the world's main process records.
"""

from __future__ import annotations

try:
    from transformers import TrainerCallback
except ImportError as e:
    raise ImportError("lrid.integrations.huggingface needs transformers (pip install lrid[huggingface])") from e

from ._common import WatchSettings

__all__ = ["LridCallback"]


class LridCallback(TrainerCallback):
    """Records training with `lrid.watch(model, probe, total_steps=state.max_steps, …)`; the
    keyword arguments are `lrid.watch`'s (`server`, `run_id`, `labels`, `layers`, `token`, …)."""

    def __init__(self, probe, points: int = 21, **watch_options):
        self.settings = WatchSettings(probe, points, **watch_options)

    @property
    def handle(self):
        """The `lrid.watch` handle while training runs (None on other processes)."""
        return self.settings.handle

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if model is None:
            raise ValueError("lrid: the Trainer did not pass its model to the callback")
        self.settings.start(model, next(model.parameters()).device, state.max_steps)

    def on_train_end(self, args, state, control, **kwargs):
        self.settings.stop()
