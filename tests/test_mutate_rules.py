"""The rules that read any model's structure: numbers wherever they are set, structural edits, and the build check that has the last word."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from autoraysearch.ideators.mutate import BuildCheck, propose_mutations
from autoraysearch.ideators.mutate.arms import arms, parts

STYLES = Path(__file__).resolve().parents[1] / "benchmarks" / "model_styles"
GRU = (STYLES / "gru.py").read_text()
TANH_MLP = (STYLES / "tanh_mlp.py").read_text()
LIST_MLP = (STYLES / "list_mlp.py").read_text()
LOOP_CNN = (STYLES / "loop_cnn.py").read_text()
LENET = (STYLES / "lenet.py").read_text()
VIT = (STYLES / "vit.py").read_text()


@pytest.fixture(scope="module")
def check() -> BuildCheck:
    return BuildCheck([1, 8, 8], {"num_classes": 10}, 10)


def load(source: str, tmp_path: Path, name: str = "candidate"):
    """model.py imported as a module, from its own folder."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def described(source: str, text: str):
    """The one single edit whose description ends with `text`."""
    found = [m for m in propose_mutations(source) if m.description.endswith(text)]
    assert len(found) == 1, [m.description for m in propose_mutations(source)]
    return found[0]


def test_a_gru_gets_its_hidden_size_carried_to_the_head_and_more_layers(check: BuildCheck) -> None:
    carried = described(GRU, "64 -> 128 with the 1 other place of size 64")
    assert "nn.GRU(8, 128" in carried.source and "nn.Linear(128, num_classes)" in carried.source
    alone = described(GRU, "rnn GRU argument 2 64 -> 128")
    layers = described(GRU, "num_layers=2 (default 1)")
    lstm = described(GRU, "GRU -> LSTM")
    verdicts = check([carried.source, alone.source, layers.source, lstm.source])
    # Alone, the new hidden size no longer fits the head: the check catches what the text cannot show.
    assert [v.ok for v in verdicts] == [True, False, True, True]
    assert verdicts[0].parameters > check([GRU])[0].parameters


def test_dropout_is_offered_only_to_a_recurrent_layer_with_layers_to_drop_between() -> None:
    """A one-layer GRU applies no dropout: setting it is a null change, a run wasted."""
    assert not [m for m in propose_mutations(GRU) if "GRU dropout=" in m.description]
    two_layers = described(GRU, "num_layers=2 (default 1)").source
    assert [m for m in propose_mutations(two_layers) if "GRU dropout=" in m.description]


def test_tuple_defaults_grow_and_lose_a_layer(tmp_path: Path) -> None:
    longer = described(LIST_MLP, "hidden (128, 64) -> one more layer of 64")
    shorter = described(LIST_MLP, "hidden (128, 64) -> its last layer removed")
    assert "hidden=(128, 64, 64)" in longer.source and "hidden=(128,)" in shorter.source
    assert len(load(longer.source, tmp_path, "longer").Model().layers) == 3
    assert arms(longer.description) == (("depth", "up"),) and arms(shorter.description) == (("depth", "down"),)


def test_settings_blocks_lists_and_named_activations_are_edited(check: BuildCheck) -> None:
    wider = described(LOOP_CNN, "CHANNELS[1] 16 -> 32")
    gelu = described(LOOP_CNN, "activation 'relu' -> 'gelu'")
    assert "CHANNELS = [8, 32]" in wider.source and 'ACTIVATION = "gelu"' not in gelu.source
    assert "ACTIVATION = 'gelu'" in gelu.source
    assert all(v.ok for v in check([wider.source, gelu.source]))


def test_any_activation_is_swapped_module_or_functional() -> None:
    relu = described(TANH_MLP, "activation Tanh -> ReLU (1 place)")
    assert "self.act = nn.ReLU()" in relu.source
    mish = described(LENET, "activation ReLU -> Mish (4 places)")
    assert mish.source.count("F.mish(") == 4 and "F.relu" not in mish.source


def test_pooling_swaps_functional_calls() -> None:
    avg = described(LENET, "line 17 max_pool2d -> avg_pool2d")
    assert "x = F.avg_pool2d(F.relu(self.conv1(x)), 2)" in avg.source


def test_norm_dropout_and_a_hidden_layer_are_inserted_where_shapes_allow(check: BuildCheck, tmp_path: Path) -> None:
    norm = described(TANH_MLP, "fc1 Linear followed by LayerNorm(100)")
    dropout = described(TANH_MLP, "fc2 Linear gets Dropout(0.1) before it")
    hidden = described(TANH_MLP, "fc2 Linear gets 1 hidden Linear(100, 100) before it")
    assert "nn.Sequential(nn.Linear(64, 100), nn.LayerNorm(100))" in norm.source
    assert all(v.ok for v in check([norm.source, dropout.source, hidden.source]))
    model = load(hidden.source, tmp_path, "hidden").Model()
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 3


def test_a_residual_connection_adds_the_input_of_a_shape_keeping_block(check: BuildCheck, tmp_path: Path) -> None:
    residual = described(VIT, "encoder TransformerEncoder inside a residual connection")
    assert check([residual.source])[0].ok
    module = load(residual.source, tmp_path, "residual")
    block = module.Residual(torch.nn.Identity())
    x = torch.randn(2, 3)
    assert torch.equal(block(x), 2 * x)


def test_options_left_at_their_default_are_set() -> None:
    norm_first = described(VIT, "norm_first=True (default False)")
    assert "batch_first=True, norm_first=True)" in norm_first.source
    assert described(VIT, "activation='gelu' (default relu)").kind == "option"


def test_the_build_check_drops_what_breaks_and_survives_a_model_that_kills_its_process(check: BuildCheck) -> None:
    crashing = TANH_MLP.replace("return self.fc2(", "import os; os._exit(3)\n        return self.fc2(")
    verdicts = check([crashing, TANH_MLP, TANH_MLP.replace("nn.Linear(100, num_classes)", "nn.Linear(99, num_classes)")])
    assert [v.ok for v in verdicts] == [False, True, False]
    assert verdicts[1].parameters == 64 * 100 + 100 + 100 * 10 + 10


def test_descriptions_name_their_kind_and_direction() -> None:
    for mutation in propose_mutations(GRU):
        assert arms(mutation.description)[0][0] == mutation.kind
    combined = "combined: width up: a 1 -> 2 + activation swap: ReLU -> GELU (3 places) (crash: boom)"
    assert arms(combined) == (("width", "up"), ("activation", "swap"))
    assert parts(combined)[1].startswith("activation swap: ReLU -> GELU")
