"""An independent numpy implementation of the observable statistics (spec §1), written from the
spec alone, used to check `lrid stats` and as the peer of the statistics benchmark.

Run as a script it times itself:  python reference_stats.py --bench weight:FILE act:FILE ...
"""

import math
import sys
import time

import numpy as np

FUNCTIONS = ("abs", "raw", "sq")
STATISTICS = ("kurtosis", "mean", "median", "norm", "skew", "thirdquartile", "var")


def nearest_index(m, q):
    """TF's "nearest" percentile: sort descending, k = round_half_even((m-1)(1-q/100))."""
    k = round((m - 1) * (1.0 - q / 100.0))  # Python's round is half-to-even
    k = min(max(k, 0), m - 1)
    return m - 1 - k  # the same element counted in ascending order


def function_stats(f, norm):
    """The seven statistics of the (already transformed) flat float64 array f."""
    m = f.size
    i50, i75 = nearest_index(m, 50), nearest_index(m, 75)
    part = np.partition(f, (i50, i75))
    median, q3 = part[i50], part[i75]
    if f.min() == f.max():  # a constant group: variance exactly 0
        mean, var = float(f[0]), 0.0
    else:
        mean = float(f.mean())
        d2 = (f - mean) ** 2
        var = float(d2.mean())
    if var > 0:
        skew = 3.0 * (mean - median) / math.sqrt(var)
        kurtosis = float((d2 * d2).mean()) / (var * var)
    else:
        skew = kurtosis = math.nan
    return {
        "kurtosis": kurtosis,
        "mean": mean,
        "median": float(median),
        "norm": float(norm),
        "skew": skew,
        "thirdquartile": float(q3),
        "var": var,
    }


def group_stats(x):
    """Statistics of one reduction group: dict function -> dict statistic -> value."""
    x = np.asarray(x, dtype=np.float64).ravel()
    sq = x * x
    return {
        "raw": function_stats(x, np.sqrt(sq.sum())),
        "abs": function_stats(np.abs(x), np.sqrt(sq.sum())),
        "sq": function_stats(sq, np.sqrt((sq * sq).sum())),
    }


def named(measure, groups):
    return {
        f"{measure}{fn}_{st}": groups[fn][st] for fn in FUNCTIONS for st in STATISTICS
    }


def weight_stats(w):
    """Every axis of the kernel reduced; norm = Frobenius norm of the whole kernel."""
    return named("weight", group_stats(w))


def act_stats(a):
    """Per example over all non-batch axes, then averaged over examples."""
    a = np.asarray(a)
    per = [named("act", group_stats(a[n])) for n in range(a.shape[0])]
    return {k: float(np.mean([p[k] for p in per])) for k in per[0]}


def gradavg_stats(g):
    g = np.asarray(g, dtype=np.float64).ravel()
    return {
        "gradavgabs_id": float(np.abs(g).mean()),
        "gradavgraw_id": float(g.mean()),
        "gradavgsq_id": float((g * g).mean()),
    }


MEASURES = {"weight": weight_stats, "act": act_stats, "gradavg": gradavg_stats}


def bench(specs, repeats=5):
    """Prints 'measure path seconds' (median of `repeats`) for each measure:path."""
    for spec in specs:
        measure, path = spec.split(":", 1)
        x = np.load(path)
        MEASURES[measure](x)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            MEASURES[measure](x)
            times.append(time.perf_counter() - t0)
        print(measure, path, sorted(times)[len(times) // 2], flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--bench":
        bench(sys.argv[2:])
    else:
        sys.exit(__doc__)
