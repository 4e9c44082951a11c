"""PyTorch twins of modeconn's architectures (mirrors src/model/*.rs).

Every module here has exactly the state-dict keys, shapes and forward pass of
the Rust definition of the same name, so a modeconn checkpoint loads with
``load_state_dict(strict=True)`` and a PyTorch state dict saved with
``safetensors.torch.save_file`` can be given to modeconn unchanged.

    from modeconn_models import load_modeconn, preprocess
    model, meta = load_modeconn("runs/x/end_model/model.safetensors")
    model.eval()
    logits = model(preprocess(images_in_0_1_nchw, meta))

``widen`` is a channel multiplier in percent of the standard widths (100 =
standard) for every architecture except WideResNet, where it is the WRN widen
factor k. Initialisation follows the Rust side too (PyTorch defaults, or
He-normal convolutions with zero bias where the reference implementation uses
them), though only keys, shapes and forward are guaranteed to match.
Dependencies: torch and safetensors.
"""

import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _ch(c, widen):
    """src/model/mod.rs ArchConfig::ch: scale a standard width by widen percent."""
    return max(1, (c * widen + 50) // 100)


def _conv(cin, cout, k, padding, stride=1, bias=True, he=False):
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=bias)
    if he:  # the reference implementation's N(0, sqrt(2 / (k*k*out))), zero bias
        nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (k * k * cout)))
        if bias:
            nn.init.zeros_(conv.bias)
    return conv


class SeedConvNet(nn.Module):
    """The seed experiment's ConvNet (src/model/seed_convnet.rs)."""

    def __init__(self, in_channels, num_classes, dropout=0.5, widen=100):
        super().__init__()
        c1, c2, c3, h = (_ch(c, widen) for c in (16, 32, 64, 256))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((4, 4)))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c3 * 16, h), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(h, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """A multilayer perceptron (src/model/mlp.rs): `depth` hidden layers of 512."""

    def __init__(self, in_features, num_classes, depth=3, widen=100):
        super().__init__()
        h = _ch(512, widen)
        layers, n = [], in_features
        for _ in range(depth):
            layers += [nn.Linear(n, h), nn.ReLU()]
            n = h
        layers.append(nn.Linear(n, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(torch.flatten(x, 1))


def _pooled3(n):
    """Spatial size after ConvFC's three MaxPool2d(3, 2) (the 5x5 convs keep it)."""
    for _ in range(3):
        n = (n - 3) // 2 + 1
    return n


class ConvFC(nn.Module):
    """The reference implementation's ConvFC (src/model/convfc.rs)."""

    def __init__(self, in_channels, num_classes, height=32, width=32, widen=100):
        super().__init__()
        c1, c2, c3, h = (_ch(c, widen) for c in (32, 64, 128, 1000))
        self.conv_part = nn.Sequential(
            _conv(in_channels, c1, 5, 2, he=True), nn.ReLU(), nn.MaxPool2d(3, 2),
            _conv(c1, c2, 5, 2, he=True), nn.ReLU(), nn.MaxPool2d(3, 2),
            _conv(c2, c3, 5, 2, he=True), nn.ReLU(), nn.MaxPool2d(3, 2))
        self.fc_part = nn.Sequential(
            nn.Linear(c3 * _pooled3(height) * _pooled3(width), h), nn.ReLU(),
            nn.Linear(h, h), nn.ReLU(), nn.Linear(h, num_classes))

    def forward(self, x):
        return self.fc_part(self.conv_part(x).flatten(1))


class VGG16(nn.Module):
    """VGG16 with or without BatchNorm (src/model/vgg.rs).

    ``layer_blocks.<b>.<i>``: conv at even i and BatchNorm at odd i with
    batch_norm, conv at every i without; ReLU and pooling are functional.
    """

    BLOCKS = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]

    def __init__(self, in_channels, num_classes, batch_norm=False, widen=100, dropout=0.5):
        super().__init__()
        self.batch_norm = batch_norm
        self.layer_blocks = nn.ModuleList()
        cin = in_channels
        for sizes in self.BLOCKS:
            block = nn.ModuleList()
            for c in sizes:
                c = _ch(c, widen)
                block.append(_conv(cin, c, 3, 1, he=True))
                if batch_norm:
                    block.append(nn.BatchNorm2d(c))
                cin = c
            self.layer_blocks.append(block)
        h = _ch(512, widen)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(cin, h), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, num_classes))

    def forward(self, x):
        step = 2 if self.batch_norm else 1
        for block in self.layer_blocks:
            for i in range(0, len(block), step):
                x = block[i](x)
                if self.batch_norm:
                    x = block[i + 1](x)
                x = F.relu(x)
            x = F.max_pool2d(x, 2, 2)
        if x.shape[2] > 1 or x.shape[3] > 1:  # inputs above 32x32
            x = F.adaptive_avg_pool2d(x, 1)
        return self.classifier(x.flatten(1))


class _PreBasic(nn.Module):
    def __init__(self, cin, planes, stride, down):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv(cin, planes, 3, 1, stride=stride, he=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, 1, he=True)
        if down:
            self.downsample = nn.Sequential(_conv(cin, planes, 1, 0, stride=stride, bias=False, he=True))

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + (self.downsample(x) if hasattr(self, "downsample") else x)


class _PreBottleneck(nn.Module):
    def __init__(self, cin, planes, stride, down):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv(cin, planes, 1, 0, bias=False, he=True)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, 1, stride=stride, bias=False, he=True)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, planes * 4, 1, 0, bias=False, he=True)
        if down:
            self.downsample = nn.Sequential(_conv(cin, planes * 4, 1, 0, stride=stride, bias=False, he=True))

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + (self.downsample(x) if hasattr(self, "downsample") else x)


class PreResNet(nn.Module):
    """Pre-activation ResNet (src/model/preresnet.rs): depth 6n+2 basic blocks
    below 44, 9n+2 bottlenecks (expansion 4) from 44."""

    def __init__(self, in_channels, num_classes, depth=110, widen=100):
        super().__init__()
        bottleneck = depth >= 44
        n, exp, block = ((depth - 2) // 9, 4, _PreBottleneck) if bottleneck else ((depth - 2) // 6, 1, _PreBasic)
        inplanes = _ch(16, widen)
        self.conv1 = _conv(in_channels, inplanes, 3, 1, bias=False, he=True)
        for stage, (planes, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
            planes = _ch(planes, widen)
            layers = []
            for i in range(n):
                s = stride if i == 0 else 1
                layers.append(block(inplanes, planes, s, i == 0 and (s != 1 or inplanes != planes * exp)))
                inplanes = planes * exp
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.bn = nn.BatchNorm2d(inplanes)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.bn(x)), 1).flatten(1))


class _WideBasic(nn.Module):
    def __init__(self, cin, planes, stride, dropout):
        super().__init__()
        self.dropout = dropout
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1)
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes, 1, stride=stride))

    def forward(self, x):
        out = F.dropout(self.conv1(F.relu(self.bn1(x))), self.dropout, self.training)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + (self.shortcut(x) if hasattr(self, "shortcut") else x)


class WideResNet(nn.Module):
    """Wide ResNet (src/model/wrn.rs): depth 6n+4, widen factor k (not percent)."""

    def __init__(self, in_channels, num_classes, depth=28, widen=10, dropout=0.0):
        super().__init__()
        n, cin = (depth - 4) // 6, 16
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        for stage, (planes, stride) in enumerate([(16 * widen, 1), (32 * widen, 2), (64 * widen, 2)]):
            layers = []
            for i in range(n):
                layers.append(_WideBasic(cin, planes, stride if i == 0 else 1, dropout))
                cin = planes
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.bn1 = nn.BatchNorm2d(cin)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(F.relu(self.bn1(x)), 1).flatten(1))


def build(arch):
    """A module from modeconn's ArchConfig JSON (the "arch" object of the metadata)."""
    a, c, k = arch["arch"], arch["in_channels"], arch["num_classes"]
    widen, depth, dropout = arch.get("widen", 100), arch.get("depth", 0), arch.get("dropout", 0.0)
    if a == "seed-convnet":
        return SeedConvNet(c, k, dropout, widen)
    if a == "convfc":
        return ConvFC(c, k, arch["height"], arch["width"], widen)
    if a in ("vgg16", "vgg16-bn"):
        return VGG16(c, k, a == "vgg16-bn", widen, dropout)
    if a == "preresnet":
        return PreResNet(c, k, depth, widen)
    if a == "wrn":
        return WideResNet(c, k, depth, widen, dropout)
    if a == "mlp":
        return MLP(c * arch["height"] * arch["width"], k, depth, widen)
    raise ValueError(f"unknown modeconn architecture {a!r}")


def load_modeconn(path, device="cpu"):
    """Load a modeconn model.safetensors: returns (model, meta).

    ``meta`` is the parsed JSON of the file's "modeconn" metadata ("arch",
    "normalize", "norm_mean", "norm_std", "classes", ...). The weights are
    loaded with strict=True; the model is returned in eval mode.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as f:
        md = f.metadata() or {}
    if "modeconn" not in md:
        raise ValueError(f"{path}: no 'modeconn' metadata; build the module yourself and load_state_dict")
    meta = json.loads(md["modeconn"])
    model = build(meta["arch"])
    model.load_state_dict(load_file(path, device=str(device)), strict=True)
    return model.to(device).eval(), meta


def preprocess(x, meta):
    """Map NCHW pixels in [0, 1] to the model's input, as modeconn does:
    (x - norm_mean) / norm_std per channel (identity for normalize "none")."""
    if meta.get("normalize", "none") == "none":
        return x
    mean = torch.tensor(meta["norm_mean"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(meta["norm_std"], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std
