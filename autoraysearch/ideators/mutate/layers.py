"""Rules that change what a layer does: activation, dropout rate, normalisation, kernel size."""

from __future__ import annotations

import ast
from typing import Iterator, NamedTuple

from autoraysearch.ideators.mutate.reading import (
    Layer, ModelFile, argument_for, int_literal, is_plain, name_words, number_literal, same_padding,
)
from autoraysearch.ideators.mutate.source import Change, Edit, Source
from autoraysearch.ideators.mutate.torch_nn import (
    ACTIVATIONS, CONVS, TORCH_ACTIVATIONS, DROPOUT_FUNCTIONS, DROPOUT_MODULES, DROPOUT_WORDS, SEQUENCE_LAYERS, SIZED, SWAP_TO,
)


# ---------------------------------------------------------------------------------------------
# Rule: activation.


class _ActivationUse(NamedTuple):
    """One place an activation is applied: `nn.ReLU()`, `F.relu(x)` or `torch.relu(x)`."""

    call: ast.Call
    family: str  # its torch.nn class, e.g. "ReLU"
    form: str  # "nn", "functional" or "torch"


def activation_rule(model: ModelFile) -> Iterator[Change]:
    """Every use of one activation swapped for another, module and functional forms alike."""
    uses = _activation_uses(model)
    for family in dict.fromkeys(use.family for use in uses):
        mine = [use for use in uses if use.family == family]
        for target in SWAP_TO:
            if target == family:
                continue
            swaps = [_swap_activation(model, use, target) for use in mine]
            if None in swaps:
                continue  # swap every use or none, so the model stays consistent
            places = f"{len(mine)} place{'s' if len(mine) > 1 else ''}"
            edits = tuple(edit for swap in swaps for edit in swap)
            yield Change("activation", f"activation {family} -> {target} ({places})", edits)
            if len(mine) > 1:
                # One place alone: a different activation in one stage can help where all of them do not.
                for use, swap in zip(mine, swaps):
                    where = f"line {use.call.lineno}"
                    yield Change("activation", f"activation {family} -> {target} at {where} only", tuple(swap))


def _activation_uses(model: ModelFile) -> list[_ActivationUse]:
    """The swappable activation calls in the file, in source order."""
    by_function = {function: cls for cls, (function, _) in ACTIVATIONS.items()}
    uses = []
    for node in ast.walk(model.tree):
        resolved = model.names.resolve(node.func) if isinstance(node, ast.Call) else None
        if resolved is None:
            continue
        form, name = resolved
        if form == "nn":
            family = name if name in ACTIVATIONS else None
        elif form == "functional":
            family = by_function.get(name)
        else:
            family = TORCH_ACTIVATIONS.get(name)
        if family:
            uses.append(_ActivationUse(node, family, form))
    return sorted(uses, key=lambda use: (use.call.lineno, use.call.col_offset))


def _swap_activation(model: ModelFile, use: _ActivationUse, target: str) -> list[Edit] | None:
    """Edits turning one activation call into `target`, keeping `inplace=` where it takes one; None if unusual."""
    call, text = use.call, model.text
    if not is_plain(call) or (use.form != "nn" and not call.args):
        return None  # unpacked arguments, or the input passed by keyword
    parameters = ACTIVATIONS[use.family][1] if use.form != "torch" else ()
    first = 0 if use.form == "nn" else 1  # functions take the input first
    inplace = argument_for(call, first + parameters.index("inplace"), "inplace") if "inplace" in parameters else None
    keep = f"inplace={text.segment(inplace)}" if inplace is not None and "inplace" in ACTIVATIONS[target][1] else ""
    if use.form == "nn":
        spelling, imports = model.names.nn_class(target, call.func, text)
        return [text.replace(call, f"{spelling}({keep})"), *imports]
    if use.form == "functional":
        module = text.segment(call.func.value)
    elif model.names.functional:  # torch.relu has no torch.gelu sibling: use torch.nn.functional
        module = model.names.functional[0]
    else:
        module = f"{text.segment(call.func.value)}.nn.functional"
    tail = Edit(text.end(call.args[0]), text.end(call), f", {keep})" if keep else ")")
    return [text.replace(call.func, f"{module}.{ACTIVATIONS[target][0]}"), tail]


# ---------------------------------------------------------------------------------------------
# Rule: dropout.


def dropout_rule(model: ModelFile) -> Iterator[Change]:
    """Each literal dropout rate, and each dropout setting, a step (0.1, or 0.2 when bold) up and down."""
    for call, label, index in _dropout_calls(model):
        node = argument_for(call, index, "p")
        rate = 0.5 if node is None else number_literal(node)
        if rate is None or not 0 <= rate <= 1:
            continue
        old = "default 0.5" if node is None else model.text.segment(node)
        for new in _rate_steps(rate, model.steps.rate):
            if node is None:
                edit = _add_keyword(model.text, call, f"p={new!r}")
            else:
                edit = model.text.replace(node, repr(new))
            yield Change("dropout", f"{label} p {old} -> {new!r}", (edit,))
    for setting in model.settings:
        rate = number_literal(setting.value)
        if name_words(setting.name) & DROPOUT_WORDS and rate is not None and 0 <= rate <= 1:
            for new in _rate_steps(rate, model.steps.rate):
                edit = model.text.replace(setting.value, repr(new))
                description = f"{setting.label} {model.text.segment(setting.value)} -> {new!r}"
                yield Change("dropout", description, (edit,))


def _dropout_calls(model: ModelFile) -> Iterator[tuple[ast.Call, str, int]]:
    """(call, label for descriptions, position of `p`) for each dropout module or function call."""
    for layer in model.layers:
        if layer.cls in DROPOUT_MODULES and is_plain(layer.call):
            yield layer.call, f"{layer.spot} {layer.cls}", 0
    calls = sorted(
        (node for node in ast.walk(model.tree) if isinstance(node, ast.Call) and is_plain(node)),
        key=lambda call: (call.lineno, call.col_offset),
    )
    for call in calls:
        resolved = model.names.resolve(call.func)
        if resolved is not None and resolved[0] == "functional" and resolved[1] in DROPOUT_FUNCTIONS:
            yield call, f"line {call.lineno} {model.text.segment(call.func)}", 1


def _rate_steps(rate: float, step: float) -> list[float]:
    """The rate `step` up and down, kept within [0, 0.9] and rounded to 2 decimals; no no-ops."""
    steps = []
    for new in (rate + step, rate - step):
        new = round(min(0.9, max(0.0, new)), 2)
        if new != rate and new not in steps:
            steps.append(new)
    return steps


def _add_keyword(text: Source, call: ast.Call, keyword: str) -> Edit:
    """An edit adding `name=value` as the last argument of a call."""
    arguments = [*call.args, *call.keywords]
    if not arguments:
        at = text.end(call) - 1  # just before the closing parenthesis
        return Edit(at, at, keyword)
    at = max(text.end(argument) for argument in arguments)
    return Edit(at, at, f", {keyword}")


# ---------------------------------------------------------------------------------------------
# Rule: norm.


def norm_rule(model: ModelFile) -> Iterator[Change]:
    """BatchNorm <-> GroupNorm after convolutions; BatchNorm1d <-> LayerNorm after linear layers."""
    has_sequences = any(layer.cls in SEQUENCE_LAYERS for layer in model.layers)
    for index, layer in enumerate(model.layers):
        feeders = [other for other in model.layers[:index] if other.scope is layer.scope and other.cls in SIZED]
        feeder = feeders[-1].cls.removeprefix("Lazy") if feeders else None
        replacement = _other_norm(model, layer, feeder, has_sequences) if is_plain(layer.call) else None
        if replacement is None:
            continue
        cls, arguments = replacement
        spelling, imports = model.names.nn_class(cls, layer.call.func, model.text)
        new = f"{spelling}({arguments})"
        description = f"{layer.spot} {model.text.segment(layer.call)} -> {new}"
        yield Change("norm", description, (model.text.replace(layer.call, new), *imports))


def _other_norm(model: ModelFile, layer: Layer, feeder: str | None, has_sequences: bool) -> tuple[str, str] | None:
    """(class, argument text) of the normalisation to use instead of this one, or None."""
    segment = model.text.segment
    eps = layer.arg(None, "eps")
    extra = f", eps={segment(eps)}" if eps is not None else ""
    # LayerNorm and BatchNorm1d agree only on (batch, features) tensors: after a Linear, with no sequences about.
    flat_features = feeder == "Linear" and not has_sequences
    if layer.cls in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"):
        channels = layer.arg(0, "num_features")
        if channels is None:
            return None
        if layer.cls == "BatchNorm1d" and flat_features:
            return "LayerNorm", f"{segment(channels)}{extra}"
        if layer.cls != "BatchNorm1d" or feeder == "Conv1d":
            # The most groups (of 8, 4, 2, 1) that divide the channels; 1 when the count is not a literal.
            count = int_literal(channels)
            groups = next(g for g in (8, 4, 2, 1) if count % g == 0) if count else 1
            return "GroupNorm", f"{groups}, {segment(channels)}{extra}"
    elif layer.cls == "GroupNorm":
        channels = layer.arg(1, "num_channels")
        if channels is not None and feeder in CONVS:
            return f"BatchNorm{feeder[-2:]}", f"{segment(channels)}{extra}"
    elif layer.cls == "LayerNorm":
        shape = layer.arg(0, "normalized_shape")
        if shape is not None and not isinstance(shape, (ast.Tuple, ast.List)) and flat_features:
            return "BatchNorm1d", f"{segment(shape)}{extra}"
    return None


# ---------------------------------------------------------------------------------------------
# Rule: kernel.


def kernel_rule(model: ModelFile) -> Iterator[Change]:
    """Convolution kernels 3 <-> 5 <-> 7 (3 <-> 7 when bold) where the padding keeps lengths, with the padding following."""
    for layer in model.layers:
        same = same_padding(layer) if layer.cls in CONVS and is_plain(layer.call) else None
        if same is None:
            continue
        kernel, kernel_node, padding_is_same = same
        for new in (kernel + model.steps.kernel, kernel - model.steps.kernel):
            if new not in (3, 5, 7) or kernel not in (3, 5, 7):
                continue
            edits = [model.text.replace(kernel_node, str(new))]
            description = f"{layer.spot} {layer.cls} kernel_size {kernel} -> {new}"
            if not padding_is_same:
                edits.append(model.text.replace(layer.arg(4, "padding"), str(new // 2)))
                description += f", padding {kernel // 2} -> {new // 2}"
            yield Change("kernel", description, tuple(edits))
