"""Benchmark (not a test): lrid's classifier plugins against scikit-learn, in one run.

    python tests/python/bench_classifiers.py [--dataset FILE.parquet] [--repeats 3] [--rows N]

- random forest: ours (`liblrid_classifier_random_forest.so`) vs `RandomForestClassifier(
  n_jobs=-1)`, both 100 trees, max_features "sqrt", gini;
- linear SVM: ours (`liblrid_classifier_linear_svm.so`, C = 1, no PCA) vs `LinearSVC(C=1,
  dual=True)` (squared hinge, tol 1e-4, max_iter 1000: sklearn's defaults and ours), on the
  continuous columns z-scored with the training rows' mean and std (the one-hot columns as
  they are);

on (a) a synthetic set of the paper's size, 20,736 rows × 507 features, 4 classes (3 one-hot
columns, then 21 statistics × 24 points of trajectories whose class signal is spread thinly over
all of them), 75/25 stratified split; (b) with `--dataset`, a Parquet file written by
`lrid dataset export`: label = `learning_rule`, features = the `grp_id*` columns (one-hot,
categorical) followed by every other float64 column, 75/25 stratified split.

Fit time of ours includes `prepare` (the forest's binning). Every timing is the median of
`--repeats` runs (default 3); accuracy is that of the last run. Plugins are found as by the
tests: `$LRID_PLUGIN_LIB_DIR` (folders joined by `:`), else `target/release/`.
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from classifier_plugin import ClassifierPlugin, trajectory_dataset  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


def find_plugin(stem):
    name = f"liblrid_classifier_{stem}.so"
    env = os.environ.get("LRID_PLUGIN_LIB_DIR")
    dirs = [pathlib.Path(d) for d in env.split(os.pathsep) if d] if env else []
    dirs = dirs or [ROOT / "target" / "release"]
    for d in dirs:
        if (d / name).exists():
            return d / name
    sys.exit(f"{dirs[0] / name} does not exist: build it first (make build)")


def synthetic(rows):
    x, y = trajectory_dataset(rows, 21, 24, n_classes=4, n_groups=3, signal=0.75, seed=2020)
    return x, y, 3, 24


def from_parquet(path):
    import pyarrow.parquet as pq
    import pyarrow as pa

    table = pq.read_table(path)
    names = table.column_names
    if "learning_rule" not in names:
        sys.exit(f"{path}: no column learning_rule")
    groups = sorted(n for n in names if n.startswith("grp_id"))
    others = [
        n for n in names
        if n not in groups and n != "learning_rule" and pa.types.is_float64(table.schema.field(n).type)
    ]
    features = groups + others
    labels = table.column("learning_rule").to_pylist()
    classes = sorted(set(labels))
    y = np.array([classes.index(v) for v in labels], dtype=np.int64)
    x = np.column_stack(
        [table.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in features]
    )
    keep = np.isfinite(x).all(axis=1)
    if not keep.all():
        print(f"  {path}: dropping {np.sum(~keep)} rows with non-finite features")
        x, y = x[keep], y[keep]
    print(f"  {path}: {x.shape[0]} rows, {len(groups)} categorical + {len(others)} continuous "
          f"features, classes {classes}")
    return x, y, len(groups), 0


def split(x, y, seed=0):
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)


def standardise(x_train, x_test, categorical):
    mu = x_train[:, categorical:].mean(axis=0)
    sd = x_train[:, categorical:].std(axis=0)
    sd[sd == 0] = 1.0
    a, b = x_train.copy(), x_test.copy()
    a[:, categorical:] = (a[:, categorical:] - mu) / sd
    b[:, categorical:] = (b[:, categorical:] - mu) / sd
    return a, b


def timed(repeats, fit, predict):
    """Median fit and predict seconds over `repeats` runs, and the last run's predictions."""
    fits, predicts = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        model = fit()
        fits.append(time.perf_counter() - t)
        t = time.perf_counter()
        pred = predict(model)
        predicts.append(time.perf_counter() - t)
        free = getattr(model, "free", None)
        if free:
            free()
    return statistics.median(fits), statistics.median(predicts), pred


def bench_set(label, x, y, categorical, points, rf, svm, repeats):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.svm import LinearSVC

    x_train, x_test, y_train, y_test = split(x, y)
    k = int(y.max()) + 1
    rows = np.arange(len(y_train), dtype=np.uint32)
    results = []

    def ours_fit(plugin, xt, config):
        def fit():
            with plugin.prepare(xt, categorical=categorical, points=points) as data:
                return data.fit(rows, y_train, k, config)

        return fit

    def ours_predict(xt):
        return lambda m: m.predict_proba(xt, categorical=categorical, points=points).argmax(1)

    print(f"[{label}] random forest, ours ...", flush=True)
    rf_config = {"n_estimators": 100, "max_features": "sqrt", "criterion": "gini", "seed": 0}
    results.append((label, "random forest", "lrid", *timed(
        repeats, ours_fit(rf, x_train, rf_config), ours_predict(x_test))))
    print(f"[{label}] random forest, sklearn ...", flush=True)
    results.append((label, "random forest", "sklearn", *timed(
        repeats,
        lambda: RandomForestClassifier(
            n_estimators=100, max_features="sqrt", criterion="gini", n_jobs=-1, random_state=0
        ).fit(x_train, y_train),
        lambda m: m.predict(x_test),
    )))

    z_train, z_test = standardise(x_train, x_test, categorical)
    print(f"[{label}] linear SVM, ours ...", flush=True)
    svm_config = {"C": 1.0, "tol": 1e-4, "max_iter": 1000, "seed": 0}
    results.append((label, "linear SVM", "lrid", *timed(
        repeats, ours_fit(svm, z_train, svm_config), ours_predict(z_test))))
    print(f"[{label}] linear SVM, sklearn ...", flush=True)
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        results.append((label, "linear SVM", "sklearn", *timed(
            repeats,
            lambda: LinearSVC(
                C=1.0, dual=True, loss="squared_hinge", tol=1e-4, max_iter=1000, random_state=0
            ).fit(z_train, y_train),
            lambda m: m.predict(z_test),
        )))
    return [(a, b, c, f, p, float(np.mean(pred == y_test))) for a, b, c, f, p, pred in results]


def print_table(results):
    header = (f"{'data set':<28} {'classifier':<14} {'impl':<8} {'fit s':>9} {'predict s':>10} "
              f"{'accuracy':>9} {'fit sk/lrid':>12} {'pred sk/lrid':>13} {'acc lrid-sk':>12}")
    print()
    print(header)
    print("-" * len(header))
    by_key = {(r[0], r[1], r[2]): r for r in results}
    for data_set, classifier, impl, fit, predict, acc in results:
        ratio = ["", "", ""]
        if impl == "sklearn":
            ours = by_key[(data_set, classifier, "lrid")]
            ratio = [f"{fit / ours[3]:.2f}x", f"{predict / ours[4]:.2f}x",
                     f"{(ours[5] - acc) * 100:+.2f} pt"]
        print(f"{data_set:<28} {classifier:<14} {impl:<8} {fit:>9.3f} {predict:>10.4f} "
              f"{acc:>9.4f} {ratio[0]:>12} {ratio[1]:>13} {ratio[2]:>12}")
    print()
    print("sk/lrid > 1: lrid is faster (sklearn's seconds / lrid's seconds); "
          "acc lrid-sk: accuracy points lrid minus sklearn.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", help="a Parquet file written by `lrid dataset export`")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the median of these")
    parser.add_argument("--rows", type=int, default=20_736, help="rows of the synthetic set")
    parser.add_argument("--no-synthetic", action="store_true", help="only the --dataset file")
    args = parser.parse_args()

    rf = ClassifierPlugin(find_plugin("random_forest"))
    svm = ClassifierPlugin(find_plugin("linear_svm"))
    print(f"{rf} and {svm}; {os.cpu_count()} CPUs; median of {args.repeats} run(s)")
    results = []
    if not args.no_synthetic:
        x, y, categorical, points = synthetic(args.rows)
        results += bench_set(f"synthetic {x.shape[0]}x{x.shape[1]}", x, y, categorical, points,
                             rf, svm, args.repeats)
        print_table(results)
    if args.dataset:
        x, y, categorical, points = from_parquet(args.dataset)
        label = f"{pathlib.Path(args.dataset).name} {x.shape[0]}x{x.shape[1]}"
        results += bench_set(label[:28], x, y, categorical, points, rf, svm, args.repeats)
        print_table(results)


if __name__ == "__main__":
    main()
