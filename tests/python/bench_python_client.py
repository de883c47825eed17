"""Benchmark of the Python client (make bench): prints numbers and ratios, asserts nothing.

1. Step-time overhead of `lrid.watch` on a PyTorch training loop at 21 points: the same loop
   with and without watch, alternated, several rounds; median per-step time of each.
2. Recorder throughput: the same 16 MB float32 kernel recorded N times by `lrid.Recorder`
   and by the Rust SDK (`record_npy`, the SDK example), into the same real `lrid serve`.
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import tempfile
import time

import numpy as np
import torch

import lrid

ROOT = pathlib.Path(__file__).resolve().parents[2]


def serve(lrid_bin, data):
    proc = subprocess.Popen([lrid_bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data)],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("lrid serve listening on "), line
    return proc, "http://" + line.split()[4]


def cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(64 * 8 * 8, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def train_loop(steps, server=None, run_id=None):
    torch.manual_seed(0)
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (8, 64), generator=g)
    probe = torch.randn(32, 3, 32, 32, generator=g)
    handle = lrid.watch(model, probe, total_steps=steps, points=21, server=server,
                        run_id=run_id) if server else None
    start = time.perf_counter()
    for s in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[s % 8]), y[s % 8]).backward()
        opt.step()
    loop = time.perf_counter() - start
    if handle:
        handle.close()
    return loop / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lrid", default=str(ROOT / "target" / "release" / "lrid"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--snapshots", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)  # the daemon gets the other core
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        proc, server = serve(args.lrid, tmp / "data")
        try:
            off, on = [], []
            train_loop(20)  # warm-up
            for r in range(args.rounds):
                off.append(train_loop(args.steps))
                on.append(train_loop(args.steps, server, f"bench/watch/{r}"))
            a, b = statistics.median(off), statistics.median(on)
            print(f"watch overhead: {args.steps} steps, 21 points, CNN 3 conv + 2 dense, batch 64, "
                  f"probe 32 ({args.rounds} rounds, median)")
            print(f"  step time without watch {a * 1e3:.2f} ms, with watch {b * 1e3:.2f} ms, "
                  f"overhead {100 * (b - a) / a:+.1f} % (target <= 3 %)")

            values = np.random.default_rng(0).normal(0, 0.05, (4096, 1024)).astype(np.float32)
            layer = lrid.LayerInfo(0, "big", "early", values.shape, (1,))
            total = values.nbytes * args.snapshots
            start = time.perf_counter()
            with lrid.Recorder(server, "bench/python") as rec:
                for p in range(args.snapshots):
                    rec.record_weights(p, layer, values)
                    rec.complete_point(p)
            py = time.perf_counter() - start
            np.save(tmp / "big.npy", values)
            manifest = {"server": server, "run_id": "bench/rust", "layers": [layer.to_wire()],
                        "points": [{"point": p, "step": None, "snapshots": [
                            {"layer": 0, "measure": "weight", "file": "big.npy"}]}
                                   for p in range(args.snapshots)]}
            (tmp / "manifest.json").write_text(json.dumps(manifest))
            example = ROOT / "target" / "release" / "examples" / "record_npy"
            out = subprocess.run([str(example), str(tmp / "manifest.json")], check=True,
                                 capture_output=True, text=True).stdout.split()
            if out[:3] != ["recorded", str(total), "bytes"]:
                raise SystemExit(f"record_npy printed {' '.join(out)!r}, expected 'recorded {total} bytes in … s'")
            rust = float(out[4])
            print(f"recorder throughput: {args.snapshots} snapshots of {values.nbytes / 1e6:.1f} MB, "
                  "from opening the run to its acknowledged close")
            print(f"  Python lrid.Recorder {total / py / 1e9:.2f} GB/s, Rust lrid-sdk "
                  f"{total / rust / 1e9:.2f} GB/s, ratio Python/Rust {rust / py:.2f}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
