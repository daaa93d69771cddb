"""Candidates an LLM ideator might propose for the digits example, and the JSON answer that carries them."""

from __future__ import annotations

import json

from helpers import EXAMPLE_MODEL

EXAMPLE = EXAMPLE_MODEL.read_text()
DROPOUT = {
    "description": "lower the classifier dropout from 0.25 to 0.1",
    "kind": "regularisation",
    "edits": [{"search": "nn.Dropout(0.25)", "replace": "nn.Dropout(0.1)"}],
}
DROPOUT_SOURCE = EXAMPLE.replace("nn.Dropout(0.25)", "nn.Dropout(0.1)")
WIDER_SOURCE = EXAMPLE.replace("nn.Linear(32 * 4 * 4, 64)", "nn.Linear(32 * 4 * 4, 128)").replace(
    "nn.Linear(64, num_classes)", "nn.Linear(128, num_classes)"
)
WIDER = {"description": "widen the hidden classifier layer from 64 to 128", "kind": "width", "model_py": WIDER_SOURCE}
# Parses and defines Model, but the first Linear no longer matches the 32*4*4 features: only running it shows.
SHAPE_ERROR = {
    "description": "shrink the classifier input to 256 features",
    "kind": "width",
    "edits": [{"search": "nn.Linear(32 * 4 * 4, 64)", "replace": "nn.Linear(256, 64)"}],
}


def answer(*candidates: dict) -> str:
    return json.dumps({"candidates": list(candidates)})
