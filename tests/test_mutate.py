"""The offline ideator: every proposed edit builds, says what it changed, and choices are reproducible."""

from __future__ import annotations

import ast
import difflib
import io
import tokenize
from pathlib import Path

import pytest
import torch

from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.model_source import check_model_source, fingerprint, init_parameters
from autoraysearch.ideators.mutate import Mutation, choose_mutations, propose_mutations
from autoraysearch.ideators.mutate.arms import change_text
from autoraysearch.ideators.mutate.rules import PROVEN_RULES

EXAMPLE = (Path(__file__).resolve().parents[1] / "examples" / "digits" / "model.py").read_text()

# A Sequential CNN with a literal class count, no __init__ arguments, and comments on its layers.
CNN = '''"""A Sequential CNN with a literal class count."""

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        # feature extractor: two conv blocks
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),  # stem
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 24, 5, padding=2),  # wide kernel
            nn.BatchNorm2d(24),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2),
            nn.Dropout2d(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(24 * 2 * 2, 32),  # hidden
            nn.ReLU(inplace=True),
            nn.Linear(32, 10),  # ten digits: must stay 10
        )

    def forward(self, x):
        return self.classifier(self.features(x))
'''

# A single linear layer: few edits, so that every combination of them can be listed.
HEAD_ONLY = '''import torch
from torch import nn


class Model(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))
'''

# An MLP with one attribute per layer and functional activation and dropout.
MLP = '''import torch
import torch.nn as nn
import torch.nn.functional as F


class Model(nn.Module):
    """A plain MLP on flattened 8x8 digits."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.fc1 = nn.Linear(64, 128)  # hidden layer
        self.bn1 = nn.BatchNorm1d(128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.fc1(x)))
        x = F.dropout(x, p=0.2, training=self.training)  # regularise
        x = F.relu(self.fc2(x))
        return self.fc3(x)
'''

# Sizes and depth as __init__ settings, layers built in loops.
LOOP = '''import torch
from torch import nn


class Model(nn.Module):
    def __init__(self, num_classes=10, width=32, depth=2, dropout=0.1, input_dim=64):
        super().__init__()
        layers = []
        in_dim = input_dim  # flattened 8x8 input
        for _ in range(depth):
            layers += [nn.Linear(in_dim, width), nn.LayerNorm(width), nn.GELU(), nn.Dropout(dropout)]
            in_dim = width
        self.body = nn.Sequential(*layers)
        self.extra = nn.Sequential(*[nn.Linear(width, width) for _ in range(2)])
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.extra(self.body(x.flatten(1))))
'''

# Classes imported one by one from torch.nn, keyword arguments, GroupNorm.
BARE = '''from torch.nn import AdaptiveAvgPool2d, Conv2d, Flatten, GroupNorm, Linear, Module, ReLU


class Model(Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = Conv2d(in_channels=1, out_channels=8, kernel_size=3, padding=1)
        self.norm1 = GroupNorm(num_groups=4, num_channels=8)
        self.act = ReLU(inplace=True)
        self.conv2 = Conv2d(8, 16, kernel_size=5, padding=2, stride=2)
        self.pool = AdaptiveAvgPool2d(1)
        self.flatten = Flatten()
        self.fc = Linear(in_features=16, out_features=num_classes)

    def forward(self, x):
        x = self.act(self.norm1(self.conv1(x)))
        x = self.act(self.conv2(x))
        return self.fc(self.flatten(self.pool(x)))
'''

# torch.nn spelled in full, torch.relu, a residual block class, Conv1d, a literal range().
QUALIFIED = '''import torch


class Block(torch.nn.Module):
    """Two same-size layers with a residual connection."""

    def __init__(self, channels):
        super().__init__()
        self.conv = torch.nn.Conv1d(channels, channels, 3, padding=1)
        self.bn = torch.nn.BatchNorm1d(channels)

    def forward(self, x):
        return x + torch.relu(self.bn(self.conv(x)))


class Stem(torch.nn.Module):
    """Lifts the digits, as a 1-channel sequence, to 12 channels: its output size leaves the class."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 12, 3, 1, 1)

    def forward(self, x):
        return torch.relu(self.conv(x.unsqueeze(1)))


class Model(torch.nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = Stem()
        self.blocks = torch.nn.Sequential(*[Block(12) for _ in range(2)])
        self.mix = torch.nn.Conv1d(12, 12, 1)  # feeds a user's Block
        self.last_block = Block(12)
        self.pool = torch.nn.AdaptiveAvgPool1d(1)
        self.head = torch.nn.Linear(12, num_classes)

    def forward(self, x):  # x: (N, 64)
        x = self.last_block(self.mix(self.blocks(self.stem(x))))
        return self.head(self.pool(x).flatten(1))
'''

# Edits the rules must not make: a flattened size written as a plain number, groups that would not
# divide a halved width, loops whose passes differ or shrink their input.
GUARDED = '''import torch
from torch import nn


class Model(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.norm1 = nn.GroupNorm(8, 8)
        self.conv2 = nn.Conv2d(8, 32, 3, padding=1, stride=2)
        self.fc = nn.Linear(512, 64)
        sizes = [64, 48, 64]
        layers = []
        for _ in range(2):
            layers += [nn.Linear(64, 64), nn.ReLU()]
        for i in range(2):
            layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.shrink = nn.Sequential(*[nn.MaxPool1d(2) for _ in range(1)])
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        x = torch.relu(self.norm1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        x = self.body(self.fc(x.flatten(1)))
        return self.head(x)
'''

# Token sequences: LayerNorm normalises features per token, where BatchNorm1d would not fit.
SEQUENCE = '''import torch
from torch import nn

EMBED_DIM = 32  # per-token width
NUM_HEADS = 4


class Model(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.proj = nn.Linear(8, EMBED_DIM)
        layer = nn.TransformerEncoderLayer(EMBED_DIM, NUM_HEADS, dim_feedforward=64, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=1)
        self.norm = nn.LayerNorm(EMBED_DIM)
        self.act = nn.GELU()
        self.head = nn.Linear(EMBED_DIM, num_classes)

    def forward(self, x):  # x: (N, 64), read as 8 tokens of 8 features
        h = self.norm(self.encoder(self.proj(x.view(-1, 8, 8))))
        return self.head(self.act(h.mean(1)))
'''

# The classifier written before the layers feeding it, with the class count as a literal.
OUT_OF_ORDER = '''import torch
from torch import nn


class Model(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.head = nn.Linear(32, 10)  # applied last, written first
        self.body = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.1))

    def forward(self, x):  # x: (N, 10) features
        return self.head(self.body(x))
'''

MODELS = {
    "example": (EXAMPLE, (1, 8, 8)),
    "cnn": (CNN, (1, 8, 8)),
    "mlp": (MLP, (64,)),
    "loop": (LOOP, (64,)),
    "bare": (BARE, (1, 8, 8)),
    "qualified": (QUALIFIED, (64,)),
    "guarded": (GUARDED, (1, 8, 8)),
    "out_of_order": (OUT_OF_ORDER, (10,)),
    "sequence": (SEQUENCE, (64,)),
}


def build_and_run(source: str, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Exec a model.py into a fresh namespace, build Model as it accepts, run a batch of 4 through it."""
    tree = check_model_source(source)
    namespace: dict = {"__name__": "mutated_model"}
    exec(compile(source, "model.py", "exec"), namespace)
    torch.manual_seed(0)
    accepts = init_parameters(tree) or []
    model = namespace["Model"](num_classes=10) if "num_classes" in accepts else namespace["Model"]()
    with torch.no_grad():
        return model(torch.randn(4, *input_shape))


def propose_proven(source: str) -> list[Mutation]:
    """The edits of the rules that prove from the code that the model still builds, described without their tag."""
    return [
        Mutation(m.kind, change_text(m.description), m.source)
        for m in propose_mutations(source, rules=PROVEN_RULES)
    ]


def by_description(mutations: list[Mutation], description: str) -> Mutation:
    """The one mutation with this description."""
    found = [m for m in mutations if m.description == description]
    assert len(found) == 1, f"{description!r} not among {[m.description for m in mutations]}"
    return found[0]


def changed_lines(old: str, new: str) -> tuple[list[str], list[str]]:
    """The lines an edit removed and added, stripped of indentation."""
    removed, added = [], []
    for line in difflib.ndiff(old.splitlines(), new.splitlines()):
        if line.startswith("- "):
            removed.append(line[2:].strip())
        elif line.startswith("+ "):
            added.append(line[2:].strip())
    return removed, added


def descriptions(source: str, kind: str) -> list[str]:
    """The descriptions of one kind of mutation, in order."""
    return [m.description for m in propose_proven(source) if m.kind == kind]


# --- every mutation on every model ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_mutation_parses_builds_and_maps_a_batch_to_class_scores(name: str) -> None:
    source, input_shape = MODELS[name]
    assert build_and_run(source, input_shape).shape == (4, 10)
    mutations = propose_proven(source)
    assert len(mutations) >= 4
    for mutation in mutations:
        check_model_source(mutation.source)
        output = build_and_run(mutation.source, input_shape)
        assert output.shape == (4, 10), mutation.description


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mutations_are_distinct_and_all_differ_from_the_input(name: str) -> None:
    source, _ = MODELS[name]
    prints = [fingerprint(m.source) for m in propose_proven(source)]
    assert len(prints) == len(set(prints))
    assert fingerprint(source) not in prints


@pytest.mark.parametrize("name", sorted(MODELS))
def test_comments_and_untouched_lines_survive(name: str) -> None:
    source, _ = MODELS[name]
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    comments = [token.string for token in tokens if token.type == tokenize.COMMENT]
    for mutation in propose_proven(source):
        for comment in comments:
            assert comment in mutation.source, mutation.description
        removed, added = changed_lines(source, mutation.source)
        assert 1 <= len(removed) <= 4 and len(added) <= len(removed) + 1, mutation.description


def test_the_example_gets_exactly_these_edits() -> None:
    assert [(m.kind, m.description) for m in propose_proven(EXAMPLE)] == [
        ("width", "features[0] Conv2d out_channels 16 -> 32 (with features[1] BatchNorm2d num_features 16 -> 32, features[3] Conv2d in_channels 16 -> 32)"),
        ("width", "features[0] Conv2d out_channels 16 -> 8 (with features[1] BatchNorm2d num_features 16 -> 8, features[3] Conv2d in_channels 16 -> 8)"),
        ("width", "features[3] Conv2d out_channels 32 -> 64 (with features[4] BatchNorm2d num_features 32 -> 64, classifier[1] Linear in_features 32 * 4 * 4 -> 64 * 4 * 4)"),
        ("width", "features[3] Conv2d out_channels 32 -> 16 (with features[4] BatchNorm2d num_features 32 -> 16, classifier[1] Linear in_features 32 * 4 * 4 -> 16 * 4 * 4)"),
        ("width", "classifier[1] Linear out_features 64 -> 128 (with classifier[4] Linear in_features 64 -> 128)"),
        ("width", "classifier[1] Linear out_features 64 -> 32 (with classifier[4] Linear in_features 64 -> 32)"),
        *[
            ("activation", f"activation ReLU -> {target} {where}")
            for target in ("GELU", "SiLU", "LeakyReLU", "ELU", "Mish", "Hardswish", "Tanh")
            for where in ("(3 places)", "at line 13 only", "at line 16 only", "at line 22 only")
        ],
        ("dropout", "classifier[3] Dropout p 0.25 -> 0.35"),
        ("dropout", "classifier[3] Dropout p 0.25 -> 0.15"),
        ("norm", "features[1] nn.BatchNorm2d(16) -> nn.GroupNorm(8, 16)"),
        ("norm", "features[4] nn.BatchNorm2d(32) -> nn.GroupNorm(8, 32)"),
        ("kernel", "features[0] Conv2d kernel_size 3 -> 5, padding 1 -> 2"),
        ("kernel", "features[3] Conv2d kernel_size 3 -> 5, padding 1 -> 2"),
    ]


def test_a_file_without_model_or_with_a_syntax_error_is_a_user_error() -> None:
    with pytest.raises(AutoraysearchError):
        propose_proven("class Net:\n    pass\n")
    with pytest.raises(AutoraysearchError):
        propose_proven("class Model(:\n")


# --- width ------------------------------------------------------------------------------------


def test_width_carries_the_new_size_to_the_norm_and_the_next_convolution() -> None:
    mutation = by_description(
        propose_proven(EXAMPLE),
        "features[0] Conv2d out_channels 16 -> 32 (with features[1] BatchNorm2d num_features 16 -> 32, features[3] Conv2d in_channels 16 -> 32)",
    )
    assert changed_lines(EXAMPLE, mutation.source) == (
        ["nn.Conv2d(1, 16, kernel_size=3, padding=1),", "nn.BatchNorm2d(16),", "nn.Conv2d(16, 32, kernel_size=3, padding=1),"],
        ["nn.Conv2d(1, 32, kernel_size=3, padding=1),", "nn.BatchNorm2d(32),", "nn.Conv2d(32, 32, kernel_size=3, padding=1),"],
    )


def test_width_scales_the_channel_factor_of_a_flattened_size() -> None:
    mutation = by_description(
        propose_proven(CNN),
        "features[3] Conv2d out_channels 24 -> 12 (with features[4] BatchNorm2d num_features 24 -> 12, classifier[1] Linear in_features 24 * 2 * 2 -> 12 * 2 * 2)",
    )
    assert changed_lines(CNN, mutation.source) == (
        ["nn.Conv2d(8, 24, 5, padding=2),  # wide kernel", "nn.BatchNorm2d(24),", "nn.Linear(24 * 2 * 2, 32),  # hidden"],
        ["nn.Conv2d(8, 12, 5, padding=2),  # wide kernel", "nn.BatchNorm2d(12),", "nn.Linear(12 * 2 * 2, 32),  # hidden"],
    )


def test_width_on_attribute_layers_of_an_mlp() -> None:
    assert descriptions(MLP, "width") == [
        "fc1 Linear out_features 128 -> 256 (with bn1 BatchNorm1d num_features 128 -> 256, fc2 Linear in_features 128 -> 256)",
        "fc1 Linear out_features 128 -> 64 (with bn1 BatchNorm1d num_features 128 -> 64, fc2 Linear in_features 128 -> 64)",
        "fc2 Linear out_features 64 -> 128 (with fc3 Linear in_features 64 -> 128)",
        "fc2 Linear out_features 64 -> 32 (with fc3 Linear in_features 64 -> 32)",
    ]
    mutation = propose_proven(MLP)[0]
    assert changed_lines(MLP, mutation.source)[1] == [
        "self.fc1 = nn.Linear(64, 256)  # hidden layer",
        "self.bn1 = nn.BatchNorm1d(256)",
        "self.fc2 = nn.Linear(256, 64)",
    ]


def test_width_with_keyword_arguments_keeps_group_norm_divisible() -> None:
    assert descriptions(BARE, "width") == [
        "conv1 Conv2d out_channels 8 -> 16 (with norm1 GroupNorm num_channels 8 -> 16, conv2 Conv2d in_channels 8 -> 16)",
        "conv1 Conv2d out_channels 8 -> 4 (with norm1 GroupNorm num_channels 8 -> 4, conv2 Conv2d in_channels 8 -> 4)",
        "conv2 Conv2d out_channels 16 -> 32 (with fc Linear in_features 16 -> 32)",
        "conv2 Conv2d out_channels 16 -> 8 (with fc Linear in_features 16 -> 8)",
    ]
    mutation = propose_proven(BARE)[0]
    assert changed_lines(BARE, mutation.source)[1] == [
        "self.conv1 = Conv2d(in_channels=1, out_channels=16, kernel_size=3, padding=1)",
        "self.norm1 = GroupNorm(num_groups=4, num_channels=16)",
        "self.conv2 = Conv2d(16, 16, kernel_size=5, padding=2, stride=2)",
    ]


def test_width_scales_size_settings_but_not_the_class_count() -> None:
    assert descriptions(LOOP, "width") == [
        "Model.__init__ default width 32 -> 64",
        "Model.__init__ default width 32 -> 16",
    ]
    mutation = by_description(propose_proven(LOOP), "Model.__init__ default width 32 -> 64")
    assert "def __init__(self, num_classes=10, width=64, depth=2, dropout=0.1, input_dim=64):" in mutation.source


def test_width_is_skipped_where_the_consumer_cannot_follow() -> None:
    # GUARDED: halving conv1 would leave GroupNorm(8, 4); conv2 feeds Linear(512, ...) written as a number;
    # fc feeds a Linear built in a loop, which also consumes its own output.
    assert descriptions(GUARDED, "width") == [
        "conv1 Conv2d out_channels 8 -> 16 (with norm1 GroupNorm num_channels 8 -> 16, conv2 Conv2d in_channels 8 -> 16)",
    ]
    # QUALIFIED: Stem.conv's output leaves its class; `mix` feeds a user's Block, which is opaque.
    assert descriptions(QUALIFIED, "width") == []


def test_width_of_a_flattened_convolution_needs_exactly_one_matching_factor() -> None:
    widened = [d for d in descriptions(EXAMPLE, "width") if d.startswith("features[3]")]
    assert len(widened) == 2
    as_number = EXAMPLE.replace("32 * 4 * 4", "512")
    ambiguous = EXAMPLE.replace("nn.Conv2d(16, 32", "nn.Conv2d(16, 4").replace("BatchNorm2d(32)", "BatchNorm2d(4)")
    ambiguous = ambiguous.replace("32 * 4 * 4", "4 * 4 * 4")
    for source in (as_number, ambiguous):
        assert not [d for d in descriptions(source, "width") if d.startswith("features[3]")]
        for mutation in propose_proven(source):
            assert build_and_run(mutation.source, (1, 8, 8)).shape == (4, 10), mutation.description


def last_linear_output(source: str) -> str:
    """The output-size argument of the last `Linear(...)` in the source, as code."""
    calls = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("Linear")]
    last = max(calls, key=lambda call: (call.lineno, call.col_offset))
    out = last.args[1] if len(last.args) > 1 else next(kw.value for kw in last.keywords if kw.arg == "out_features")
    return ast.unparse(out)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_final_classifier_output_never_changes(name: str) -> None:
    source, _ = MODELS[name]
    for mutation in propose_proven(source):
        assert last_linear_output(mutation.source) == last_linear_output(source), mutation.description


def test_the_last_linear_with_a_literal_class_count_keeps_it() -> None:
    for mutation in propose_proven(CNN):
        assert ", 10),  # ten digits: must stay 10" in mutation.source, mutation.description
    assert not [d for d in descriptions(CNN, "width") if d.startswith("classifier[3]")]
    # Written before its input layers, the classifier still keeps its 10 outputs (and the input its 10 features).
    assert descriptions(OUT_OF_ORDER, "width") == []


# --- depth ------------------------------------------------------------------------------------


def test_depth_changes_depth_settings_and_literal_loop_counts() -> None:
    assert descriptions(LOOP, "depth") == [
        "Model.__init__ default depth 2 -> 3",
        "Model.__init__ default depth 2 -> 1",
        "line 14 Model.__init__ range(2) -> range(3)",
        "line 14 Model.__init__ range(2) -> range(1)",
    ]
    mutation = by_description(propose_proven(LOOP), "line 14 Model.__init__ range(2) -> range(1)")
    assert changed_lines(LOOP, mutation.source)[1] == [
        "self.extra = nn.Sequential(*[nn.Linear(width, width) for _ in range(1)])"
    ]


def test_depth_in_a_comprehension_of_user_blocks() -> None:
    assert descriptions(QUALIFIED, "depth") == [
        "line 31 Model.__init__ range(2) -> range(3)",
        "line 31 Model.__init__ range(2) -> range(1)",
    ]


def test_depth_skips_loops_whose_passes_differ_or_shrink_the_input() -> None:
    # Only the loop of identical Linear(64, 64) passes may change; not `sizes[i]`, not the pooling one.
    assert descriptions(GUARDED, "depth") == [
        "line 14 Model.__init__ range(2) -> range(3)",
        "line 14 Model.__init__ range(2) -> range(1)",
    ]
    assert descriptions(EXAMPLE, "depth") == []


def test_depth_never_goes_below_one() -> None:
    source = LOOP.replace("depth=2", "depth=1")
    assert "Model.__init__ default depth 1 -> 2" in descriptions(source, "depth")
    assert not [d for d in descriptions(source, "depth") if d.endswith("-> 0")]


# --- activation -------------------------------------------------------------------------------


def test_activation_swaps_every_module_use() -> None:
    mutation = by_description(propose_proven(EXAMPLE), "activation ReLU -> GELU (3 places)")
    assert EXAMPLE.count("nn.ReLU()") == 3
    assert mutation.source == EXAMPLE.replace("nn.ReLU()", "nn.GELU()")


def test_activation_swaps_functional_calls() -> None:
    mutation = by_description(propose_proven(MLP), "activation ReLU -> SiLU (2 places)")
    assert mutation.source == MLP.replace("F.relu(", "F.silu(")


def test_activation_keeps_inplace_only_where_the_target_takes_it() -> None:
    mutations = propose_proven(CNN)
    gelu = by_description(mutations, "activation ReLU -> GELU (3 places)")
    assert gelu.source == CNN.replace("nn.ReLU(inplace=True)", "nn.GELU()")
    silu = by_description(mutations, "activation ReLU -> SiLU (3 places)")
    assert silu.source == CNN.replace("nn.ReLU(inplace=True)", "nn.SiLU(inplace=True)")


def test_activation_imports_a_bare_class_the_file_lacks() -> None:
    mutation = by_description(propose_proven(BARE), "activation ReLU -> GELU (1 place)")
    assert changed_lines(BARE, mutation.source)[1] == ["from torch.nn import GELU", "self.act = GELU()"]


def test_activation_from_torch_relu_goes_through_functional() -> None:
    mutation = by_description(propose_proven(QUALIFIED), "activation ReLU -> GELU (2 places)")
    assert mutation.source == QUALIFIED.replace("torch.relu(", "torch.nn.functional.gelu(")
    assert descriptions(LOOP, "activation") == [
        f"activation GELU -> {target} (1 place)" for target in ("ReLU", "SiLU", "LeakyReLU", "ELU", "Mish", "Hardswish", "Tanh")
    ]


# --- dropout ----------------------------------------------------------------------------------


def test_dropout_moves_a_module_rate_up_and_down() -> None:
    mutation = by_description(propose_proven(EXAMPLE), "classifier[3] Dropout p 0.25 -> 0.15")
    assert changed_lines(EXAMPLE, mutation.source) == (["nn.Dropout(0.25),"], ["nn.Dropout(0.15),"])


def test_dropout_on_a_functional_call_with_keywords() -> None:
    assert descriptions(MLP, "dropout") == ["line 18 F.dropout p 0.2 -> 0.3", "line 18 F.dropout p 0.2 -> 0.1"]
    assert [m for m in propose_proven(MLP) if m.kind == "dropout"][0].source == MLP.replace("p=0.2", "p=0.3")


def test_dropout_with_the_default_rate_gets_an_explicit_one() -> None:
    assert descriptions(CNN, "dropout") == ["features[7] Dropout2d p default 0.5 -> 0.6", "features[7] Dropout2d p default 0.5 -> 0.4"]
    mutation = by_description(propose_proven(CNN), "features[7] Dropout2d p default 0.5 -> 0.6")
    assert mutation.source == CNN.replace("nn.Dropout2d()", "nn.Dropout2d(p=0.6)")


def test_dropout_settings_and_clamping() -> None:
    assert descriptions(LOOP, "dropout") == ["Model.__init__ default dropout 0.1 -> 0.2", "Model.__init__ default dropout 0.1 -> 0.0"]
    clamped = EXAMPLE.replace("nn.Dropout(0.25)", "nn.Dropout(p=0.9)")
    assert descriptions(clamped, "dropout") == ["classifier[3] Dropout p 0.9 -> 0.8"]


# --- norm -------------------------------------------------------------------------------------


def test_norm_batchnorm2d_to_groupnorm_with_the_largest_dividing_group() -> None:
    assert descriptions(CNN, "norm") == [
        "features[1] nn.BatchNorm2d(8) -> nn.GroupNorm(8, 8)",
        "features[4] nn.BatchNorm2d(24) -> nn.GroupNorm(8, 24)",
    ]
    odd = EXAMPLE.replace("16", "12")
    assert "features[1] nn.BatchNorm2d(12) -> nn.GroupNorm(4, 12)" in descriptions(odd, "norm")


def test_norm_batchnorm1d_after_a_linear_becomes_layernorm() -> None:
    mutation = by_description(propose_proven(MLP), "bn1 nn.BatchNorm1d(128) -> nn.LayerNorm(128)")
    assert changed_lines(MLP, mutation.source)[1] == ["self.bn1 = nn.LayerNorm(128)"]
    assert descriptions(LOOP, "norm") == ["line 11 nn.LayerNorm(width) -> nn.BatchNorm1d(width)"]
    # Not where tensors carry a sequence axis.
    assert descriptions(SEQUENCE, "norm") == []
    assert descriptions(SEQUENCE, "width") == ["constant EMBED_DIM 32 -> 64", "constant EMBED_DIM 32 -> 16"]


def test_norm_groupnorm_back_to_batchnorm_imports_a_bare_class() -> None:
    mutation = by_description(propose_proven(BARE), "norm1 GroupNorm(num_groups=4, num_channels=8) -> BatchNorm2d(8)")
    assert changed_lines(BARE, mutation.source)[1] == ["from torch.nn import BatchNorm2d", "self.norm1 = BatchNorm2d(8)"]


def test_norm_after_conv1d_with_a_symbolic_channel_count_uses_one_group() -> None:
    assert descriptions(QUALIFIED, "norm") == ["Block.bn torch.nn.BatchNorm1d(channels) -> torch.nn.GroupNorm(1, channels)"]


# --- kernel -----------------------------------------------------------------------------------


def test_kernel_changes_keep_the_padding_same() -> None:
    assert descriptions(CNN, "kernel") == [
        "features[0] Conv2d kernel_size 3 -> 5, padding 1 -> 2",
        "features[3] Conv2d kernel_size 5 -> 7, padding 2 -> 3",
        "features[3] Conv2d kernel_size 5 -> 3, padding 2 -> 1",
    ]
    mutation = by_description(propose_proven(QUALIFIED), "Stem.conv Conv1d kernel_size 3 -> 5, padding 1 -> 2")
    assert changed_lines(QUALIFIED, mutation.source)[1] == ["self.conv = torch.nn.Conv1d(1, 12, 5, 1, 2)"]
    mutation = by_description(propose_proven(BARE), "conv2 Conv2d kernel_size 5 -> 3, padding 2 -> 1")
    assert changed_lines(BARE, mutation.source)[1] == ["self.conv2 = Conv2d(8, 16, kernel_size=3, padding=1, stride=2)"]


def test_kernel_leaves_unpadded_convolutions_alone() -> None:
    assert descriptions(EXAMPLE.replace(", padding=1", ""), "kernel") == []


# --- choosing ---------------------------------------------------------------------------------


def test_choices_are_deterministic_for_a_seed_and_vary_with_it() -> None:
    first = choose_mutations(EXAMPLE, tried=set(), seed=7, count=3)
    assert first == choose_mutations(EXAMPLE, tried=set(), seed=7, count=3)
    picks = {choose_mutations(EXAMPLE, tried=set(), seed=seed)[0].description for seed in range(10)}
    assert len(picks) > 1


def test_four_choices_on_the_example_are_four_kinds() -> None:
    for seed in range(20):
        chosen = choose_mutations(EXAMPLE, tried=set(), seed=seed, count=4)
        assert len({m.kind for m in chosen}) == 4


def test_tried_versions_are_never_chosen_again() -> None:
    everything = propose_mutations(EXAMPLE)
    tried = {fingerprint(m.source) for m in everything[:10]}
    chosen = choose_mutations(EXAMPLE, tried=tried, seed=1, count=len(everything) + 10)
    # The untried small edits come first; bolder ones fill the rest.
    untried = len(everything) - 10
    assert sorted(m.description for m in chosen[:untried]) == sorted(m.description for m in everything[10:])
    assert not tried & {fingerprint(m.source) for m in chosen}
    assert all(m.description.startswith(("bold: ", "combined: ")) for m in chosen[untried:])
    # Reformatting a tried version does not make it new.
    reformatted = everything[0].source.replace("    def forward", "    # reformatted\n    def forward")
    assert fingerprint(reformatted) in tried


def test_exhaustion_returns_fewer_and_never_duplicates() -> None:
    everything = choose_mutations(HEAD_ONLY, tried=set(), seed=3, count=100_000)
    assert len(everything) > 2 * len(propose_mutations(HEAD_ONLY))  # bold and combined edits after the small ones
    assert len({fingerprint(m.source) for m in everything}) == len(everything)
    assert fingerprint(HEAD_ONLY) not in {fingerprint(m.source) for m in everything}
    assert choose_mutations(HEAD_ONLY, tried={fingerprint(m.source) for m in everything}, seed=3, count=4) == []
    assert choose_mutations(HEAD_ONLY, tried=set(), seed=3, count=0) == []
