"""The ingest protocol's wire constants and message bodies (Rust: `sdk/protocol`, the source of
truth; a unit test there checks that every constant below equals its Rust twin)."""

from __future__ import annotations

import json
import re

PROTOCOL_VERSION = 1
ACTION_OPEN_RUN = "lrid.open_run"
ACTION_COMPLETE_POINT = "lrid.complete_point"
ACTION_CLOSE_RUN = "lrid.close_run"
SNAPSHOT_TYPE_URL = "type.lrid.dev/lrid.v1.Snapshot"
VALUE_COLUMN = "value"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHUNK_VALUES = 1 << 20
MAX_DIAGNOSTIC_NAME = 64

LABEL_KEYS = (
    "learning_rule",
    "architecture",
    "task",
    "batch_size",
    "model_seed",
    "data_seed",
    "hyperparameters",
)
MEASURES = ("weight", "act", "gradavg")
POSITIONS = ("early", "middle", "deep")

_RUN_ID = re.compile(r"[A-Za-z0-9._:/-]{1,128}")


def validate_run_id(run_id: str) -> None:
    """Raises ValueError unless `run_id` is 1 to 128 characters of `[A-Za-z0-9._:/-]`."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"invalid run id {run_id!r}: use 1 to 128 characters among letters, digits and . _ : / -"
        )


def validate_labels(labels: dict | None) -> dict:
    """The labels of a run, checked: only the protocol's keys, each of the right type."""
    labels = dict(labels or {})
    unknown = sorted(set(labels) - set(LABEL_KEYS))
    if unknown:
        raise ValueError(f"unknown label(s) {unknown}: the labels are {list(LABEL_KEYS)}")
    for key in ("learning_rule", "architecture", "task"):
        if labels.get(key) is not None and not isinstance(labels[key], str):
            raise ValueError(f"label {key!r} must be a string; got {labels[key]!r}")
    for key in ("batch_size", "model_seed", "data_seed"):
        v = labels.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"label {key!r} must be an integer; got {v!r}")
    if labels.get("batch_size") is not None and not 0 <= labels["batch_size"] < 2**32:
        raise ValueError(f"label 'batch_size' must fit in 32 bits; got {labels['batch_size']}")
    return {k: v for k, v in labels.items() if v is not None}


def position_of(index: int, count: int) -> str:
    """The spec's rule (§1.6) for layer `index` of `count`: thirds, the last absorbing the rest."""
    g = count // 3
    if index < g:
        return "early"
    if index < 2 * g:
        return "middle"
    return "deep"


def point_steps(total_steps: int, points: int) -> list[int]:
    """The training step of each trajectory point: round(k · steps / (points − 1)), halves away
    from zero (as `lrid train` places them)."""
    if points < 2:
        raise ValueError(f"a trajectory needs at least 2 points (initialisation and the end); got {points}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1; got {total_steps}")
    return [int(k * total_steps / (points - 1) + 0.5) for k in range(points)]


def protobuf_any(type_url: str, value: bytes) -> bytes:
    """A protobuf `Any` (field 1 `type_url`, field 2 `value`): the snapshot descriptor's command."""

    def field(number: int, payload: bytes) -> bytes:
        n, out = len(payload), bytearray([number << 3 | 2])
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out) + payload

    return field(1, type_url.encode()) + field(2, value)


def body(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()
