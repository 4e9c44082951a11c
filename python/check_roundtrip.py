"""Check that python/modeconn_models.py matches modeconn's Rust architectures.

    .venv-bench/bin/python python/check_roundtrip.py [MODEL.safetensors] [--out-dir DIR]

(a) loads MODEL (a modeconn model.safetensors, e.g. runs/x/end_model/model.safetensors)
    with load_modeconn (strict=True);
(b) runs it in eval mode on a fixed, RNG-free input and prints the logits, for
    comparison with modeconn's forward on the same input:
        x[n, c, h, w] = ((7n + 5c + 3h + w) mod 17) / 16,  n in {0, 1}
    then preprocessed with the checkpoint's normalisation (see preprocess());
(c) for every architecture at modeconn's default config (ArchConfig::new;
    CIFAR-10 shapes, 3x32x32, 10 classes) instantiates the module, saves its
    state_dict with safetensors.torch.save_file into DIR (default: a temp dir),
    and prints the sorted keys with shapes, dtypes and the weight count (the
    Rust tests pin seed-convnet 288554, convfc 2422634, wrn 36489290).
"""

import argparse
import os
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from modeconn_models import build, load_modeconn, preprocess  # noqa: E402

# modeconn defaults per architecture (src/model/mod.rs ArchConfig::new)
ARCHS = {
    "seed-convnet": dict(depth=0, widen=100, dropout=0.5),
    "convfc": dict(depth=0, widen=100, dropout=0.0),
    "vgg16": dict(depth=0, widen=100, dropout=0.5),
    "vgg16-bn": dict(depth=0, widen=100, dropout=0.5),
    "preresnet": dict(depth=110, widen=100, dropout=0.0),
    "wrn": dict(depth=28, widen=10, dropout=0.0),
    "mlp": dict(depth=3, widen=100, dropout=0.0),
}


def fixed_input(n, c, h, w):
    i = torch.arange(n).view(n, 1, 1, 1) * 7 + torch.arange(c).view(1, c, 1, 1) * 5
    i = i + torch.arange(h).view(1, 1, h, 1) * 3 + torch.arange(w).view(1, 1, 1, w)
    return (i % 17).float() / 16


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="a modeconn model.safetensors for (a) and (b)")
    ap.add_argument("--out-dir", help="where (c) writes <arch>.safetensors (default: a temp dir)")
    args = ap.parse_args()
    torch.manual_seed(0)

    if args.model:
        model, meta = load_modeconn(args.model)
        a = meta["arch"]
        print(f"# (a) loaded {args.model} strict=True: {a['arch']} {a['in_channels']}x{a['height']}x{a['width']} "
              f"-> {a['num_classes']} classes, normalize={meta.get('normalize')}")
        x = preprocess(fixed_input(2, a["in_channels"], a["height"], a["width"]), meta)
        with torch.no_grad():
            logits = model(x)
        print("# (b) logits on x[n,c,h,w] = ((7n+5c+3h+w) mod 17)/16, eval mode")
        torch.set_printoptions(precision=6, linewidth=200)
        for n, row in enumerate(logits):
            print(f"logits[{n}] = " + " ".join(f"{v:.6f}" for v in row.tolist()))

    out = args.out_dir or tempfile.mkdtemp(prefix="modeconn_keys_")
    os.makedirs(out, exist_ok=True)
    print(f"# (c) state dicts at modeconn's default configs, saved in {out}")
    for name, cfg in ARCHS.items():
        m = build(dict(arch=name, in_channels=3, num_classes=10, height=32, width=32, **cfg))
        path = os.path.join(out, f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, path)
        sd = load_file(path)
        m.load_state_dict(sd, strict=True)  # the saved file loads back
        weights = sum(p.numel() for p in m.parameters())
        with torch.no_grad():
            y = m.eval()(fixed_input(2, 3, 32, 32))
        print(f"## {name} {cfg}: {len(sd)} keys, {weights} weights, logits shape {list(y.shape)}")
        for k in sorted(sd):
            print(f"{name} {k} {list(sd[k].shape)} {str(sd[k].dtype).replace('torch.', '')}")


if __name__ == "__main__":
    main()
