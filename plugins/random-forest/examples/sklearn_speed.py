"""Times scikit-learn's RandomForestClassifier on the data set `examples/speed.rs --npy DIR` wrote.

    python plugins/random-forest/examples/sklearn_speed.py DIR [--trees 100] [--max-features sqrt]
"""

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier

parser = argparse.ArgumentParser()
parser.add_argument("dir", type=Path)
parser.add_argument("--trees", type=int, default=100)
parser.add_argument("--max-features", default="sqrt")
parser.add_argument("--seed", type=int, default=1)
args = parser.parse_args()

x = np.load(args.dir / "x_train.npy")
y = np.load(args.dir / "y_train.npy").astype(np.int64)
xt = np.load(args.dir / "x_test.npy")
yt = np.load(args.dir / "y_test.npy").astype(np.int64)
max_features = None if args.max_features == "all" else args.max_features
model = RandomForestClassifier(
    n_estimators=args.trees, max_features=max_features, n_jobs=-1, random_state=args.seed
)
# CPU seconds of the process (all threads), steadier than wall time on a busy machine.
t, c = time.perf_counter(), time.process_time()
model.fit(x, y)
fit_s, fit_cpu = time.perf_counter() - t, time.process_time() - c
t, c = time.perf_counter(), time.process_time()
p = model.predict_proba(xt)
predict_s, predict_cpu = time.perf_counter() - t, time.process_time() - c
nodes = sum(e.tree_.node_count for e in model.estimators_)
print(
    f"sklearn wall (cpu) seconds: fit {fit_s:.3f} ({fit_cpu:.2f}), predict {predict_s:.3f} "
    f"({predict_cpu:.2f}) for {len(xt)} rows; {nodes} nodes, "
    f"test accuracy {(p.argmax(1) == yt).mean():.4f}"
)
