"""An MLP built from a tuple of hidden sizes, each layer followed by LayerNorm and GELU."""

import torch
from torch import nn


class Model(nn.Module):
    def __init__(self, num_classes=10, hidden=(128, 64)):
        super().__init__()
        sizes = (64, *hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in hidden)
        self.act = nn.GELU()
        self.out = nn.Linear(sizes[-1], num_classes)

    def forward(self, x):
        x = x.flatten(1)
        for layer, norm in zip(self.layers, self.norms):
            x = self.act(norm(layer(x)))
        return self.out(x)
