"""The seed experiment's own pipeline in PyTorch, one epoch of each stage, timed on this machine.

    .venv-bench/bin/python benches/seed_recipe_baseline.py [--threads 2] [--json-out FILE]

The seed (github.com/simoneiriksson/mode-connectivity, its script's defaults) trains two
endpoints for 100 epochs each and a quadratic Bezier curve for 200 epochs, and after every
epoch runs a pass over the test set. This script does one epoch of each stage the way that
script does it, so that `modeconn run --preset seed-cifar10` can be compared with the seed's
pipeline side by side:

  data      CIFAR-10 held in memory as uint8 HWC arrays, as torchvision's CIFAR10 dataset
            holds it (decoded here once from the JPEG copy; not timed); every sample goes
            through PIL and ToTensor() (pixels / 255); DataLoader(batch_size=256), no
            shuffling, no workers (the seed's loader).
  endpoint  one epoch of the seed ConvNet (dropout 0.5), Adam at 2e-3 with a per-step
            scheduler, then the test pass in eval mode, without torch.no_grad() (as the
            seed's train() does).
  curve     one epoch of the curve the seed's way: for every batch t ~ U(0,1), a fresh
            network (its constructor's default dropout, 0.3) whose every parameter is
            re-parametrised (torch.nn.utils.parametrize) as (1-t)^2 w1 + 2t(1-t) theta +
            t^2 w2; SGD with momentum 0.9 on theta; then the test pass, which draws a new t
            and a new network for every test batch.

It prints one line per stage and a JSON summary with the seconds of each, and the whole
pipeline's training extrapolated: 2 x 100 endpoint epochs + 200 curve epochs (each with its
test pass). Set --train-images for a quick check on a subset.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.parametrize as parametrize
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from modeconn_models import SeedConvNet  # noqa: E402

BATCH = 256
ENDPOINT_EPOCHS, CURVE_EPOCHS = 100, 200


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/work/shared/datasets/cifar10-jpg")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-images", type=int, help="the first N training images of a fixed shuffle")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out")
    return ap.parse_args()


def decode(root, limit=None):
    """An ImageFolder tree as (uint8 N x 32 x 32 x 3, int64 labels), classes in sorted order."""
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    files = [(os.path.join(root, c, f), i) for i, c in enumerate(classes)
             for f in sorted(os.listdir(os.path.join(root, c)))]
    # One fixed shuffle, as CIFAR-10's own files come (the seed's loader never shuffles, and
    # ImageFolder's order is by class).
    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))[:limit]]
    x = np.stack([np.asarray(Image.open(p).convert("RGB")) for p, _ in files])
    return x, np.array([c for _, c in files], dtype=np.int64)


class InMemory(Dataset):
    """What torchvision's CIFAR10 dataset does per sample: PIL image, then the transform."""

    def __init__(self, x, y):
        self.x, self.y, self.tf = x, y, transforms.ToTensor()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.tf(Image.fromarray(self.x[i])), int(self.y[i])


class Bezier(nn.Module):
    """A parameter re-parametrised as a point of the quadratic Bezier curve at t."""

    def __init__(self, w1, w2, theta, t):
        super().__init__()
        self.w1, self.w2, self.theta, self.t = w1, w2, theta, t

    def forward(self, _):
        t = self.t
        return self.w1 * (1 - t) ** 2 + self.w2 * t ** 2 + self.theta * 2 * t * (1 - t)


def curve_network(w1, w2, theta, t):
    """A fresh network (default dropout 0.3, as the seed's curve builds it) on the curve at t."""
    net = SeedConvNet(3, 10, dropout=0.3)
    mods = dict(net.named_modules())
    for name, _ in list(net.named_parameters()):
        mod, _, pname = name.rpartition(".")
        parametrize.register_parametrization(mods[mod], pname, Bezier(w1[name], w2[name], theta[name], t))
    return net


def test_pass(make_net, dl):
    """The seed's per-epoch test pass: eval mode, autograd on, loss and accuracy."""
    loss, correct, n = 0.0, 0, 0
    for x, y in dl:
        net = make_net()
        net.eval()
        out = net(x)
        loss += F.cross_entropy(out, y).item() * len(y)
        correct += (out.argmax(-1) == y).sum().item()
        n += len(y)
    return loss / n, correct / n


def endpoint_epoch(train_dl, test_dl):
    net = SeedConvNet(3, 10, dropout=0.5)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    t0 = time.perf_counter()
    net.train()
    for x, y in train_dl:
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        sched.step()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss, acc = test_pass(lambda: net, test_dl)
    return net, dict(train_s=round(train_s, 2), test_s=round(time.perf_counter() - t0, 2),
                     test_loss=round(loss, 4), test_acc=round(acc, 4))


def curve_epoch(w1, w2, train_dl, test_dl):
    theta = {k: nn.Parameter((w1[k] + w2[k]) / 2) for k in w1}
    opt = torch.optim.SGD(theta.values(), lr=0.05, momentum=0.9)
    t0 = time.perf_counter()
    for x, y in train_dl:
        net = curve_network(w1, w2, theta, torch.rand(()).item())
        net.train()
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss, acc = test_pass(lambda: curve_network(w1, w2, theta, torch.rand(()).item()), test_dl)
    return dict(train_s=round(train_s, 2), test_s=round(time.perf_counter() - t0, 2),
                test_loss=round(loss, 4), test_acc=round(acc, 4))


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    xtr, ytr = decode(os.path.join(args.data, "train"), args.train_images)
    xte, yte = decode(os.path.join(args.data, "test"))
    print(f"decoded {len(ytr)} train and {len(yte)} test images in {time.perf_counter() - t0:.1f} s "
          f"(not timed below); threads {torch.get_num_threads()}", flush=True)
    train_dl = DataLoader(InMemory(xtr, ytr), batch_size=BATCH)
    test_dl = DataLoader(InMemory(xte, yte), batch_size=BATCH)

    # Two endpoint epochs: the second is the one counted (the first warms oneDNN's caches up).
    endpoint_epoch(train_dl, test_dl)
    w1, ep = endpoint_epoch(train_dl, test_dl)
    print(f"[endpoint epoch] train {ep['train_s']} s + test pass {ep['test_s']} s", flush=True)
    w2, _ = endpoint_epoch(train_dl, test_dl)
    w1 = {k: v.detach() for k, v in w1.state_dict().items()}
    w2 = {k: v.detach() for k, v in w2.state_dict().items()}
    cv = curve_epoch(w1, w2, train_dl, test_dl)
    print(f"[curve epoch] train {cv['train_s']} s + test pass {cv['test_s']} s", flush=True)

    ep_s, cv_s = ep["train_s"] + ep["test_s"], cv["train_s"] + cv["test_s"]
    total = 2 * ENDPOINT_EPOCHS * ep_s + CURVE_EPOCHS * cv_s
    print(f"[seed pipeline, training] 2 x {ENDPOINT_EPOCHS} x {ep_s:.2f} s + {CURVE_EPOCHS} x {cv_s:.2f} s "
          f"= {total / 60:.1f} min", flush=True)
    summary = dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                   machine=platform.processor() or platform.machine(), train_images=len(ytr),
                   endpoint_epoch=ep, curve_epoch=cv, pipeline_training_s=round(total, 1))
    print(json.dumps(summary))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
