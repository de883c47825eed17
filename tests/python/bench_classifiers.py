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

Fit time of ours includes `prepare` (the forest's binning). Ours and scikit-learn's run in turn
(ours, sklearn, ours, sklearn, …), `--repeats` rounds (default 3) after one untimed warm-up round;
every timing is the median over rounds, every ratio the median of the rounds' ratios (pairing
keeps a ratio meaningful while the machine's speed drifts); accuracy is that of the last round. Plugins are found as by the
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


def run_once(fit, predict):
    """(fit seconds, predict seconds, predictions) of one fit and predict."""
    t = time.perf_counter()
    model = fit()
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    pred = predict(model)
    predict_s = time.perf_counter() - t
    free = getattr(model, "free", None)
    if free:
        free()
    return fit_s, predict_s, pred


def paired(repeats, ours, theirs, warmup=1):
    """Runs lrid's and scikit-learn's (fit, predict) in turn — ours, theirs, ours, theirs, … — after
    `warmup` untimed rounds (first-touch page faults, thread pools starting). Alternating keeps
    each ratio meaningful while the machine's speed drifts. For each side: median fit and
    predict seconds and the last predictions; and the median of the per-round ratios
    (scikit-learn's seconds / ours) of fit and of predict."""
    for _ in range(warmup):
        run_once(*ours)
        run_once(*theirs)
    rounds = [(run_once(*ours), run_once(*theirs)) for _ in range(repeats)]
    side = [
        (
            statistics.median(r[k][0] for r in rounds),
            statistics.median(r[k][1] for r in rounds),
            rounds[-1][k][2],
        )
        for k in (0, 1)
    ]
    ratios = tuple(statistics.median(r[1][i] / r[0][i] for r in rounds) for i in (0, 1))
    return side[0], side[1], ratios


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

    def add(classifier, ours, theirs):
        (of, op, opred), (tf, tp, tpred), ratios = paired(repeats, ours, theirs)
        acc = (float(np.mean(opred == y_test)), float(np.mean(tpred == y_test)))
        results.append((label, classifier, "lrid", of, op, acc[0], None))
        results.append((label, classifier, "sklearn", tf, tp, acc[1], ratios))

    print(f"[{label}] random forest, ours and sklearn in turn ...", flush=True)
    rf_config = {"n_estimators": 100, "max_features": "sqrt", "criterion": "gini", "seed": 0}
    add(
        "random forest",
        (ours_fit(rf, x_train, rf_config), ours_predict(x_test)),
        (
            lambda: RandomForestClassifier(
                n_estimators=100, max_features="sqrt", criterion="gini", n_jobs=-1,
                random_state=0,
            ).fit(x_train, y_train),
            lambda m: m.predict(x_test),
        ),
    )

    z_train, z_test = standardise(x_train, x_test, categorical)
    print(f"[{label}] linear SVM, ours and sklearn in turn ...", flush=True)
    svm_config = {"C": 1.0, "tol": 1e-4, "max_iter": 1000, "seed": 0}
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        add(
            "linear SVM",
            (ours_fit(svm, z_train, svm_config), ours_predict(z_test)),
            (
                lambda: LinearSVC(
                    C=1.0, dual=True, loss="squared_hinge", tol=1e-4, max_iter=1000,
                    random_state=0,
                ).fit(z_train, y_train),
                lambda m: m.predict(z_test),
            ),
        )
    return results


def print_table(results):
    header = (f"{'data set':<28} {'classifier':<14} {'impl':<8} {'fit s':>9} {'predict s':>10} "
              f"{'accuracy':>9} {'fit sk/lrid':>12} {'pred sk/lrid':>13} {'acc lrid-sk':>12}")
    print()
    print(header)
    print("-" * len(header))
    by_key = {(r[0], r[1], r[2]): r for r in results}
    for data_set, classifier, impl, fit, predict, acc, ratios in results:
        ratio = ["", "", ""]
        if ratios is not None:
            ours = by_key[(data_set, classifier, "lrid")]
            ratio = [f"{ratios[0]:.2f}x", f"{ratios[1]:.2f}x",
                     f"{(ours[5] - acc) * 100:+.2f} pt"]
        print(f"{data_set:<28} {classifier:<14} {impl:<8} {fit:>9.3f} {predict:>10.4f} "
              f"{acc:>9.4f} {ratio[0]:>12} {ratio[1]:>13} {ratio[2]:>12}")
    print()
    print("sk/lrid > 1: lrid is faster (the median over rounds of sklearn's seconds / lrid's seconds, "
          "the two run in turn); acc lrid-sk: accuracy points lrid minus sklearn.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", help="a Parquet file written by `lrid dataset export`")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the median of these")
    parser.add_argument("--rows", type=int, default=20_736, help="rows of the synthetic set")
    parser.add_argument("--no-synthetic", action="store_true", help="only the --dataset file")
    args = parser.parse_args()

    rf = ClassifierPlugin(find_plugin("random_forest"))
    svm = ClassifierPlugin(find_plugin("linear_svm"))
    print(f"{rf} and {svm}; {os.cpu_count()} CPUs; median of {args.repeats} round(s)")
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
