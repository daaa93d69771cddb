"""Knowledge about torch.nn the rules rely on: which layers have sizes, which keep shapes, which names mean what."""

from __future__ import annotations

import ast

# Layers with an input size and an output size: class -> (input, output), each (position, keyword);
# lazy layers infer their input, so they have none.
SIZED = {
    "Linear": ((0, "in_features"), (1, "out_features")),
    "Conv1d": ((0, "in_channels"), (1, "out_channels")),
    "Conv2d": ((0, "in_channels"), (1, "out_channels")),
    "Conv3d": ((0, "in_channels"), (1, "out_channels")),
    "LazyLinear": (None, (0, "out_features")),
    "LazyConv1d": (None, (0, "out_channels")),
    "LazyConv2d": (None, (0, "out_channels")),
    "LazyConv3d": (None, (0, "out_channels")),
}
CONVS = {"Conv1d", "Conv2d", "Conv3d"}

# Normalisation layers whose size must follow the layer before them: class -> (position, keyword).
NORM_SIZE = {
    "BatchNorm1d": (0, "num_features"),
    "BatchNorm2d": (0, "num_features"),
    "BatchNorm3d": (0, "num_features"),
    "InstanceNorm1d": (0, "num_features"),
    "InstanceNorm2d": (0, "num_features"),
    "InstanceNorm3d": (0, "num_features"),
    "LayerNorm": (0, "normalized_shape"),
    "GroupNorm": (1, "num_channels"),
}

# Activations the activation rule swaps: class -> (functional name, parameters after the input).
ACTIVATIONS = {
    "ReLU": ("relu", ("inplace",)),
    "GELU": ("gelu", ("approximate",)),
    "SiLU": ("silu", ("inplace",)),
    "LeakyReLU": ("leaky_relu", ("negative_slope", "inplace")),
    "ELU": ("elu", ("alpha", "inplace")),
    "Mish": ("mish", ("inplace",)),
    "Tanh": ("tanh", ()),
    "Sigmoid": ("sigmoid", ()),
    "Hardswish": ("hardswish", ("inplace",)),
    "SELU": ("selu", ("inplace",)),
    "CELU": ("celu", ("alpha", "inplace")),
    "ReLU6": ("relu6", ("inplace",)),
    "Softplus": ("softplus", ("beta", "threshold")),
    "Hardtanh": ("hardtanh", ("min_val", "max_val", "inplace")),
}
# Activations torch itself has as functions: torch.relu, torch.tanh, torch.sigmoid.
TORCH_ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "selu": "SELU", "celu": "CELU"}
# What an activation may become; Sigmoid and the rarer ones are only swapped away from.
SWAP_TO = ("ReLU", "GELU", "SiLU", "LeakyReLU", "ELU", "Mish", "Hardswish", "Tanh")
# Activation names as strings (`activation="relu"`, `ACTIVATION = "gelu"`), as torch and most model files spell them.
ACTIVATION_STRINGS = ("relu", "gelu", "silu", "tanh", "elu", "leaky_relu", "mish", "hardswish")

# Dropout modules take the rate first; the functions take it after the input.
DROPOUT_MODULES = {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"}
DROPOUT_FUNCTIONS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"}

# Layers that change lengths (spatial sizes): the first ones keep the channel count, the others do not.
POOLS = {f"{kind}Pool{n}d" for kind in ("Max", "Avg", "LP", "FractionalMax") for n in (1, 2, 3)} | {"Upsample"}
RESAMPLERS = POOLS | {"PixelShuffle", "PixelUnshuffle"}

# Layers a tensor passes through with its channel/feature count unchanged.
SHAPE_NEUTRAL = (
    set(ACTIVATIONS)
    | DROPOUT_MODULES
    | POOLS
    | {f"Adaptive{kind}Pool{n}d" for kind in ("Avg", "Max") for n in (1, 2, 3)}
    | {"Hardsigmoid"}
    | {"Softmax", "LogSoftmax", "Identity", "Flatten", "Sequential", "ModuleList", "ModuleDict"}
)

# Layers that mean tensors carry a sequence axis, where LayerNorm and BatchNorm1d normalise different axes.
SEQUENCE_LAYERS = {
    "Embedding", "EmbeddingBag", "MultiheadAttention", "Transformer", "TransformerEncoder",
    "TransformerDecoder", "TransformerEncoderLayer", "TransformerDecoderLayer",
    "LSTM", "GRU", "RNN", "Conv1d", "LazyConv1d",
}

# Nodes whose body may run several times.
LOOPS = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)

# Capitalised calls that build no module.
NOT_MODULES = {"OrderedDict"}

# Words in setting names (split on "_"): what a setting sizes, and sizes the model does not choose.
SIZE_WORDS = {
    "width", "hidden", "hid", "channels", "channel", "ch", "dim", "dims", "features", "filters",
    "units", "size", "embed", "embd", "embedding", "emb", "planes", "neurons", "model", "nf",
}
NOT_SIZE_WORDS = {
    "in", "input", "inp", "out", "output", "class", "classes", "label", "labels", "vocab", "seq",
    "len", "length", "kernel", "stride", "padding", "pad", "batch", "patch", "image", "img",
    "groups", "heads", "pool",
}
DEPTH_WORDS = {"depth", "layers", "blocks", "stages", "repeats"}
DROPOUT_WORDS = {"dropout", "drop"}
