"""The PyTorch side of modeconn's speed comparison: the idiomatic way, on this machine.

    .venv-bench/bin/python benches/pytorch_baseline.py [flags]

Model: the seed ConvNet (python/modeconn_models.py SeedConvNet, dropout 0.5)
on CIFAR-10 read from the JPEG copy with torchvision ImageFolder. Training
uses per-sample RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor (no
normalisation: pixels / 255) and DataLoader(batch_size=128, shuffle=True,
num_workers, persistent_workers=True); SGD momentum 0.9, lr 0.05, wd 5e-4.

Phases (each printed with wall time and images/s; a JSON summary at the end):
  train      one epoch of endpoint training from a fresh initialisation
             (wall includes starting the loader's workers).
  curve      one epoch of curve training, the reference implementation's way:
             quadratic Bezier between the fixed endpoints w1 = start, w2 = end;
             the bend θ is a trainable copy initialised at (w1 + w2) / 2; per
             batch t ~ U(0,1), φ(t) = (1-t)²w1 + 2t(1-t)θ + t²w2 through
             torch.func.functional_call, loss CE + 2.5e-4·‖φ(t)‖², SGD on θ
             (momentum 0.9, lr 0.05, no optimizer weight decay).
  sweep      for t in linspace(0, 1, P): evaluate φ(t) (θ = theta.safetensors)
             under torch.no_grad() on the training set (no augmentation) and
             the test set, DataLoader(ImageFolder, batch 256, workers), as the
             reference implementation's eval does; loss and accuracy per t.
  preloaded  decode the training images once into an fp32 NCHW tensor, then
             the same training step over in-memory slices (no augmentation,
             no shuffling): the compute-only lower bound, img/s.
  peak RSS   ru_maxrss of this process and of its (reaped) worker processes
             (RUSAGE_CHILDREN is the largest child, not a sum), in MB.

Flags:
  --data DIR                 ImageFolder root with train/ and test/
                             (default /work/shared/datasets/cifar10-jpg)
  --checkpoints DIR          start/end/theta.safetensors of the seed curve
                             (default /work/shared/checkpoints/seed-cifar10-convnet)
  --train-images N           train/curve/preloaded on the first N images after a
                             fixed shuffle (torch.utils.data.Subset; default all 50000)
  --sweep-points P           points of the sweep (default 61)
  --sweep-train-images N     training images per sweep point (same fixed shuffle;
                             default all)
  --sweep-test-images N      test images per sweep point (default all 10000)
  --threads T                torch.set_num_threads (default 2)
  --workers W                DataLoader workers (default 2)
  --skip PHASE[,PHASE]       skip any of train, curve, sweep, preloaded
  --seed S                   RNG seed (default 0)
  --json-out FILE            also write the JSON summary to FILE

Quick check:  nice -n 10 .venv-bench/bin/python benches/pytorch_baseline.py \\
                  --train-images 5120 --sweep-points 3 --sweep-train-images 2000
Compare with `cargo bench --bench speed` on the SAME machine, side by side.
"""

import argparse
import json
import os
import platform
import resource
import sys
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from modeconn_models import SeedConvNet  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

BATCH, EVAL_BATCH, LR, MOM, WD, CURVE_REG = 128, 256, 0.05, 0.9, 5e-4, 2.5e-4


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/work/shared/datasets/cifar10-jpg")
    ap.add_argument("--checkpoints", default="/work/shared/checkpoints/seed-cifar10-convnet")
    ap.add_argument("--train-images", type=int)
    ap.add_argument("--sweep-points", type=int, default=61)
    ap.add_argument("--sweep-train-images", type=int)
    ap.add_argument("--sweep-test-images", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip", default="")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out")
    return ap.parse_args()


def subset(ds, n, seed):
    """The first n indices of a fixed shuffle (all of ds when n is None)."""
    if n is None or n >= len(ds):
        return ds
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    return Subset(ds, perm[:n].tolist())


def loader(ds, batch, shuffle, workers):
    return DataLoader(ds, batch_size=batch, shuffle=shuffle, num_workers=workers,
                      persistent_workers=workers > 0)


def sgd(params, wd):
    return torch.optim.SGD(params, lr=LR, momentum=MOM, weight_decay=wd)


def bezier(w1, theta, w2, t):
    """φ(t) = (1-t)²w1 + 2t(1-t)θ + t²w2 for every key."""
    a, b, c = (1 - t) ** 2, 2 * t * (1 - t), t ** 2
    return {k: a * w1[k] + b * theta[k] + c * w2[k] for k in w1}


def phase(name, n_images, wall, **extra):
    r = dict(wall_s=round(wall, 3), images=n_images, images_per_s=round(n_images / wall, 1), **extra)
    print(f"[{name}] {n_images} images in {wall:.2f} s = {r['images_per_s']:.1f} img/s"
          + "".join(f", {k}={v}" for k, v in extra.items() if not isinstance(v, (list, dict))), flush=True)
    return r


def train_epoch(model, dl, opt):
    model.train()
    n, t0 = 0, time.perf_counter()
    for x, y in dl:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        n += x.shape[0]
    return n, time.perf_counter() - t0, loss.item()


def curve_epoch(model, dl, w1, w2, theta, opt):
    model.train()
    n, t0 = 0, time.perf_counter()
    for x, y in dl:
        t = torch.rand(1).item()
        phi = bezier(w1, theta, w2, t)
        loss = F.cross_entropy(functional_call(model, phi, (x,)), y)
        loss = loss + CURVE_REG * sum(p.pow(2).sum() for p in phi.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += x.shape[0]
    return n, time.perf_counter() - t0, loss.item()


@torch.no_grad()
def evaluate(model, params, dl):
    model.eval()
    n, loss, correct = 0, 0.0, 0
    for x, y in dl:
        out = functional_call(model, params, (x,))
        loss += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
        n += x.shape[0]
    return n, loss / n, correct / n


def main():
    args = parse_args()
    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    summary = dict(torch=torch.__version__, threads=torch.get_num_threads(), workers=args.workers,
                   cpu_count=os.cpu_count(), machine=platform.processor() or platform.machine(), args=vars(args))

    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                  transforms.ToTensor()])
    plain = transforms.ToTensor()
    t0 = time.perf_counter()
    train_aug = datasets.ImageFolder(os.path.join(args.data, "train"), transform=augment)
    train_plain = datasets.ImageFolder(os.path.join(args.data, "train"), transform=plain)
    test_plain = datasets.ImageFolder(os.path.join(args.data, "test"), transform=plain)
    summary["scan_s"] = round(time.perf_counter() - t0, 3)
    train_set = subset(train_aug, args.train_images, args.seed)
    print(f"ImageFolder scan {summary['scan_s']} s: {len(train_aug)} train, {len(test_plain)} test; "
          f"training on {len(train_set)}; threads {args.threads}, workers {args.workers}", flush=True)
    train_dl = loader(train_set, BATCH, True, args.workers)

    ck = {k: load_file(os.path.join(args.checkpoints, f"{k}.safetensors")) for k in ("start", "end", "theta")}

    if "train" not in skip:
        model = SeedConvNet(3, 10)
        n, wall, last = train_epoch(model, train_dl, sgd(model.parameters(), WD))
        summary["train_epoch"] = phase("train", n, wall, last_loss=round(last, 4))

    if "curve" not in skip:
        model = SeedConvNet(3, 10)
        w1, w2 = ck["start"], ck["end"]
        theta = {k: torch.nn.Parameter((w1[k] + w2[k]) / 2) for k in w1}
        n, wall, last = curve_epoch(model, train_dl, w1, w2, theta, sgd(theta.values(), 0.0))
        summary["curve_epoch"] = phase("curve", n, wall, last_loss=round(last, 4))
    del train_dl

    if "sweep" not in skip:
        model = SeedConvNet(3, 10)
        tr_dl = loader(subset(train_plain, args.sweep_train_images, args.seed), EVAL_BATCH, False, args.workers)
        te_dl = loader(subset(test_plain, args.sweep_test_images, args.seed), EVAL_BATCH, False, args.workers)
        points, n_total, t0 = [], 0, time.perf_counter()
        for t in torch.linspace(0, 1, args.sweep_points).tolist():
            phi = bezier(ck["start"], ck["theta"], ck["end"], t)
            ntr, trl, tra = evaluate(model, phi, tr_dl)
            nte, tel, tea = evaluate(model, phi, te_dl)
            n_total += ntr + nte
            points.append(dict(t=round(t, 4), train_loss=round(trl, 4), train_acc=round(tra, 4),
                               test_loss=round(tel, 4), test_acc=round(tea, 4)))
            print(f"  t={t:.3f} train loss {trl:.4f} acc {tra:.4f} | test loss {tel:.4f} acc {tea:.4f}", flush=True)
        wall = time.perf_counter() - t0
        summary["sweep"] = phase("sweep", n_total, wall, points=args.sweep_points,
                                 train_images=ntr, test_images=nte, per_point_s=round(wall / args.sweep_points, 3))
        summary["sweep"]["curve"] = points
        del tr_dl, te_dl

    if "preloaded" not in skip:
        t0 = time.perf_counter()
        dl = DataLoader(subset(train_plain, args.train_images, args.seed), batch_size=1000, num_workers=args.workers)
        xs, ys = zip(*dl)
        x, y = torch.cat(xs).contiguous(), torch.cat(ys)
        decode = time.perf_counter() - t0
        del dl, xs, ys
        model = SeedConvNet(3, 10)
        model.train()
        opt = sgd(model.parameters(), WD)
        t0 = time.perf_counter()
        for i in range(0, x.shape[0], BATCH):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[i:i + BATCH]), y[i:i + BATCH]).backward()
            opt.step()
        summary["preloaded"] = phase("preloaded", x.shape[0], time.perf_counter() - t0,
                                     decode_s=round(decode, 2), tensor_mb=round(x.numel() * 4 / 2**20, 1))
        del x, y

    import gc
    gc.collect()  # shut persistent workers down so RUSAGE_CHILDREN sees them
    time.sleep(0.5)
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary["peak_rss_mb"] = dict(self=round(self_mb, 1), largest_child=round(child_mb, 1),
                                  self_plus_children=round(self_mb + child_mb, 1))
    print(f"[peak RSS] self {self_mb:.1f} MB + children {child_mb:.1f} MB = {self_mb + child_mb:.1f} MB "
          "(children: the largest reaped worker; workers share pages with the parent)")
    print(json.dumps(summary, indent=1 if args.json_out else None))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
