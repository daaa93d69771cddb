"""A conv net built in a loop from a block of settings."""

import torch
from torch import nn

CHANNELS = [8, 16]
KERNEL = 3
ACTIVATION = "relu"
DROPOUT = 0.1
HIDDEN = 32


def activation():
    return {"relu": nn.ReLU(), "gelu": nn.GELU(), "silu": nn.SiLU(), "tanh": nn.Tanh()}.get(ACTIVATION, nn.ReLU())


class Model(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        layers = []
        channels = 1
        for out in CHANNELS:
            layers += [nn.Conv2d(channels, out, KERNEL, padding=KERNEL // 2), nn.BatchNorm2d(out), activation()]
            channels = out
        layers.append(nn.AdaptiveAvgPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * 4, HIDDEN), activation(), nn.Dropout(DROPOUT), nn.Linear(HIDDEN, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
