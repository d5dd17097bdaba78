"""Small, faithful versions of the CNN families the ONNX importer must cover (random
weights, CIFAR-sized inputs): each uses the operators its full-size namesake exports."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SqueezeExcite(nn.Module):  # MobileNetV3 / EfficientNet
    def __init__(self, c: int, gate: nn.Module):
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(c // 4, 4), 1)
        self.fc2 = nn.Conv2d(max(c // 4, 4), c, 1)
        self.gate = gate

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(F.relu(self.fc1(s))))


class MobileNetV3Block(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.Hardswish(),
                         nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.Hardswish(),
                         SqueezeExcite(16, nn.Hardsigmoid()), nn.Conv2d(16, 24, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))


class EfficientNetBlock(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.SiLU(),
                         nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.SiLU(),
                         SqueezeExcite(16, nn.Sigmoid()), nn.Conv2d(16, 24, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(24, 10))


class Fire(nn.Module):  # SqueezeNet
    def __init__(self, cin, s, e):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, s, 1)
        self.e1 = nn.Conv2d(s, e, 1)
        self.e3 = nn.Conv2d(s, e, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.e1(x)), F.relu(self.e3(x))], 1)


class SqueezeNet(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 16, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                         Fire(16, 8, 16), Fire(32, 8, 16), nn.Conv2d(32, 10, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


class ShuffleUnit(nn.Module):  # ShuffleNetV2: split, branch, concat, channel shuffle
    def __init__(self, c):
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(nn.Conv2d(h, h, 1), nn.BatchNorm2d(h), nn.ReLU(),
                                    nn.Conv2d(h, h, 3, 1, 1, groups=h), nn.BatchNorm2d(h),
                                    nn.Conv2d(h, h, 1), nn.ReLU())

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        y = torch.cat([a, self.branch(b)], 1)
        n, c, h, w = y.shape
        return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleNet(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), ShuffleUnit(16), ShuffleUnit(16),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


class DenseLayer(nn.Module):  # DenseNet
    def __init__(self, cin, growth):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class DenseNet(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 8, 3, padding=1), DenseLayer(8, 4), DenseLayer(12, 4),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 10))


class InceptionBlock(nn.Module):  # GoogLeNet / Inception: parallel branches, LRN, pools
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.LocalResponseNorm(5))
        self.b1 = nn.Conv2d(16, 8, 1)
        self.b3 = nn.Sequential(nn.Conv2d(16, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.b5 = nn.Sequential(nn.Conv2d(16, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 5, padding=2))
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(16, 4, 1))
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = self.stem(x)
        y = torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)
        return self.fc(F.adaptive_avg_pool2d(F.relu(y), 1).flatten(1))


class VGG(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(), nn.Dropout(),
                         nn.Linear(32, 10), nn.LogSoftmax(-1))


ZOO = {"mobilenet_v3": MobileNetV3Block, "efficientnet": EfficientNetBlock,
       "squeezenet": SqueezeNet, "shufflenet": ShuffleNet, "densenet": DenseNet,
       "inception": InceptionBlock, "vgg": VGG}


def make(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = ZOO[name]()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()
