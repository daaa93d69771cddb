"""A plain MLP with Tanh, exported under another name."""

import torch
from torch import nn


class DigitNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc1 = nn.Linear(64, 100)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(100, num_classes)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(torch.flatten(x, 1))))


Model = DigitNet
