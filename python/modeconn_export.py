"""Export any PyTorch classifier for modeconn as one TorchScript archive.

    python python/modeconn_export.py torchvision.models:resnet18 \\
        --kwargs '{"num_classes": 10}' --input-shape 3,32,32 --classes 10 \\
        --out resnet18.pt

FACTORY is ``package.module:callable`` or ``path/to/file.py:callable``; it is
called with ``--kwargs`` (a JSON object) and must return an ``nn.Module`` that
maps ``[B, C, H, W]`` float images to ``[B, classes]`` logits. ``--state-dict``
loads weights into it first (strictly). The archive then serves every
modeconn command with ``--arch torchscript --model-file resnet18.pt``.

What the archive holds, and why:

* The module under ``net`` (so ``torch.jit.load(f).net`` is the user's
  network), compiled by ``torch.jit.script``, or, where scripting fails,
  traced twice: ``forward`` in eval mode and ``forward_train`` in train mode
  (``--trace`` forces tracing).
* Every persistent buffer (BatchNorm's running statistics, or any other) moved
  into the module's parameters with ``requires_grad=False``, under its own
  name. libtorch's C++ API lists parameters but not buffers, so this is what
  lets modeconn read, reset and re-estimate BatchNorm statistics. The state
  dict's keys, order and values are unchanged.
* ``modeconn_meta``: a uint8 parameter holding a JSON description (input
  shape, classes, every state-dict entry with its shape and role, every
  BatchNorm layer with its momentum and eps, the buffers kept fixed).

The script checks its own output before writing: the archive's logits equal
the eager module's in eval mode and in train mode (same seed), and a train
step updates BatchNorm statistics as the eager module does. It writes the
file atomically. A TorchScript archive can run code when loaded, like a
pickle: load only archives you made or trust.

Exit status 0 on success, 2 on a refused model (with the reason).
"""

import argparse
import copy
import importlib
import importlib.util
import json
import os
import sys
import tempfile

FORMAT = 1


class Refused(Exception):
    """The model cannot be exported; the message says why and what to do."""


def load_factory(spec):
    if ":" not in spec:
        raise Refused(f"factory '{spec}' must be 'package.module:callable' or 'file.py:callable'")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py") or os.sep in where:
        if not os.path.isfile(where):
            raise Refused(f"{where}: no such file (the factory's module)")
        mod_spec = importlib.util.spec_from_file_location("modeconn_user_model", where)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules["modeconn_user_model"] = module
        mod_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise Refused(f"cannot import '{where}': {e}")
    fn = module
    for part in name.split("."):
        if not hasattr(fn, part):
            raise Refused(f"'{where}' has no attribute '{name}'")
        fn = getattr(fn, part)
    if not callable(fn):
        raise Refused(f"'{spec}' is not callable")
    return fn


def roles(net):
    """Every state-dict entry with its role: weight, bn (a BatchNorm running
    statistic) or fixed (any other buffer, or a frozen parameter)."""
    import torch.nn as nn

    bn_layers, bn_names = [], set()
    for prefix, m in net.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            p = prefix + "." if prefix else ""
            bn_layers.append({
                "prefix": prefix,
                "momentum": m.momentum,
                "eps": m.eps,
                "type": type(m).__name__,
            })
            for b in ("running_mean", "running_var", "num_batches_tracked"):
                bn_names.add(p + b)
    params = dict(net.named_parameters(remove_duplicate=False))
    entries = []
    for name, t in net.state_dict(keep_vars=True).items():
        if name in params:
            role = "weight" if params[name].requires_grad else "fixed"
        elif name in bn_names:
            role = "bn"
        else:
            role = "fixed"
        entries.append({
            "name": name,
            "shape": list(t.shape),
            "dtype": str(t.dtype).replace("torch.", ""),
            "role": role,
        })
    return entries, bn_layers


def check_model(net, input_shape, classes):
    import torch

    entries, bn_layers = roles(net)
    if not any(e["role"] == "weight" for e in entries):
        raise Refused("the module has no trainable parameters: there is nothing to train or connect")
    for e in entries:
        if e["role"] == "weight" and e["dtype"] != "float32":
            raise Refused(
                f"parameter '{e['name']}' is {e['dtype']}; modeconn trains float32 parameters "
                "(call .float() on the module in the factory)")
    sd = net.state_dict(keep_vars=True)
    seen = {}
    for name, t in sd.items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride())) if t.numel() else None
        if key is not None and key in seen:
            raise Refused(
                f"'{name}' and '{seen[key]}' are one shared (tied) tensor; modeconn needs every "
                "state-dict entry to be its own tensor")
        if key is not None:
            seen[key] = name
    net.eval()
    x = torch.rand(2, *input_shape)
    try:
        with torch.no_grad():
            y = net(x)
    except Exception as e:
        raise Refused(
            f"the module's forward failed on a [2, {', '.join(map(str, input_shape))}] image batch: {e}; "
            "modeconn calls forward(images) with one float tensor [B, C, H, W]")
    if not isinstance(y, torch.Tensor) or list(y.shape) != [2, classes]:
        got = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise Refused(f"the module's forward returned {got}, expected logits [2, {classes}] (--classes {classes})")
    return entries, bn_layers


class _Groups:
    """Union-find over permutation groups (a residual add joins two)."""

    def __init__(self):
        self.parent = []

    def new(self):
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, g):
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
        return a


# Modules and functions that keep each channel where it is (they act per
# channel or per position), so the permutation of their input passes through.
_SAME_CHANNELS = (
    "ReLU", "ReLU6", "LeakyReLU", "ELU", "GELU", "SiLU", "Sigmoid", "Tanh", "Hardswish", "Hardtanh",
    "Mish", "Softplus", "PReLU_scalar", "Dropout", "Dropout2d", "Identity", "MaxPool2d", "AvgPool2d",
    "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
)
_SAME_FUNCTIONS = {
    "relu", "relu_", "relu6", "gelu", "silu", "sigmoid", "tanh", "dropout", "max_pool2d",
    "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "leaky_relu",
}


class CannotDerive(Refused):
    pass


def derive_perm_spec(net, input_shape, classes):
    """The permutation symmetries of a network made of convolutions, linear
    layers, BatchNorm, per-channel activations, pooling, flattening and
    residual additions, found by tracing it with torch.fx: every hidden
    channel axis gets a permutation, a residual add joins the two it adds,
    and the input's and the logits' axes stay fixed. The format is
    docs/FORMATS.md's (align --perm-spec). Anything else is refused, naming
    the operation."""
    import operator

    import torch
    import torch.fx as fx
    import torch.nn as nn
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = fx.symbolic_trace(copy.deepcopy(net).eval())
        ShapeProp(gm).propagate(torch.rand(2, *input_shape))
    except Exception as e:  # noqa: BLE001
        raise CannotDerive(f"torch.fx cannot trace the module ({str(e).splitlines()[0]})")
    groups = _Groups()
    axes = []  # (param, axis, group, inner)
    value = {}  # node -> (group or None, features per channel)
    modules = dict(gm.named_modules())

    def shape(n):
        return list(n.meta["tensor_meta"].shape)

    def src(n):
        a = n.args[0]
        if a not in value:
            raise CannotDerive(f"'{n.name}' reads a value that is not an image tensor ({a})")
        return value[a]

    for n in gm.graph.nodes:
        if n.op == "placeholder":
            value[n] = (None, 1)
        elif n.op == "output":
            out = n.args[0]
            g = value.get(out, (None, 1))[0]
            if g is not None:
                fixed = groups.find(g)
                axes = [a for a in axes if groups.find(a[2]) != fixed]
        elif n.op == "call_module":
            m = modules[n.target]
            g_in, inner = src(n)
            kind = type(m).__name__
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if isinstance(m, nn.Conv2d) and m.groups != 1:
                    raise CannotDerive(f"'{n.target}' is a grouped convolution")
                g_out = groups.new()
                axes.append((f"{n.target}.weight", 0, g_out, 1))
                if m.bias is not None:
                    axes.append((f"{n.target}.bias", 0, g_out, 1))
                if g_in is not None:
                    axes.append((f"{n.target}.weight", 1, g_in, inner))
                value[n] = (g_out, 1)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                if g_in is None:
                    raise CannotDerive(f"'{n.target}' normalises the input itself")
                for b in ("weight", "bias", "running_mean", "running_var"):
                    if getattr(m, b, None) is not None:
                        axes.append((f"{n.target}.{b}", 0, g_in, 1))
                value[n] = (g_in, inner)
            elif kind in _SAME_CHANNELS:
                value[n] = (g_in, inner)
            elif isinstance(m, nn.Flatten):
                if m.start_dim != 1:
                    raise CannotDerive(f"'{n.target}' flattens from dimension {m.start_dim}")
                s = shape(n.args[0])
                value[n] = (g_in, inner * _prod(s[2:]))
            else:
                raise CannotDerive(f"'{n.target}' is a {kind}, which this derivation does not know")
        elif n.op == "call_function" or n.op == "call_method":
            name = getattr(n.target, "__name__", str(n.target))
            if n.target in (operator.add, operator.iadd, torch.add) or name in ("add", "add_", "iadd"):
                a, b = (value.get(x) for x in n.args[:2])
                if a is None or b is None or a[1] != b[1]:
                    raise CannotDerive(f"'{n.name}' adds values of different shapes")
                if (a[0] is None) != (b[0] is None):
                    raise CannotDerive(f"'{n.name}' adds the input to a hidden value")
                g = groups.union(a[0], b[0]) if a[0] is not None else None
                value[n] = (g, a[1])
            elif name in ("flatten",):
                start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
                if start != 1:
                    raise CannotDerive(f"'{n.name}' flattens from dimension {start}")
                g_in, inner = src(n)
                value[n] = (g_in, inner * _prod(shape(n.args[0])[2:]))
            elif name in _SAME_FUNCTIONS:
                value[n] = src(n)
            else:
                raise CannotDerive(f"'{n.name}' calls {name}, which this derivation does not know")
        else:
            raise CannotDerive(f"'{n.name}' ({n.op}) is not supported")
    perms = {}
    roots = sorted({groups.find(a[2]) for a in axes})
    for i, r in enumerate(roots):
        entries = [[p, ax] + ([inner] if inner != 1 else []) for (p, ax, g, inner) in axes if groups.find(g) == r]
        first = entries[0][0]
        perms[f"{i:03}:{first.rsplit('.', 1)[0]}"] = entries
    if not perms:
        raise CannotDerive("the network has no hidden channel to permute")
    return {"format": 1, "perms": perms}


def check_perm_spec(net, spec, input_shape):
    """Permuting by the spec at random leaves the logits as they are."""
    import torch

    net = copy.deepcopy(net).eval()
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    for entries in spec["perms"].values():
        p, ax = entries[0][0], entries[0][1]
        inner = entries[0][2] if len(entries[0]) > 2 else 1
        size = sd[p].shape[ax] // inner
        perm = torch.randperm(size, generator=gen)
        for e in entries:
            name, axis = e[0], e[1]
            k = e[2] if len(e) > 2 else 1
            t = sd[name]
            idx = (perm[:, None] * k + torch.arange(k)[None, :]).reshape(-1)
            sd[name] = t.index_select(axis, idx)
    x = torch.rand(4, *input_shape, generator=gen)
    with torch.no_grad():
        before = net(x)
        net.load_state_dict(sd)
        after = net(x)
    d = (before - after).abs().max().item()
    if d > 1e-4 * max(1.0, before.abs().max().item()):
        raise CannotDerive(f"the derived spec changes the logits by {d:.3g} (an operation the derivation misread)")


def _prod(xs):
    n = 1
    for x in xs:
        n *= x
    return n


def buffers_to_parameters(net):
    """Moves every persistent buffer into its module's parameters, frozen,
    under the same name (state-dict keys, order and values unchanged)."""
    import torch.nn as nn

    for m in net.modules():
        for name in list(m._buffers):
            b = m._buffers[name]
            if b is None or name in m._non_persistent_buffers_set:
                continue
            del m._buffers[name]
            m._parameters[name] = nn.Parameter(b, requires_grad=False)


def build_wrapper(net, meta, trace, example):
    """The archive: scripted where possible, else traced; `meta` gains the method used."""
    import torch
    import torch.nn as nn

    class Carrier(nn.Module):
        """The user's network under `net`, and the metadata as a uint8 parameter."""

        def __init__(self, inner, meta):
            super().__init__()
            self.net = inner
            self.modeconn_meta = nn.Parameter(
                torch.tensor(list(meta.encode("utf-8")), dtype=torch.uint8), requires_grad=False)

    class ModeconnNet(Carrier):
        def forward(self, x):
            return self.net(x)

        @torch.jit.export
        def forward_train(self, x):
            return self.net(x)

    class TracedModes(Carrier):
        """Tracing bakes the training flag in: one method per mode."""

        def forward(self, x):
            self.net.eval()
            return self.net(x)

        def forward_train(self, x):
            self.net.train()
            return self.net(x)

    if not trace:
        try:
            meta["method"] = "script"
            return torch.jit.script(ModeconnNet(net, json.dumps(meta)))
        except Exception as e:  # noqa: BLE001 - any scripting failure falls back to tracing
            print(f"modeconn_export: torch.jit.script failed ({str(e).splitlines()[0]}); tracing instead",
                  file=sys.stderr)
    meta["method"] = "trace"
    w = TracedModes(net, json.dumps(meta))
    # Tracing runs forward_train in train mode: keep the statistics as they were.
    state = copy.deepcopy(net.state_dict())
    traced = torch.jit.trace_module(w, {"forward": example, "forward_train": example}, check_trace=False)
    with torch.no_grad():
        for name, t in traced.net.named_parameters():
            t.copy_(state[name])
    return traced


def verify(archive_path, eager, input_shape, bn_layers):
    """The archive's logits equal the eager module's in both modes."""
    import torch

    loaded = torch.jit.load(archive_path)
    x = torch.rand(4, *input_shape, generator=torch.Generator().manual_seed(0))
    a, b = copy.deepcopy(eager), loaded
    a.eval()
    b.eval()
    with torch.no_grad():
        ya, yb = a(x), b(x)
    d_eval = (ya - yb).abs().max().item()
    a.train()
    b.train()
    with torch.no_grad():
        torch.manual_seed(1)
        ya = a(x)
        torch.manual_seed(1)
        yb = b.forward_train(x)
    d_train = (ya - yb).abs().max().item()
    scale = max(1.0, ya.abs().max().item())
    if d_eval > 1e-4 * scale or d_train > 1e-4 * scale:
        raise Refused(
            f"the archive does not reproduce the module (max logit difference {d_eval:.3g} in eval mode, "
            f"{d_train:.3g} in train mode); try --trace, or report the model")
    bn_diff = 0.0
    if bn_layers:
        pa = dict(a.state_dict())
        pb = {n[len("net."):]: t for n, t in b.named_parameters() if n.startswith("net.")}
        for layer in bn_layers:
            p = layer["prefix"] + "." if layer["prefix"] else ""
            for s in ("running_mean", "running_var"):
                bn_diff = max(bn_diff, (pa[p + s] - pb[p + s]).abs().max().item())
        if bn_diff > 1e-4:
            raise Refused(f"the archive's BatchNorm statistics after a train step differ from the module's by {bn_diff:.3g}")
    return d_eval, d_train


def export(args):
    import torch

    try:
        input_shape = [int(v) for v in args.input_shape.split(",")]
    except ValueError:
        raise Refused(f"--input-shape '{args.input_shape}' must be C,H,W (e.g. 3,32,32)")
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise Refused(f"--input-shape '{args.input_shape}' must be three positive sizes C,H,W")
    if args.classes < 2:
        raise Refused("--classes must be at least 2")
    try:
        kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as e:
        raise Refused(f"--kwargs is not JSON: {e}")
    if not isinstance(kwargs, dict):
        raise Refused("--kwargs must be a JSON object")
    torch.manual_seed(args.seed)
    net = load_factory(args.factory)(**kwargs)
    if not isinstance(net, torch.nn.Module):
        raise Refused(f"'{args.factory}' returned {type(net).__name__}, not an nn.Module")
    if args.state_dict:
        if args.state_dict.endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(args.state_dict)
        else:
            sd = torch.load(args.state_dict, map_location="cpu", weights_only=True)
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise Refused(f"{args.state_dict} does not fit the module: {str(e).splitlines()[0]}")
    net = net.cpu()
    entries, bn_layers = check_model(net, input_shape, args.classes)
    spec = None
    if args.perm_spec:
        try:
            spec = derive_perm_spec(net, input_shape, args.classes)
            check_perm_spec(net, spec, input_shape)
        except CannotDerive as e:
            raise Refused(
                f"cannot derive a permutation spec: {e}. It is derived for chains of convolutions, linear "
                "layers, BatchNorm, activations, pooling, flattening and residual additions; write one by "
                "hand (docs/FORMATS.md) or export without --perm-spec")
    eager = copy.deepcopy(net)
    meta = {
        "format": FORMAT,
        "factory": args.factory,
        "kwargs": kwargs,
        "input_shape": input_shape,
        "classes": args.classes,
        "entries": entries,
        "batchnorm": bn_layers,
        "torch": torch.__version__,
    }
    buffers_to_parameters(net)
    example = torch.rand(2, *input_shape)
    archive = build_wrapper(net, meta, args.trace, example)
    method = meta["method"]
    out = os.path.abspath(args.out)
    d = os.path.dirname(out)
    if not os.path.isdir(d):
        raise Refused(f"{d}: the folder for --out does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".modeconn-export-", suffix=".pt", dir=d)
    os.close(fd)
    try:
        archive.save(tmp)
        d_eval, d_train = verify(tmp, eager, input_shape, bn_layers)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    n_weights = sum(1 for e in entries if e["role"] == "weight")
    n_fixed = [e["name"] for e in entries if e["role"] == "fixed"]
    print(f"wrote {out}: {method}, {n_weights} trainable tensors "
          f"({sum(_numel(e) for e in entries if e['role'] == 'weight'):,} values), "
          f"{len(bn_layers)} BatchNorm layers, input {'x'.join(map(str, input_shape))}, {args.classes} classes; "
          f"logits match the module (max difference {d_eval:.2g} eval, {d_train:.2g} train)")
    if n_fixed:
        print(f"kept fixed (not trained, not re-estimated): {', '.join(n_fixed)}")
    if spec is not None:
        spec_out = os.path.abspath(args.perm_spec)
        fd, tmp = tempfile.mkstemp(prefix=".modeconn-spec-", suffix=".json", dir=os.path.dirname(spec_out))
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, spec_out)
        print(f"wrote {spec_out}: {len(spec['perms'])} permutations, checked to leave the logits unchanged "
              f"(for modeconn align --perm-spec)")
    return out


def _numel(e):
    n = 1
    for s in e["shape"]:
        n *= s
    return n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("factory", help="package.module:callable or file.py:callable returning the nn.Module")
    p.add_argument("--kwargs", default="{}", help="keyword arguments of the factory, as a JSON object")
    p.add_argument("--input-shape", required=True, help="C,H,W of one input image, e.g. 3,32,32")
    p.add_argument("--classes", type=int, required=True, help="number of classes (logits per image)")
    p.add_argument("--state-dict", help="weights to load into the module first (.pt/.pth or .safetensors)")
    p.add_argument("--out", required=True, help="the archive to write (e.g. model.pt)")
    p.add_argument("--trace", action="store_true", help="trace instead of scripting")
    p.add_argument("--perm-spec", metavar="F.json",
                   help="also derive the network's permutation symmetries with torch.fx (for align --perm-spec)")
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed before the factory runs (its initialisation)")
    args = p.parse_args(argv)
    try:
        export(args)
    except Refused as e:
        print(f"modeconn_export: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
