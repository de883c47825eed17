"""`lrid stats` against the independent numpy implementation, and its errors on bad files."""

import json
import math
import subprocess

import numpy as np
import pytest

import reference_stats as ref

REL = 1e-6
ABS = 1e-9


def run(lrid_bin, *args):
    return subprocess.run([lrid_bin, *map(str, args)], capture_output=True, text=True)


def lrid_stats(lrid_bin, path, measure, *extra):
    p = run(lrid_bin, "stats", path, "--measure", measure, "--format", "json", *extra)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("\n") == 1, "one JSON object on one line"
    return json.loads(p.stdout)


def assert_agrees(got, want):
    assert list(got) == list(want), "names and their order"
    for name, w in want.items():
        g = got[name]
        if w is None or (isinstance(w, float) and math.isnan(w)):
            assert g is None, f"{name}: expected null (NaN), got {g}"
            continue
        assert g is not None, f"{name}: got null, expected {w}"
        assert abs(g - w) <= max(REL * abs(w), ABS), f"{name}: lrid {g!r} vs numpy {w!r}"


def rng(seed):
    return np.random.default_rng(seed)


WEIGHTS = {
    "n1": np.array([0.7], dtype=np.float32),
    "n2": np.array([0.3, -1.2], dtype=np.float32),
    "n3": np.array([2.0, -1.0, 0.5], dtype=np.float32),
    "n4": np.array([4.0, 1.0, 3.0, 2.0], dtype=np.float32),
    "n5": np.array([-0.5, 0.1, 0.9, -2.0, 0.3], dtype=np.float32),
    "n6_ties": np.array([1, 1, 2, 2, 3, 3], dtype=np.float32),
    "dense": rng(1).normal(0, 0.05, (64, 10)).astype(np.float32),
    "conv": rng(2).normal(0, 0.02, (16, 8, 3, 3)).astype(np.float32),
    "conv_f64": rng(3).normal(0.01, 0.3, (32, 16, 5, 5)),
    "big_parallel": rng(4).standard_t(3, (600, 600)).astype(np.float32),
    "integers": rng(5).integers(-4, 4, (50, 51)).astype(np.float32),
    "constant": np.full((5, 7), 0.1, dtype=np.float32),
    "constant_magnitude": np.array([-2.0, 2.0, 2.0, -2.0, 2.0], dtype=np.float32),
    "zeros": np.zeros((3, 3), dtype=np.float32),
    "scalar": np.array(3.5, dtype=np.float64),
}


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_weight_statistics_agree_with_numpy(lrid_bin, tmp_path, name):
    w = WEIGHTS[name]
    path = tmp_path / f"{name}.npy"
    np.save(path, w)
    assert_agrees(lrid_stats(lrid_bin, path, "weight"), ref.weight_stats(w))


ACTIVATIONS = {
    "1x1": np.array([[0.25]], dtype=np.float32),
    "2x3": rng(6).normal(size=(2, 3)).astype(np.float32),
    "5x4": rng(7).normal(size=(5, 4)).astype(np.float32),
    "5x5_units": rng(8).normal(size=(4, 5)).astype(np.float32),
    "conv_nchw": np.maximum(rng(9).normal(size=(3, 4, 5, 5)), 0).astype(np.float32),
    "batch": rng(10).gamma(2.0, 1.0, (17, 8, 8, 16)).astype(np.float32),
    "wide_rows": rng(11).normal(0.2, 1.0, (3, 70_000)).astype(np.float32),
    "f64": rng(12).normal(size=(6, 2, 3)),
    # A dead ReLU unit row: constant example → NaN skew and kurtosis → null averages.
    "dead_row": np.vstack([np.zeros((1, 9)), rng(13).normal(size=(2, 9))]).astype(np.float32),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_statistics_agree_with_numpy(lrid_bin, tmp_path, name):
    a = ACTIVATIONS[name]
    path = tmp_path / f"{name}.npy"
    np.save(path, a)
    assert_agrees(lrid_stats(lrid_bin, path, "act"), ref.act_stats(a))


@pytest.mark.parametrize(
    "g",
    [
        np.array([0.5], dtype=np.float32),
        np.array([1.0, -3.0, 2.0]),
        rng(14).normal(0.01, 0.1, 1000).astype(np.float32),
        rng(15).normal(size=(7, 1)).astype(np.float32),
    ],
    ids=["one", "three_f64", "thousand", "column"],
)
def test_gradavg_agrees_with_numpy(lrid_bin, tmp_path, g):
    path = tmp_path / "g.npy"
    np.save(path, g)
    assert_agrees(lrid_stats(lrid_bin, path, "gradavg"), ref.gradavg_stats(g))


def test_constant_tensor_gives_zero_variance_and_null_shape_statistics(lrid_bin, tmp_path):
    path = tmp_path / "c.npy"
    np.save(path, np.full((4, 4), -1.5, dtype=np.float32))
    got = lrid_stats(lrid_bin, path, "weight")
    for fn in ("raw", "abs", "sq"):
        assert got[f"weight{fn}_var"] == 0.0
        assert got[f"weight{fn}_skew"] is None
        assert got[f"weight{fn}_kurtosis"] is None
    assert got["weightraw_mean"] == -1.5 and got["weightsq_median"] == 2.25


def test_measurement_model_keeps_the_right_number_of_units(lrid_bin, tmp_path):
    # Every kept unit of this kernel is a distinct power of two: the sum of the kept values
    # (mean × count) names the units kept. ⌈0.3·20⌉ = 6 units.
    w = (2.0 ** np.arange(20)).astype(np.float64)
    path = tmp_path / "w.npy"
    np.save(path, w)
    full = lrid_stats(lrid_bin, path, "weight")
    same = lrid_stats(lrid_bin, path, "weight", "--unit-fraction", "1.0")
    assert full == same
    subsets = set()
    for seed in (0, 1, 2):
        got = lrid_stats(lrid_bin, path, "weight", "--unit-fraction", "0.3", "--seed", seed)
        again = lrid_stats(lrid_bin, path, "weight", "--unit-fraction", "0.3", "--seed", seed)
        assert got == again, "the same seed keeps the same units"
        total = round(got["weightraw_mean"] * 6)
        assert bin(total).count("1") == 6, "six distinct units"
        subsets.add(total)
    assert len(subsets) == 3, "other seeds keep other units"
    # One unit at least, even for a tiny fraction.
    got = lrid_stats(lrid_bin, path, "weight", "--unit-fraction", "0.001")
    assert got["weightraw_var"] == 0.0 and got["weightraw_mean"] in set(w)


def test_noise_changes_the_statistics_as_expected(lrid_bin, tmp_path):
    path = tmp_path / "z.npy"
    np.save(path, np.zeros((200, 500), dtype=np.float32))
    got = lrid_stats(lrid_bin, path, "weight", "--noise-std", "0.5", "--seed", "3")
    assert abs(got["weightraw_var"] - 0.25) < 0.005
    assert abs(got["weightraw_mean"]) < 0.005
    assert abs(got["weightraw_kurtosis"] - 3.0) < 0.05
    got = lrid_stats(lrid_bin, path, "act", "--noise-std", "2.0")
    assert abs(got["actraw_var"] - 4.0) < 0.05


def test_table_format_lists_every_statistic(lrid_bin, tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, WEIGHTS["conv"])
    p = run(lrid_bin, "stats", path, "--measure", "weight")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "shape [16, 8, 3, 3], f32, measurement model ideal" in lines[0]
    rows = [l.split() for l in lines[2:]]
    assert len(rows) == 21
    assert sum(1 for r in rows if r[-1] == "yes") == 13, "13 admissible weight statistics"


def write_header_only(path, descr, shape, fortran=False):
    """A .npy file whose header announces data that is not there."""
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
        descr,
        fortran,
        shape,
    )
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())


def bad_files(tmp_path):
    ints = tmp_path / "ints.npy"
    np.save(ints, np.arange(6, dtype=np.int32))
    fortran = tmp_path / "fortran.npy"
    np.save(fortran, np.asfortranarray(np.ones((3, 4), dtype=np.float32)))
    truncated = tmp_path / "truncated.npy"
    np.save(truncated, np.ones((100, 100), dtype=np.float32))
    truncated.write_bytes(truncated.read_bytes()[:1000])
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"this is not a numpy file at all")
    empty_data = tmp_path / "no_data.npy"
    write_header_only(empty_data, "<f8", "(5,)")
    nan = tmp_path / "nan.npy"
    a = np.ones((2, 3, 4), dtype=np.float32)
    a[1, 2, 0] = np.nan
    a[1, 2, 3] = np.inf
    np.save(nan, a)
    return [
        (ints, "weight", "dtype '<i4'"),
        (fortran, "weight", "Fortran order"),
        (truncated, "weight", "truncated"),
        (garbage, "weight", "not a readable .npy file"),
        (empty_data, "weight", "truncated"),
        (tmp_path / "missing.npy", "weight", "cannot open"),
        (nan, "weight", "2 non-finite value(s) of 24 (1 NaN, 1 infinite); first at index [1, 2, 0]"),
        (nan, "act", "first at example 1 of the pass (batch row 1), unit 8"),
    ]


def test_bad_files_give_one_clear_error_line(lrid_bin, tmp_path):
    for path, measure, expect in bad_files(tmp_path):
        p = run(lrid_bin, "stats", path, "--measure", measure)
        assert p.returncode != 0, f"{path.name}: exit status"
        assert p.stdout == "", f"{path.name}: nothing on stdout"
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, f"{path.name}: one line, got {p.stderr!r}"
        assert lines[0].startswith("error: "), lines[0]
        assert expect in lines[0], f"{path.name}: {lines[0]!r} should mention {expect!r}"


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--measure", "gradavg", "--noise-std", "0.1"], "cannot be applied to per-example gradavg"),
        (["--measure", "weight", "--unit-fraction", "0"], "unit fraction must lie in (0, 1]"),
        (["--measure", "weight", "--unit-fraction", "1.5"], "unit fraction must lie in (0, 1]"),
        (["--measure", "weight", "--noise-std", "-1"], "noise standard deviation"),
        (["--measure", "act"], "activations need a leading examples axis"),
    ],
)
def test_bad_arguments_are_refused(lrid_bin, tmp_path, args, expect):
    path = tmp_path / "s.npy"
    np.save(path, np.array(1.0))
    p = run(lrid_bin, "stats", path, *args)
    assert p.returncode != 0
    assert expect in p.stderr, p.stderr


def test_gradavg_must_be_one_scalar_per_example(lrid_bin, tmp_path):
    path = tmp_path / "g.npy"
    np.save(path, np.ones((4, 3), dtype=np.float32))
    p = run(lrid_bin, "stats", path, "--measure", "gradavg")
    assert p.returncode != 0 and "one scalar per example" in p.stderr


def test_version_reports_lrid_torch_and_cuda(lrid_bin):
    p = run(lrid_bin, "--version")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("lrid ")
    assert lines[1].startswith("torch 2.11.0")
    assert lines[2].startswith("cuda ")
