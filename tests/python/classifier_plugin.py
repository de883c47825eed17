"""Loads an lrid classifier plugin (`.so`) the way the daemon does and calls it from Python.

The ABI is the one of `sdk/plugin/src/lib.rs` and `sdk/plugin/src/classifier.rs`: the library
exports `lrid_plugin_abi_version` (a `u32` in [MIN_ABI_VERSION, ABI_VERSION]) and
`lrid_plugin_entry() -> *const PluginInfo`; a classifier has kind 2 and its `vtable` points to a
`ClassifierVTable`. Data crosses as Arrow arrays through the Arrow C Data Interface:

- an array passed *in* is moved to the callee, which leaves a released struct behind; its schema
  is borrowed, so the caller releases the schema (and the array too, should the callee have
  failed before taking it: a struct whose `release` is still set is still the caller's);
- an array passed *out* is written into the caller's empty structs and owned by the caller
  (here pyarrow's import takes both).

    plugin = ClassifierPlugin(path)                      # .name .version .capabilities .grids
    data = plugin.prepare(X, categorical=0, points=0)
    model = data.fit(rows, labels, n_classes, {"seed": 1})
    model.predict_proba(X) ; model.save() ; plugin.load(b) ; model.importances()
    model = plugin.fit(X, y, config)                     # prepare + fit on every row

Errors (status 1) raise `PluginError` with the plugin's message; status 2 raises `Unsupported`.
"""

import ctypes
import json
import os

import numpy as np
import pyarrow as pa

# sdk/plugin/src/lib.rs
MIN_ABI_VERSION = 1
ABI_VERSION = 2
ABI_VERSION_SYMBOL = "lrid_plugin_abi_version"
ENTRY_SYMBOL = "lrid_plugin_entry"
STATUS_OK = 0
STATUS_ERROR = 1
STATUS_UNSUPPORTED = 2
KIND_LEARNING_RULE = 1
KIND_CLASSIFIER = 2
# sdk/plugin/src/classifier.rs
CAP_SAVE = 1
CAP_IMPORTANCES = 2
METADATA_CATEGORICAL = "lrid:categorical"
METADATA_POINTS = "lrid:points"

ERROR_CAP = 64 * 1024


class PluginError(Exception):
    """A vtable call answered STATUS_ERROR (an error or a panic); the plugin's message."""


class Unsupported(PluginError):
    """A vtable call answered STATUS_UNSUPPORTED: the plugin does not offer the operation."""


class PluginLoadError(Exception):
    """The library is not a loadable classifier plugin."""


# --- C structs -------------------------------------------------------------------------------


class ArrowSchema(ctypes.Structure):
    pass


class ArrowArray(ctypes.Structure):
    pass


SCHEMA_RELEASE = ctypes.CFUNCTYPE(None, ctypes.POINTER(ArrowSchema))
ARRAY_RELEASE = ctypes.CFUNCTYPE(None, ctypes.POINTER(ArrowArray))

ArrowSchema._fields_ = [
    ("format", ctypes.c_char_p),
    ("name", ctypes.c_char_p),
    ("metadata", ctypes.c_void_p),
    ("flags", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("children", ctypes.POINTER(ctypes.POINTER(ArrowSchema))),
    ("dictionary", ctypes.POINTER(ArrowSchema)),
    ("release", SCHEMA_RELEASE),
    ("private_data", ctypes.c_void_p),
]
ArrowArray._fields_ = [
    ("length", ctypes.c_int64),
    ("null_count", ctypes.c_int64),
    ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(ArrowArray))),
    ("dictionary", ctypes.POINTER(ArrowArray)),
    ("release", ARRAY_RELEASE),
    ("private_data", ctypes.c_void_p),
]


class PluginInfo(ctypes.Structure):
    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("kind", ctypes.c_uint32),
        ("name", ctypes.c_char_p),
        ("version", ctypes.c_char_p),
        ("torch_version", ctypes.c_char_p),
        ("vtable", ctypes.c_void_p),
    ]


class ErrorBuf(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.POINTER(ctypes.c_uint8)),
        ("cap", ctypes.c_size_t),
        ("len", ctypes.c_size_t),
    ]


_A = ctypes.POINTER(ArrowArray)
_S = ctypes.POINTER(ArrowSchema)
_E = ctypes.POINTER(ErrorBuf)
_VP = ctypes.c_void_p
_OUT = ctypes.POINTER(ctypes.c_void_p)
_I32 = ctypes.c_int32


class ClassifierVTable(ctypes.Structure):
    _fields_ = [
        ("capabilities", ctypes.c_uint32),
        ("grids", ctypes.c_char_p),
        ("prepare", ctypes.CFUNCTYPE(_I32, _A, _S, _OUT, _E)),
        ("free_data", ctypes.CFUNCTYPE(None, _VP)),
        (
            "fit",
            ctypes.CFUNCTYPE(_I32, ctypes.c_char_p, _VP, _A, _S, _A, _S, ctypes.c_uint32, _OUT, _E),
        ),
        ("free_model", ctypes.CFUNCTYPE(None, _VP)),
        ("predict_proba", ctypes.CFUNCTYPE(_I32, _VP, _A, _S, _A, _S, _E)),
        ("save", ctypes.CFUNCTYPE(_I32, _VP, _A, _S, _E)),
        ("load", ctypes.CFUNCTYPE(_I32, _A, _S, _OUT, _E)),
        ("importances", ctypes.CFUNCTYPE(_I32, _VP, _A, _S, _E)),
    ]


# --- Arrow in and out ------------------------------------------------------------------------


def _addr(struct):
    return ctypes.addressof(struct)


class _In:
    """An array passed in: exported into fresh structs; after the call, whatever the callee did
    not take is released here (the schema always, the array if the callee left it set)."""

    def __init__(self, array, field):
        self.array = ArrowArray()
        self.schema = ArrowSchema()
        field._export_to_c(_addr(self.schema))
        try:
            array._export_to_c(_addr(self.array))
        except BaseException:
            self.schema.release(ctypes.byref(self.schema))
            raise

    def __enter__(self):
        return ctypes.byref(self.array), ctypes.byref(self.schema)

    def __exit__(self, *exc):
        if self.array.release:
            self.array.release(ctypes.byref(self.array))
        if self.schema.release:
            self.schema.release(ctypes.byref(self.schema))
        return False


class _Out:
    """Empty structs a call writes an array into; `take()` imports it into pyarrow (which then
    owns it). Left unimported (an error), it is released on exit."""

    def __init__(self):
        self.array = ArrowArray()
        self.schema = ArrowSchema()

    def __enter__(self):
        return self

    def ptrs(self):
        return ctypes.byref(self.array), ctypes.byref(self.schema)

    def take(self):
        if not self.array.release or not self.schema.release:
            raise PluginError("the plugin reported success but wrote no Arrow array")
        return pa.Array._import_from_c(_addr(self.array), _addr(self.schema))

    def __exit__(self, *exc):
        if self.array.release:
            self.array.release(ctypes.byref(self.array))
        if self.schema.release:
            self.schema.release(ctypes.byref(self.schema))
        return False


def matrix_field(ncols, categorical=0, points=0):
    item = pa.field("item", pa.float64(), nullable=False)
    return pa.field(
        "features",
        pa.list_(item, ncols),
        nullable=False,
        metadata={METADATA_CATEGORICAL: str(int(categorical)), METADATA_POINTS: str(int(points))},
    )


def matrix_array(x, categorical=0, points=0):
    """A 2-D float64 matrix as (FixedSizeList<Float64, ncols> array, field with the layout)."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if x.ndim != 2:
        raise ValueError(f"a feature matrix must be 2-D; got shape {x.shape}")
    rows, cols = x.shape
    field = matrix_field(cols, categorical, points)
    values = pa.array(x.reshape(-1), type=pa.float64())
    array = pa.FixedSizeListArray.from_arrays(values, type=field.type)
    assert len(array) == rows
    return array, field


def u32_array(values, name):
    values = np.ascontiguousarray(np.asarray(values))
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {values.shape}")
    if values.size and (values.min() < 0 or values.max() > np.iinfo(np.uint32).max):
        raise ValueError(f"{name} do not fit in uint32")
    return pa.array(values.astype(np.uint32), type=pa.uint32()), pa.field(
        name, pa.uint32(), nullable=False
    )


def matrix_to_numpy(array):
    """A FixedSizeList<Float64> array as a rows × width numpy matrix."""
    if not pa.types.is_fixed_size_list(array.type):
        raise PluginError(f"expected a FixedSizeList<Float64> array; got {array.type}")
    width = array.type.list_size
    flat = array.flatten().to_numpy(zero_copy_only=False)
    return np.array(flat, dtype=np.float64).reshape(len(array), width)


# --- the plugin ------------------------------------------------------------------------------


class ClassifierPlugin:
    """A loaded classifier plugin."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise PluginLoadError(f"{self.path}: no such file")
        self._lib = ctypes.CDLL(self.path, mode=os.RTLD_NOW | os.RTLD_LOCAL)
        try:
            abi = ctypes.c_uint32.in_dll(self._lib, ABI_VERSION_SYMBOL).value
        except ValueError:
            raise PluginLoadError(f"{self.path}: no symbol {ABI_VERSION_SYMBOL}") from None
        if not MIN_ABI_VERSION <= abi <= ABI_VERSION:
            raise PluginLoadError(
                f"{self.path}: plugin ABI version {abi}, not in "
                f"[{MIN_ABI_VERSION}, {ABI_VERSION}]"
            )
        try:
            entry = getattr(self._lib, ENTRY_SYMBOL)
        except AttributeError:
            raise PluginLoadError(f"{self.path}: no symbol {ENTRY_SYMBOL}") from None
        entry.restype = ctypes.POINTER(PluginInfo)
        entry.argtypes = []
        info_ptr = entry()
        if not info_ptr:
            raise PluginLoadError(f"{self.path}: {ENTRY_SYMBOL} returned null")
        info = info_ptr.contents
        self.abi_version = abi
        if info.abi_version != abi:
            raise PluginLoadError(
                f"{self.path}: PluginInfo.abi_version {info.abi_version} differs from "
                f"{ABI_VERSION_SYMBOL} {abi}"
            )
        if info.kind != KIND_CLASSIFIER:
            raise PluginLoadError(
                f"{self.path}: plugin kind {info.kind}, not a classifier ({KIND_CLASSIFIER})"
            )
        if not info.vtable:
            raise PluginLoadError(f"{self.path}: null vtable")
        self.kind = info.kind
        self.name = info.name.decode("utf-8")
        self.version = info.version.decode("utf-8")
        self.torch_version = info.torch_version.decode() if info.torch_version else None
        self._vt = ctypes.cast(info.vtable, ctypes.POINTER(ClassifierVTable)).contents
        self.capabilities = int(self._vt.capabilities)
        grids = self._vt.grids.decode("utf-8") if self._vt.grids else "{}"
        self.grids_json = grids
        self.grids = json.loads(grids)

    def __repr__(self):
        return f"ClassifierPlugin({self.name!r} {self.version}, {self.path})"

    # A call with an ErrorBuf; raises on a non-OK status.
    def _call(self, what, fn, *args):
        storage = (ctypes.c_uint8 * ERROR_CAP)()
        err = ErrorBuf(ctypes.cast(storage, ctypes.POINTER(ctypes.c_uint8)), ERROR_CAP, 0)
        status = fn(*args, ctypes.byref(err))
        if status == STATUS_OK:
            return
        if status == STATUS_UNSUPPORTED:
            raise Unsupported(f"{self.name}: {what} is not supported")
        message = bytes(storage[: min(err.len, ERROR_CAP)]).decode("utf-8", errors="replace")
        if status == STATUS_ERROR:
            raise PluginError(message)
        raise PluginError(f"{self.name}: {what} returned unknown status {status}: {message}")

    def prepare(self, x, categorical=0, points=0):
        array, field = matrix_array(x, categorical, points)
        out = ctypes.c_void_p()
        with _In(array, field) as (a, s):
            self._call("prepare", self._vt.prepare, a, s, ctypes.byref(out))
        if not out.value:
            raise PluginError("prepare reported success but gave a null pointer")
        return Data(self, out.value, np.shape(x))

    def load(self, data: bytes):
        array = pa.array([bytes(data)], type=pa.binary())
        field = pa.field("model", pa.binary(), nullable=False)
        out = ctypes.c_void_p()
        with _In(array, field) as (a, s):
            self._call("load", self._vt.load, a, s, ctypes.byref(out))
        if not out.value:
            raise PluginError("load reported success but gave a null pointer")
        return Model(self, out.value)

    def fit(self, x, y, config=None, categorical=0, points=0, n_classes=None):
        """prepare + fit on every row of x with labels y (0..n_classes)."""
        y = np.asarray(y)
        if n_classes is None:
            n_classes = int(y.max()) + 1
        with self.prepare(x, categorical, points) as data:
            return data.fit(np.arange(len(y), dtype=np.uint32), y, n_classes, config or {})


class _Handle:
    _free_name = None

    def __init__(self, plugin, ptr):
        self.plugin = plugin  # keeps the library (and its vtable) alive
        self._ptr = ptr

    @property
    def ptr(self):
        if not self._ptr:
            raise ValueError(f"{type(self).__name__} already freed")
        return self._ptr

    def free(self):
        if self._ptr:
            ptr, self._ptr = self._ptr, None
            getattr(self.plugin._vt, self._free_name)(ptr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()
        return False

    def __del__(self):
        try:
            self.free()
        except Exception:
            pass


class Data(_Handle):
    """What `prepare` made of a training matrix."""

    _free_name = "free_data"

    def __init__(self, plugin, ptr, shape):
        super().__init__(plugin, ptr)
        self.shape = tuple(shape)

    def fit(self, rows, labels, n_classes, config=None):
        config = {} if config is None else config
        text = config if isinstance(config, str) else json.dumps(config)
        rows_a, rows_f = u32_array(rows, "rows")
        labels_a, labels_f = u32_array(labels, "labels")
        out = ctypes.c_void_p()
        with _In(rows_a, rows_f) as (ra, rs), _In(labels_a, labels_f) as (la, ls):
            self.plugin._call(
                "fit",
                self.plugin._vt.fit,
                text.encode("utf-8"),
                self.ptr,
                ra,
                rs,
                la,
                ls,
                ctypes.c_uint32(int(n_classes)),
                ctypes.byref(out),
            )
        if not out.value:
            raise PluginError("fit reported success but gave a null pointer")
        return Model(self.plugin, out.value)


class Model(_Handle):
    """A fitted (or loaded) model."""

    _free_name = "free_model"

    def predict_proba(self, x, categorical=0, points=0):
        array, field = matrix_array(x, categorical, points)
        with _In(array, field) as (a, s), _Out() as out:
            self.plugin._call("predict_proba", self.plugin._vt.predict_proba, self.ptr, a, s,
                              *out.ptrs())
            result = out.take()
        p = matrix_to_numpy(result)
        if p.shape[0] != array.__len__():
            raise PluginError(f"predict_proba gave {p.shape[0]} rows for {len(array)}")
        return p

    def predict(self, x, categorical=0, points=0):
        return self.predict_proba(x, categorical, points).argmax(axis=1)

    def save(self) -> bytes:
        with _Out() as out:
            self.plugin._call("save", self.plugin._vt.save, self.ptr, *out.ptrs())
            result = out.take()
        if not pa.types.is_binary(result.type) or len(result) != 1 or result.null_count:
            raise PluginError(f"save gave {len(result)} values of {result.type}, not one Binary")
        return result[0].as_py()

    def importances(self):
        with _Out() as out:
            self.plugin._call("importances", self.plugin._vt.importances, self.ptr, *out.ptrs())
            result = out.take()
        return matrix_to_numpy(result)


# --- synthetic data shaped like lrid's ---------------------------------------------------------


def trajectory_dataset(n_rows, n_stats, n_points, n_classes=4, n_groups=3, signal=2.0, seed=0):
    """A data set shaped like `lrid dataset export`'s: `n_groups` one-hot columns (the
    architecture group), then `n_stats` statistics × `n_points` trajectory points,
    statistic-major (column `n_groups + k·n_points + t`). Each class bends every statistic's
    trajectory a little differently (a saturating curve of class-dependent amplitude and rate,
    scaled by the group), so the signal is spread thinly over many correlated columns; each row
    adds its own level per statistic, a drift, and point noise. Returns (X float64, y int64),
    classes balanced."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n_rows) % n_classes)
    g = rng.integers(0, n_groups, n_rows)
    t = np.linspace(0.0, 1.0, n_points)
    amp = rng.normal(0.0, 1.0, (n_classes, n_stats))
    rate = rng.uniform(0.5, 4.0, (n_classes, n_stats))
    curves = amp[:, :, None] * (1.0 - np.exp(-rate[:, :, None] * t))  # classes × stats × points
    gain = np.linspace(0.6, 1.4, n_groups)
    offset = rng.normal(0.0, 1.0, (n_groups, n_stats))
    x = signal * gain[g][:, None, None] * curves[y] + offset[g][:, :, None]
    x += rng.normal(0.0, 1.0, (n_rows, n_stats, 1))  # the row's level
    x += rng.normal(0.0, 1.0, (n_rows, n_stats, 1)) * t  # its drift
    x += rng.normal(0.0, 1.0, (n_rows, n_stats, n_points))  # point noise
    onehot = np.eye(n_groups)[g]
    return np.hstack([onehot, x.reshape(n_rows, n_stats * n_points)]), y.astype(np.int64)
