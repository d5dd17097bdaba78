"""The classic CNN generation as ONNX files: AlexNet-, ZFNet-, GoogLeNet-, Inception-v2-
(BN-Inception), VGG- and early-ResNet-style networks written in PyTorch and exported with
torch.onnx's TorchScript exporter (``dynamo=False``: the dynamo exporter writes opset 18 and
cannot go lower) at opsets 9, 10 and 11, with random weights.

Widths and resolutions are small so the tests stay fast, but every operator form of the
originals is kept: 11x11 stride-4 and 7x7 stride-2 kernels, grouped convolutions,
LocalResponseNormalization, ceil-mode and padded max/average pooling (count_include_pad
both ways), concat-heavy inception blocks, Dropout, Flatten + Gemm classifiers, BatchNorm
with non-trivial running statistics, residual additions. ``upgraded`` also writes the
opset-9 export upgraded by ``onnx.version_converter`` (the path an old model takes when a
user upgrades it before importing).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings

import torch
from torch import nn

OPSETS = (9, 10, 11)


def _seed_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Random running statistics and affine parameters (trained models have them; zero-mean
    unit-variance statistics would hide a converter that ignores them)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model


class _LRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        return nn.functional.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g, x, size, alpha, beta, k):
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class LRN(nn.Module):
    """LocalResponseNormalization exported as the ONNX ``LRN`` operator, as Caffe-converted
    models have it (torch.onnx writes ``nn.LocalResponseNorm`` as its decomposition:
    Pad, 3-D AveragePool, Pow, Div -- and at opset 11 an ``If`` on the input rank)."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.args = (size, alpha, beta, k)

    def forward(self, x):
        return _LRNFunction.apply(x, *self.args)


class AlexNet(nn.Module):
    """Krizhevsky et al. 2012, Caffe form: 11x11/4 conv, LRN after conv1/conv2, grouped
    conv2/4/5, 3x3/2 overlapping max pools (ceil mode, as Caffe rounds up), FC head."""

    def __init__(self, w: int = 8, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6 * w, 11, stride=4, padding=2), nn.ReLU(inplace=True),
            LRN(5, alpha=1e-4, beta=0.75, k=2.0),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(6 * w, 16 * w, 5, padding=2, groups=2), nn.ReLU(inplace=True),
            LRN(5, alpha=1e-4, beta=0.75, k=2.0),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(16 * w, 24 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(24 * w, 24 * w, 3, padding=1, groups=2), nn.ReLU(inplace=True),
            nn.Conv2d(24 * w, 16 * w, 3, padding=1, groups=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.LazyLinear(32 * w), nn.ReLU(inplace=True),
            nn.Dropout(), nn.Linear(32 * w, 32 * w), nn.ReLU(inplace=True),
            nn.Linear(32 * w, classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class ZFNet(nn.Module):
    """Zeiler & Fergus 2013: 7x7/2 conv, 3x3/2 padded max pool, torch's own
    ``nn.LocalResponseNorm`` (exported as its decomposition) with an even window (size 4),
    dense 3x3 convs."""

    def __init__(self, w: int = 8, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6 * w, 7, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, padding=1),
            nn.LocalResponseNorm(4, alpha=1e-3, beta=0.75, k=1.0),
            nn.Conv2d(6 * w, 16 * w, 5, stride=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
            nn.LocalResponseNorm(3, alpha=5e-4, beta=0.5, k=2.0),
            nn.Conv2d(16 * w, 24 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(24 * w, 24 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(24 * w, 16 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
        )
        self.classifier = nn.Sequential(nn.Dropout(), nn.LazyLinear(32 * w),
                                        nn.ReLU(inplace=True), nn.Linear(32 * w, classes))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class _Inception(nn.Module):
    """GoogLeNet's block: 1x1 | 1x1->3x3 | 1x1->5x5 | 3x3/1 max pool (ceil mode) -> 1x1."""

    def __init__(self, cin, c1, c3r, c3, c5r, c5, cp):
        super().__init__()
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        self.b1 = nn.Sequential(nn.Conv2d(cin, c1, 1), relu())
        self.b2 = nn.Sequential(nn.Conv2d(cin, c3r, 1), relu(), nn.Conv2d(c3r, c3, 3, padding=1), relu())
        self.b3 = nn.Sequential(nn.Conv2d(cin, c5r, 1), relu(), nn.Conv2d(c5r, c5, 5, padding=2), relu())
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, padding=1, ceil_mode=True),
                                nn.Conv2d(cin, cp, 1), relu())

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    """Szegedy et al. 2014 (Caffe form): 7x7/2 stem, ceil-mode 3x3/2 max pools, LRN,
    inception blocks 3a/3b/4a, 5x5/3 average pool of the auxiliary head's form, global
    average pool, FC."""

    def __init__(self, w: int = 2, classes: int = 10):
        super().__init__()
        relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32 * w, 7, stride=2, padding=3), relu(),
            nn.MaxPool2d(3, 2, ceil_mode=True), LRN(5, 1e-4, 0.75),
            nn.Conv2d(32 * w, 32 * w, 1), relu(), nn.Conv2d(32 * w, 96 * w, 3, padding=1), relu(),
            LRN(5, 1e-4, 0.75), nn.MaxPool2d(3, 2, ceil_mode=True),
        )
        self.i3a = _Inception(96 * w, 32 * w, 48 * w, 64 * w, 8 * w, 16 * w, 16 * w)
        self.i3b = _Inception(128 * w, 64 * w, 64 * w, 96 * w, 16 * w, 48 * w, 32 * w)
        self.pool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.i4a = _Inception(240 * w, 96 * w, 48 * w, 104 * w, 8 * w, 24 * w, 32 * w)
        self.aux = nn.Sequential(nn.AvgPool2d(5, 3, ceil_mode=True), nn.Conv2d(256 * w, 32 * w, 1), relu())
        self.fc = nn.Linear(256 * w + 32 * w, classes)
        self.drop = nn.Dropout(0.4)

    def forward(self, x):
        x = self.pool3(self.i3b(self.i3a(self.stem(x))))
        x = self.i4a(x)
        aux = self.aux(x).mean((2, 3))
        main = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(self.drop(torch.cat([main, aux], 1)))


class _BNConv(nn.Sequential):
    def __init__(self, cin, cout, k, stride=1, padding=0):
        super().__init__(nn.Conv2d(cin, cout, k, stride, padding, bias=False),
                         nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU(inplace=True))


class _InceptionV2(nn.Module):
    """BN-Inception block: 1x1 | 1x1->3x3 | 1x1->3x3->3x3 | 3x3 avg (or max) pool -> 1x1;
    a stride-2 block drops the 1x1 branch and passes the pool through (Ioffe & Szegedy 2015)."""

    def __init__(self, cin, c1, c3r, c3, d3r, d3, cp, pool="avg", stride=1):
        super().__init__()
        self.stride = stride
        self.b1 = _BNConv(cin, c1, 1) if stride == 1 else None
        self.b2 = nn.Sequential(_BNConv(cin, c3r, 1), _BNConv(c3r, c3, 3, stride, 1))
        self.b3 = nn.Sequential(_BNConv(cin, d3r, 1), _BNConv(d3r, d3, 3, 1, 1),
                                _BNConv(d3, d3, 3, stride, 1))
        if stride == 2:
            self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        elif pool == "avg":
            self.pool = nn.Sequential(nn.AvgPool2d(3, 1, padding=1, ceil_mode=True,
                                                   count_include_pad=False), _BNConv(cin, cp, 1))
        else:
            self.pool = nn.Sequential(nn.MaxPool2d(3, 1, padding=1, ceil_mode=True), _BNConv(cin, cp, 1))

    def forward(self, x):
        parts = [self.b2(x), self.b3(x), self.pool(x)]
        return torch.cat(([self.b1(x)] if self.b1 is not None else []) + parts, 1)


class InceptionV2(nn.Module):
    """BN-Inception: BN after every conv, 3a/3b/3c(stride 2)/4a, average pools with padding
    and count_include_pad=False, ceil-mode max pools, 7x7/1 average pool head of the
    original replaced by a padded ceil-mode 3x3/2 average pool + global mean."""

    def __init__(self, w: int = 2, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(_BNConv(3, 32 * w, 7, 2, 3), nn.MaxPool2d(3, 2, ceil_mode=True),
                                  _BNConv(32 * w, 32 * w, 1), _BNConv(32 * w, 96 * w, 3, 1, 1),
                                  nn.MaxPool2d(3, 2, ceil_mode=True))
        self.i3a = _InceptionV2(96 * w, 32 * w, 32 * w, 32 * w, 32 * w, 48 * w, 16 * w)
        self.i3b = _InceptionV2(128 * w, 32 * w, 32 * w, 48 * w, 32 * w, 48 * w, 32 * w, pool="max")
        self.i3c = _InceptionV2(160 * w, 0, 64 * w, 80 * w, 32 * w, 48 * w, 0, stride=2)
        self.i4a = _InceptionV2(288 * w, 112 * w, 32 * w, 48 * w, 48 * w, 64 * w, 64 * w)
        self.head_pool = nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=True)
        self.fc = nn.Linear(288 * w, classes)

    def forward(self, x):
        x = self.i4a(self.i3c(self.i3b(self.i3a(self.stem(x)))))
        return self.fc(self.head_pool(x).mean((2, 3)))


class VGG(nn.Module):
    """Simonyan & Zisserman 2014, configuration A (VGG-11) without BatchNorm: 3x3 convs,
    2x2/2 max pools, FC head of 3 Linear layers with Dropout."""

    def __init__(self, w: int = 4, classes: int = 10):
        super().__init__()
        cfg = [16 * w, "M", 32 * w, "M", 64 * w, 64 * w, "M", 128 * w, 128 * w, "M", 128 * w, 128 * w, "M"]
        layers, c = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.LazyLinear(64 * w), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(64 * w, 64 * w), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(64 * w, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class _Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """He et al. 2015, ResNet-18 layout (one block per stage here): 7x7/2 conv, BN, 3x3/2
    padded max pool, basic blocks with 1x1/2 projection shortcuts, global average pool, FC."""

    def __init__(self, w: int = 8, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8 * w, 7, 2, 3, bias=False), nn.BatchNorm2d(8 * w),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        self.layers = nn.Sequential(_Basic(8 * w, 8 * w, 1), _Basic(8 * w, 16 * w, 2),
                                    _Basic(16 * w, 32 * w, 2), _Basic(32 * w, 64 * w, 2))
        self.fc = nn.Linear(64 * w, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, (1, 1)).flatten(1))


# name -> (builder, input shape)
MODELS = {
    "alexnet": (lambda: AlexNet(), (1, 3, 147, 147)),
    "zfnet": (lambda: ZFNet(), (1, 3, 117, 117)),
    "googlenet": (lambda: GoogLeNet(), (1, 3, 99, 99)),
    "inception_v2": (lambda: InceptionV2(), (1, 3, 99, 99)),
    "vgg": (lambda: VGG(), (1, 3, 64, 64)),
    "resnet": (lambda: ResNet(), (1, 3, 96, 96)),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """The model ``name`` with seeded random weights, in eval mode, and its input shape."""
    make, shape = MODELS[name]
    torch.manual_seed(seed)
    model = make()
    with torch.no_grad():
        model.eval()(torch.zeros(shape))  # sizes the LazyLinear heads
    return _seed_batchnorm(model, seed), shape


def export(name: str, opset: int, path: str | os.PathLike[str], seed: int = 0) -> str:
    """Export ``name`` at ``opset`` to ``path`` with torch.onnx's TorchScript exporter."""
    model, shape = build(name, seed)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), opset_version=opset, dynamo=False,
                          input_names=["input"], output_names=["logits"])
    return str(path)


def upgraded(src: str, dst: str | os.PathLike[str], opset: int = 11) -> str:
    """``src`` upgraded to ``opset`` by onnx's version converter."""
    import onnx
    from onnx import version_converter

    onnx.save(version_converter.convert_version(onnx.load(src), opset), str(dst))
    return str(dst)
