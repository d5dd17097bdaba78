"""A small CNN trained on scikit-learn's digits (real 8x8 handwritten digits, offline).

``train_digits_cnn()`` returns the trained model (eval mode) and the data split:
1347 training / 450 test images, normalised to [0, 1] and shaped ``[N, 1, 8, 8]``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc1 = nn.Linear(2 * width * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


@dataclasses.dataclass
class DigitsData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def batches(self, size: int = 50) -> tuple[list[tuple[torch.Tensor]], list[torch.Tensor]]:
        """Full training batches (the last partial one is dropped: fixed shapes)."""
        n = (len(self.x_train) // size) * size
        xs = [(self.x_train[i:i + size],) for i in range(0, n, size)]
        ys = [self.y_train[i:i + size] for i in range(0, n, size)]
        return xs, ys


def load_digits(seed: int = 0) -> DigitsData:
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return DigitsData(x[:1347], y[:1347], x[1347:], y[1347:])


def accuracy(fn, x: torch.Tensor, y: torch.Tensor, batch: int = 50) -> float:
    """Top-1 accuracy in percent of ``fn`` (a module or a Program's run) on ``x``."""
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = fn(x[i:i + batch])
            out = out[0] if isinstance(out, (tuple, list)) else out
            correct += int((out.argmax(-1) == y[i:i + batch]).sum())
    return 100.0 * correct / len(x)


def train_digits_cnn(epochs: int = 30, seed: int = 0) -> tuple[DigitsCNN, DigitsData]:
    torch.manual_seed(seed)
    data = load_digits(seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(data.x_train), generator=g)
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), data
