"""What the framework callbacks share: the probe moved to the model's device, and the watch
started on the process that records."""

from __future__ import annotations


def to_device(probe, device):
    """The probe (a tensor, a tuple/list of them or a dict of them) on `device`."""
    if hasattr(probe, "to"):
        return probe.to(device)
    if isinstance(probe, dict):
        return {k: to_device(v, device) for k, v in probe.items()}
    if isinstance(probe, (tuple, list)):
        return type(probe)(to_device(v, device) for v in probe)
    return probe


class WatchSettings:
    """The `lrid.watch` arguments a callback was given (all but the model and the steps)."""

    def __init__(self, probe, points=21, server=None, run_id=None, labels=None, **watch_options):
        self.probe = probe
        self.points = points
        self.server = server
        self.run_id = run_id
        self.labels = labels
        self.options = watch_options
        self.handle = None

    def start(self, model, device, total_steps):
        from .._watch import watch

        self.handle = watch(model, to_device(self.probe, device), total_steps=int(total_steps),
                            points=self.points, server=self.server, run_id=self.run_id,
                            labels=self.labels, **self.options)
        return self.handle

    def stop(self):
        if self.handle is not None:
            handle, self.handle = self.handle, None
            handle.close()
