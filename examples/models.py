"""Small real-architecture CNNs used by the example, the tests and the benchmarks.

* ``resnet20`` -- the CIFAR ResNet-20 of He et al. (basic blocks with residual adds,
  projection shortcuts at stride changes), 0.27 M parameters;
* ``mobilenet_v2`` -- a width-reduced MobileNetV2 (inverted residuals, depthwise
  convolutions, ReLU6, linear bottlenecks) for 32x32 inputs.

Weights are random, but batch-norm statistics are made realistic by ``calibrate_bn``
(a few training-mode forwards), so folding them is a real test.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks_per_stage: int = 3, width: int = 16, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        layers = []
        cin = width
        for stage, cout in enumerate((width, width * 2, width * 4)):
            for i in range(blocks_per_stage):
                layers.append(BasicBlock(cin, cout, 2 if (i == 0 and stage > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),  # depthwise
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),  # linear bottleneck
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV2(nn.Module):
    # (expansion, channels, repeats, stride), halved widths of the ImageNet configuration.
    CONFIG = ((1, 8, 1, 1), (6, 12, 2, 1), (6, 16, 3, 2), (6, 32, 4, 2), (6, 48, 3, 1),
              (6, 80, 3, 2), (6, 160, 1, 1))

    def __init__(self, num_classes: int = 10, last: int = 640):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                   nn.ReLU6()]
        cin = 16
        for t, c, n, s in self.CONFIG:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean((2, 3))
        return self.classifier(x)


@torch.no_grad()
def calibrate_bn(model: nn.Module, shape: tuple[int, ...], steps: int = 4, seed: int = 0
                 ) -> nn.Module:
    """Give batch norms non-trivial running statistics, then switch to eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    for _ in range(steps):
        model(torch.randn(shape, generator=gen))
    return model.eval()


def resnet20(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return calibrate_bn(ResNet(), (8, 3, 32, 32), seed=seed)


def mobilenet_v2(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return calibrate_bn(MobileNetV2(), (8, 3, 32, 32), seed=seed)
