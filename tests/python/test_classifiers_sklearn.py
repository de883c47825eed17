"""The built-in classifier plugins, loaded from Python through their C ABI (`classifier_plugin`),
against scikit-learn 1.9: the random forest against `RandomForestClassifier`, the linear SVM
against `LinearSVC` (liblinear's dual coordinate descent), its PCA against numpy's SVD.

The plugins are looked up in `$LRID_PLUGIN_LIB_DIR` (one folder, or several joined by `:`), else
in `target/release/`; a missing plugin fails the test (build it first: `make build`).

Tolerances, and why they hold:

- RF test accuracy: mean over 10 seeds within 2 points of sklearn's mean over the same 10 seeds.
  Both implement the same estimator with different random streams, so the gap is the seed noise
  of two 10-seed means plus the effect of binning (thresholds at bin boundaries in nodes of more
  than `exact_below` = 64 samples). With sklearn on these sets, the per-seed standard deviation of
  test accuracy is 0.3–1.5 points (300 test rows), so that of a 10-seed mean ≤ 0.5 point and of the
  difference of two ≤ 0.7 point: 2 points is ≈ 3 σ of noise, and a real defect (a wrong split
  criterion, features drawn per tree, no bootstrap) costs more.
- RF importances: the mean over trees of per-tree normalised impurity decrease is sklearn's
  `feature_importances_` exactly by definition. Two sklearn forests with different seeds
  correlate at Pearson 0.98–0.99 on the informative-8-of-100 set (single forests; 10-seed means
  agree better), so ≥ 0.95 leaves room for binning and still fails on any other importance
  definition (e.g. split counts, unnormalised trees, permuted columns). The 8 informative
  columns must also be the top 8 of ours.
- LinearSVC: both solve the same strictly convex primal (L2 on the weights and the bias
  feature, squared hinge) to liblinear's stopping rule with tol = 1e-5; they differ only in the
  random coordinate order. Two sklearn runs with different `random_state` give weights (coef and
  intercept together) differing by ~1e-6 relative on these sets (ours against sklearn:
  2e-7–1.2e-6), so relative error ≤ 1e-4 is a ~100× margin that a different objective (an
  unregularised intercept, plain hinge, another C scaling) breaks by orders of magnitude;
  predictions then agree on (nearly) every row: accuracy within 1 point.
- PCA: components against numpy's SVD of the centred training continuous columns,
  |⟨ours, numpy⟩| within 1e-6 of 1 (the top components here have well-separated eigenvalues —
  checked — so the eigendecomposition of the covariance the plugin uses is accurate to ~1e-10),
  explained variance S²/(n−1) (sklearn's `explained_variance_`) to 1e-6 relative.
"""

import json
import os
import pathlib

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC

from classifier_plugin import (
    CAP_IMPORTANCES,
    CAP_SAVE,
    ClassifierPlugin,
    PluginError,
    Unsupported,
    trajectory_dataset,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEEDS = range(10)
RF_TREES = 100
RF_ACCURACY_GAP = 0.02
IMPORTANCE_PEARSON = 0.95
SVM_ACCURACY_GAP = 0.01
SVM_WEIGHT_REL = 1e-4
SVM_TOL = 1e-5
SVM_MAX_ITER = 100_000
PCA_DOT = 1e-6
PCA_VAR_REL = 1e-6

RF_KEYS = {
    "n_estimators", "max_features", "criterion", "bootstrap", "max_depth", "min_samples_split",
    "min_samples_leaf", "max_bins", "exact_below", "seed",
}
SVM_KEYS = {"C", "tol", "max_iter", "pca_components", "seed"}


def plugin_path(stem):
    name = f"liblrid_classifier_{stem}.so"
    env = os.environ.get("LRID_PLUGIN_LIB_DIR")
    dirs = [pathlib.Path(d) for d in env.split(os.pathsep) if d] if env else []
    dirs = dirs or [ROOT / "target" / "release"]
    for d in dirs:
        if (d / name).exists():
            return d / name
    pytest.fail(f"{dirs[0] / name} does not exist: build it first (make build)")


@pytest.fixture(scope="module")
def rf():
    return ClassifierPlugin(plugin_path("random_forest"))


@pytest.fixture(scope="module")
def svm():
    return ClassifierPlugin(plugin_path("linear_svm"))


# --- data sets ---------------------------------------------------------------------------------


def split(x, y, seed=0):
    """Half for training, half for testing, stratified (a large test set makes the seed noise
    of test accuracy small)."""
    return train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)


def informative_set():
    """4 classes, 600 rows × 100 features of which the first 8 are informative, the rest noise."""
    x, y = make_classification(
        n_samples=600, n_features=100, n_informative=8, n_redundant=0, n_classes=4,
        n_clusters_per_class=1, class_sep=1.5, shuffle=False, random_state=0,
    )
    return x, y, 0


def project_set():
    """Shaped like lrid's data: 3 one-hot columns, then 10 statistics × 10 points."""
    x, y = trajectory_dataset(600, 10, 10, seed=1)
    return x, y, 3


def binary_set():
    x, y = make_classification(
        n_samples=600, n_features=100, n_informative=10, n_redundant=5, n_classes=2,
        class_sep=1.0, random_state=2,
    )
    return x, y, 0


DATA_SETS = {"informative": informative_set, "project": project_set, "binary": binary_set}


def standardise(x_train, x_test, categorical):
    """z-scores the continuous columns with the training rows' mean and (population) std, as the
    host does before a linear SVM; the one-hot columns stay as they are."""
    mu = x_train[:, categorical:].mean(axis=0)
    sd = x_train[:, categorical:].std(axis=0)
    a, b = x_train.copy(), x_test.copy()
    a[:, categorical:] = (a[:, categorical:] - mu) / sd
    b[:, categorical:] = (b[:, categorical:] - mu) / sd
    return a, b


# --- the ABI from Python -----------------------------------------------------------------------


def check_grids(plugin, keys, paper):
    assert set(plugin.grids) >= {"fast", "paper"}, plugin.grids_json
    for name in ("fast", "paper"):
        grid = plugin.grids[name]
        assert isinstance(grid, list) and grid, f"grid {name}: {grid!r}"
        for config in grid:
            assert isinstance(config, dict), f"grid {name}: {config!r}"
            assert set(config) <= keys, f"grid {name}: unknown keys in {config}"
        assert len({json.dumps(c, sort_keys=True) for c in grid}) == len(grid), (
            f"grid {name} repeats a configuration"
        )
    assert len(plugin.grids["paper"]) == paper


def test_rf_abi(rf):
    assert rf.abi_version == 2
    assert rf.name == "random-forest"
    assert rf.version
    assert rf.torch_version is None, "a classifier on Arrow arrays links no libtorch"
    assert rf.capabilities == CAP_SAVE | CAP_IMPORTANCES
    check_grids(rf, RF_KEYS, paper=15)


def test_svm_abi(svm):
    assert svm.abi_version == 2
    assert svm.name == "linear-svm"
    assert svm.version
    assert svm.torch_version is None
    assert svm.capabilities & CAP_SAVE
    check_grids(svm, SVM_KEYS, paper=84)
    x, y, _ = binary_set()
    model = svm.fit(x[:100], y[:100], {"C": 1.0})
    if svm.capabilities & CAP_IMPORTANCES:
        imp = model.importances()
        assert imp.shape == (1, x.shape[1])
    else:
        with pytest.raises(Unsupported):
            model.importances()


def test_errors_cross_the_abi(rf):
    x, y, _ = informative_set()
    with pytest.raises(PluginError, match="bogus_key"):
        rf.fit(x, y, {"n_estimators": 5, "bogus_key": 1})
    with pytest.raises(PluginError, match="max_features"):
        rf.fit(x, y, {"n_estimators": 5, "max_features": "most"})
    with rf.prepare(x) as data:
        rows = np.arange(len(y))
        with pytest.raises(PluginError, match="not below the 3 classes"):
            data.fit(rows, y, 4 - 1, {"n_estimators": 5})
        # Not JSON: the plugin fails before it takes the row and label arrays; they are
        # released here.
        with pytest.raises(PluginError, match="not JSON"):
            data.fit(rows, y, 4, "{n_estimators")
    bad = x.copy()
    bad[3, 7] = np.nan
    with pytest.raises(PluginError, match="non-finite"):
        rf.prepare(bad)
    with pytest.raises(PluginError):
        rf.load(b"not a saved model")


# --- random forest -----------------------------------------------------------------------------

RF_CASES = {
    # data set: (max_features, criterion)
    "informative": ("sqrt", "gini"),
    "project": ("sqrt", "entropy"),
}


@pytest.fixture(scope="module")
def rf_runs(rf):
    """For each RF case, 10 seeds of ours and of sklearn's with the same parameters: test
    accuracies and mean importances (ours: one prepare shared by the 10 fits, as lrid does)."""
    runs = {}
    for name, (max_features, criterion) in RF_CASES.items():
        x, y, categorical = DATA_SETS[name]()
        x_train, x_test, y_train, y_test = split(x, y)
        ours_acc, sk_acc, ours_imp, sk_imp = [], [], [], []
        with rf.prepare(x_train, categorical=categorical) as data:
            for seed in SEEDS:
                config = {
                    "n_estimators": RF_TREES, "max_features": max_features,
                    "criterion": criterion, "seed": seed,
                }
                with data.fit(np.arange(len(y_train)), y_train, 4, config) as model:
                    p = model.predict_proba(x_test, categorical=categorical)
                    ours_acc.append(np.mean(p.argmax(axis=1) == y_test))
                    ours_imp.append(model.importances().mean(axis=0))
                forest = RandomForestClassifier(
                    n_estimators=RF_TREES, max_features=max_features, criterion=criterion,
                    random_state=seed, n_jobs=-1,
                ).fit(x_train, y_train)
                sk_acc.append(forest.score(x_test, y_test))
                sk_imp.append(forest.feature_importances_)
        runs[name] = {
            "ours_acc": np.array(ours_acc), "sk_acc": np.array(sk_acc),
            "ours_imp": np.mean(ours_imp, axis=0), "sk_imp": np.mean(sk_imp, axis=0),
        }
    return runs


@pytest.mark.parametrize("name", list(RF_CASES))
def test_rf_accuracy_matches_sklearn(rf_runs, name):
    run = rf_runs[name]
    ours, sk = run["ours_acc"].mean(), run["sk_acc"].mean()
    print(f"{name}: RF test accuracy ours {ours:.4f} (sd {run['ours_acc'].std():.4f}), "
          f"sklearn {sk:.4f} (sd {run['sk_acc'].std():.4f})")
    assert abs(ours - sk) <= RF_ACCURACY_GAP, (
        f"{name}: mean test accuracy over {len(SEEDS)} seeds: ours {ours:.4f}, sklearn {sk:.4f}"
    )


def test_rf_importances_match_sklearn(rf_runs):
    run = rf_runs["informative"]
    ours, sk = run["ours_imp"], run["sk_imp"]
    pearson = np.corrcoef(ours, sk)[0, 1]
    spearman = spearmanr(ours, sk).statistic
    print(f"importances: Pearson {pearson:.4f}, Spearman {spearman:.4f}")
    assert pearson >= IMPORTANCE_PEARSON, f"Pearson {pearson:.4f} (Spearman {spearman:.4f})"
    top = set(np.argsort(-ours)[:8].tolist())
    assert top == set(range(8)), f"our 8 most important columns: {sorted(top)}"
    assert np.isclose(ours.sum(), 1.0, rtol=0, atol=1e-9)


def test_rf_model_properties(rf):
    """Per-tree importances sum to 1, probabilities to 1; a save/load round trip predicts the
    same bits; a fit is deterministic in its seed; a model outlives the data it was fitted on."""
    x, y, categorical = project_set()
    x_train, x_test, y_train, _ = split(x, y)
    config = {"n_estimators": 30, "seed": 7}
    data = rf.prepare(x_train, categorical=categorical, points=10)
    rows = np.arange(len(y_train))
    model = data.fit(rows, y_train, 4, config)
    same = data.fit(rows, y_train, 4, config)
    other = data.fit(rows, y_train, 4, {**config, "seed": 8})
    data.free()

    p = model.predict_proba(x_test, categorical=categorical, points=10)
    assert p.shape == (len(x_test), 4)
    assert (p >= 0).all() and np.allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)

    imp = model.importances()
    assert imp.shape == (30, x.shape[1])
    assert (imp >= 0).all()
    assert np.allclose(imp.sum(axis=1), 1.0, rtol=0, atol=1e-9), imp.sum(axis=1)

    assert np.array_equal(same.predict_proba(x_test), p), "same seed, same forest"
    assert not np.array_equal(other.predict_proba(x_test), p), "another seed, another forest"

    saved = model.save()
    with rf.load(saved) as loaded:
        assert np.array_equal(loaded.predict_proba(x_test), p)
        assert np.array_equal(loaded.importances(), imp)
        assert loaded.save() == saved
    # A subset of rows with labels of its own: rows index the prepared matrix.
    with rf.prepare(x_train) as data, data.fit(rows[::2], y_train[::2], 4, config) as half:
        assert half.predict_proba(x_test).shape == (len(x_test), 4)


# --- linear SVM --------------------------------------------------------------------------------


def svm_fit_both(svm, name, c, pca=None):
    x, y, categorical = DATA_SETS[name]()
    x_train, x_test, y_train, y_test = split(x, y)
    x_train, x_test = standardise(x_train, x_test, categorical)
    k = int(y.max()) + 1
    config = {"C": c, "tol": SVM_TOL, "max_iter": SVM_MAX_ITER, "seed": 0}
    if pca is not None:
        config["pca_components"] = pca
    with svm.fit(x_train, y_train, config, categorical=categorical) as model:
        p = model.predict_proba(x_test, categorical=categorical)
        saved = json.loads(model.save())
    return x_train, x_test, y_train, y_test, k, categorical, p, saved


def compare_linear(saved, z_train, z_test, y_train, y_test, k, c, p, label):
    """Our saved coefficients, probabilities and accuracy against LinearSVC fitted on the same
    SVM inputs z."""
    sk = LinearSVC(
        C=c, dual=True, loss="squared_hinge", tol=SVM_TOL, max_iter=SVM_MAX_ITER,
        random_state=0,
    ).fit(z_train, y_train)
    coef, intercept = np.array(saved["coef"]), np.array(saved["intercept"])
    problems = 1 if k == 2 else k
    assert saved["format"] == 1 and saved["classes"] == k
    assert coef.shape == (problems, z_train.shape[1]) and intercept.shape == (problems,)
    ours_w = np.hstack([coef, intercept[:, None]])
    sk_w = np.hstack([sk.coef_, sk.intercept_[:, None]])
    rel = np.linalg.norm(ours_w - sk_w, axis=1) / np.linalg.norm(sk_w, axis=1)

    decision = z_test @ coef.T + intercept
    if k == 2:
        d = decision[:, 0]
        want = np.column_stack([1 / (1 + np.exp(d)), 1 / (1 + np.exp(-d))])
    else:
        e = np.exp(decision - decision.max(axis=1, keepdims=True))
        want = e / e.sum(axis=1, keepdims=True)
    ours_pred = p.argmax(axis=1)
    sk_pred = sk.predict(z_test)
    ours_acc, sk_acc = np.mean(ours_pred == y_test), np.mean(sk_pred == y_test)
    print(f"{label}: accuracy ours {ours_acc:.4f} sklearn {sk_acc:.4f}; weight rel. error "
          f"max {rel.max():.2e}; sklearn n_iter {sk.n_iter_}; "
          f"agreement {np.mean(ours_pred == sk_pred):.4f}")
    assert np.allclose(p, want, rtol=1e-9, atol=1e-12), "probabilities = map of the saved model"
    assert abs(ours_acc - sk_acc) <= SVM_ACCURACY_GAP, f"{label}: {ours_acc} vs {sk_acc}"
    assert rel.max() <= SVM_WEIGHT_REL, f"{label}: relative weight errors {rel}"


@pytest.mark.parametrize(
    "name,c",
    [("binary", 0.01), ("binary", 1.0), ("informative", 0.01), ("informative", 0.1),
     ("project", 0.1)],
)
def test_svm_matches_liblinear(svm, name, c):
    x_train, x_test, y_train, y_test, k, categorical, p, saved = svm_fit_both(svm, name, c)
    assert saved["pca"] is None and saved["categorical"] == categorical
    compare_linear(saved, x_train, x_test, y_train, y_test, k, c, p, f"{name} C={c}")


def test_svm_pca_is_numpys_svd_of_the_training_rows(svm):
    """PCA of the continuous columns of the *training rows* (a subset of the prepared matrix),
    the one-hot columns passed through in front; then the SVM on the projections is LinearSVC
    on them."""
    n = 6
    x, y, categorical = project_set()
    x_train, x_test, y_train, y_test = split(x, y)
    x_train, x_test = standardise(x_train, x_test, categorical)
    fit_rows = np.arange(0, len(y_train), 3)[:150]
    c = 0.1
    config = {"C": c, "tol": SVM_TOL, "max_iter": SVM_MAX_ITER, "pca_components": n, "seed": 3}
    with svm.prepare(x_train, categorical=categorical) as data:
        with data.fit(fit_rows, y_train[fit_rows], 4, config) as model:
            p = model.predict_proba(x_test, categorical=categorical)
            saved = json.loads(model.save())
    pca = saved["pca"]
    assert pca is not None and saved["categorical"] == categorical
    cont = x_train[fit_rows, categorical:]
    mean = cont.mean(axis=0)
    _, s, vt = np.linalg.svd(cont - mean, full_matrices=False)
    variance = s**2 / (len(fit_rows) - 1)
    gaps = np.diff(variance[: n + 1]) / variance[0]
    assert np.abs(gaps).min() > 1e-3, "test premise: the top eigenvalues are distinct"

    ours_mean = np.array(pca["mean"])
    components = np.array(pca["components"])
    explained = np.array(pca["explained_variance"])
    assert ours_mean.shape == (x.shape[1] - categorical,), "the one-hot columns are not PCA'd"
    assert components.shape == (n, x.shape[1] - categorical)
    assert np.allclose(ours_mean, mean, rtol=0, atol=1e-12)
    dots = np.abs(np.sum(components * vt[:n], axis=1))
    print(f"PCA: |dot| - 1 = {dots - 1}, variance rel. error "
          f"{np.abs(explained / variance[:n] - 1).max():.2e}")
    assert np.allclose(dots, 1.0, rtol=0, atol=PCA_DOT), dots
    assert np.allclose(explained, variance[:n], rtol=PCA_VAR_REL, atol=0)
    # The documented sign: each component's largest-magnitude entry is positive.
    assert (components[np.arange(n), np.abs(components).argmax(axis=1)] > 0).all()
    assert np.array(saved["coef"]).shape == (4, categorical + n)

    def project(z):
        return np.hstack([z[:, :categorical], (z[:, categorical:] - ours_mean) @ components.T])

    compare_linear(saved, project(x_train[fit_rows]), project(x_test), y_train[fit_rows],
                   y_test, 4, c, p, f"project PCA {n} C={c}")


def test_svm_save_load_and_pca_limits(svm):
    x, y, categorical = project_set()
    config = {"C": 1.0, "pca_components": 4, "seed": 1}
    with svm.fit(x, y, config, categorical=categorical) as model:
        p = model.predict_proba(x[:50], categorical=categorical)
        saved = model.save()
    with svm.load(saved) as loaded:
        assert np.array_equal(loaded.predict_proba(x[:50], categorical=categorical), p)
        assert loaded.save() == saved
    with pytest.raises(PluginError, match="pca_components"):
        svm.fit(x, y, {"pca_components": x.shape[1]}, categorical=categorical)
    with pytest.raises(PluginError, match="bogus_key"):
        svm.fit(x, y, {"bogus_key": 1})
