"""A first draft for scikit-learn's 8x8 digits, the demo's model: a plain tanh MLP with no normalization.

It leaves real room to improve in a few minutes of CPU (about 0.74 validation accuracy after 3
epochs, where the CNN of examples/digits reaches about 0.97), so the demo's five iterations can find,
confirm and show a gain. The CNN is near its ceiling: use it to watch the keep rule refuse noise.
"""

import torch
from torch import nn


class Model(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 32),
            nn.Tanh(),
            nn.Linear(32, 32),
            nn.Tanh(),
            nn.Linear(32, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
