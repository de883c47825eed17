"""A plain PyTorch training script watched by lrid (generated data, no downloads).

    lrid serve &                                  # after `make demo`: it has the `demo` identifier
    python sdk/python/examples/train_pytorch.py --optimizer sgd
    python sdk/python/examples/train_pytorch.py --optimizer adam
    lrid sql "SELECT point, layer_name, weightraw_norm, actraw_mean FROM observables
              WHERE run_id = 'pytorch/sgd/0' AND model = 'ideal' ORDER BY point, layer_index"

The task: 16×16 grey images of one of four oriented bars (random position, contrast and pixel
noise). The network: conv(1→16, 3×3) → ReLU → pool → conv(16→32, 3×3) → ReLU → pool →
dense(512→64) → ReLU → dense(64→4). Trained with `torch.optim.SGD(momentum=0.9)` or
`torch.optim.Adam`, with the demo corpus' learning rates (0.1 and 0.016 at batch 128, scaled
linearly with the batch size). The only lrid line is `lrid.watch(...)`. At the end the script
prints what live identification says about the run, when the daemon has an identifier.
"""

import argparse
import time

import torch

import lrid


def bars(n, generator):
    """n images of oriented bars (0°, 45°, 90°, 135°) and their labels."""
    labels = torch.randint(0, 4, (n,), generator=generator)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    cy = torch.randint(5, 11, (n, 1, 1), generator=generator).float()
    cx = torch.randint(5, 11, (n, 1, 1), generator=generator).float()
    dy, dx = yy - cy, xx - cx
    angle = labels.float().view(n, 1, 1) * torch.pi / 4
    across = (dx * torch.sin(angle) - dy * torch.cos(angle)).abs()
    along = (dx * torch.cos(angle) + dy * torch.sin(angle)).abs()
    contrast = 0.5 + torch.rand(n, 1, 1, generator=generator)
    images = contrast * ((across < 1.0) & (along < 5.0)).float()
    images = images + 0.2 * torch.randn(n, 16, 16, generator=generator)
    return images.unsqueeze(1), labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    ap.add_argument("--server", default=None, help="lrid serve address (default $LRID_SERVER or http://127.0.0.1:50051)")
    ap.add_argument("--run-id", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--examples", type=int, default=1024)
    args = ap.parse_args()
    run_id = args.run_id or f"pytorch/{args.optimizer}/{args.seed}"

    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    x, y = bars(args.examples, g)
    probe, _ = bars(64, g)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4),
    )
    scale = args.batch_size / 128
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1 * scale, momentum=0.9)
        rule = "sgdm"
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.016 * scale)
        rule = "adam"
    steps_per_epoch = args.examples // args.batch_size
    total = args.epochs * steps_per_epoch
    labels = {"learning_rule": rule, "architecture": "bars-cnn", "task": "bars",
              "batch_size": args.batch_size, "model_seed": args.seed, "data_seed": args.seed,
              "hyperparameters": {"optimizer": type(opt).__name__, "lr": opt.param_groups[0]["lr"]}}

    start = time.time()
    with lrid.watch(model, probe, total_steps=total, points=21, server=args.server,
                    run_id=run_id, labels=labels) as handle:
        for epoch in range(args.epochs):
            order = torch.randperm(args.examples, generator=g)
            for s in range(steps_per_epoch):
                batch = order[s * args.batch_size:(s + 1) * args.batch_size]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
                loss.backward()
                opt.step()
            with torch.no_grad():
                acc = (model(x).argmax(1) == y).float().mean().item()
            print(f"epoch {epoch + 1}: loss {loss.item():.3f}, training accuracy {acc:.2f}")
    print(f"run '{run_id}' ({type(opt).__name__}): {total} steps, {handle.points_recorded} points "
          f"recorded in {time.time() - start:.1f} s")

    with lrid.connect(args.server) as db:
        found = None
        for _ in range(50):  # identification follows the last point within milliseconds
            found = db.identify(run_id)
            if found and found["points_seen"] == 21:
                break
            time.sleep(0.1)
    if found is None:
        print("no identification (the daemon has no identifier: `lrid identify fit`, or `make demo`)")
    else:
        probs = ", ".join(f"{r} {p:.2f}" for r, p in sorted(found["probabilities"].items(), key=lambda kv: -kv[1]))
        print(f"lrid identifies run '{run_id}' as {found['predicted']} after {found['points_seen']} points "
              f"(identifier '{found['identifier']}': {probs}); trained with {rule}")
        if found.get("note"):
            print(f"note: {found['note']}")


if __name__ == "__main__":
    main()
