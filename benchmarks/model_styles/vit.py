"""A tiny vision transformer: 2x2 patches, a learned position embedding, a transformer encoder."""

import torch
from torch import nn


class Model(nn.Module):
    def __init__(self, num_classes=10, dim=32, depth=2, heads=4, patch=2):
        super().__init__()
        self.patch = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)
        self.position = nn.Parameter(torch.zeros(1, (8 // patch) ** 2, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=depth)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.position
        return self.head(self.norm(self.encoder(tokens)).mean(dim=1))
