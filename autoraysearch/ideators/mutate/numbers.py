"""The number rule: every number a user would tune, found wherever the model is built, moved up and down.

It reads layer arguments of any module call (by keyword or position, the parameter named from
torch's own signature), the defaults of every `__init__` (numbers, tuples and lists of them),
module-level UPPER_CASE settings and `range(n)` counts. It cannot tell from the text alone whether a
new value still builds, so it proposes freely and the build check (see checking) drops what fails;
a size change also comes carried to every other place holding the same size, which is how a hidden
size reaches the layers that consume it in a GRU, a transformer or a ModuleList MLP.
"""

from __future__ import annotations

import ast
import inspect
from functools import lru_cache
from typing import Iterator, NamedTuple

from autoraysearch.ideators.mutate.reading import ModelFile, dotted, init_method, name_words
from autoraysearch.ideators.mutate.source import Change, Edit
from autoraysearch.ideators.mutate.torch_nn import DEPTH_WORDS, DROPOUT_WORDS

# Names of numbers the model does not choose: the task fixes them, or changing them means nothing.
FIXED_WORDS = {
    "in", "input", "inp", "class", "classes", "label", "labels", "vocab", "outputs", "eps", "momentum",
    "seed", "affine", "bias", "batch", "first",
}
KERNEL_WORDS = {"kernel"}
HEAD_WORDS = {"nhead", "heads", "head"}
STEP_WORDS = {"stride", "padding", "dilation", "pad", "patch", "groups", "pool"}
# A size carried everywhere it appears still leaves these alone: the task fixes them.
NEVER_CARRIED = {"class", "classes", "label", "labels", "vocab", "seed", "outputs"}


class Spot(NamedTuple):
    """A number literal the model reads, what it is called, and where it is for descriptions."""

    node: ast.Constant
    name: str  # the parameter or setting name, "" when unknown
    label: str  # "features[0] Conv2d out_channels", "HIDDEN[1]", "Model.__init__ default depth"


def number_rule(model: ModelFile) -> Iterator[Change]:
    """Each tunable number a step up and down, and each size also changed everywhere it appears."""
    spots = list(_spots(model))
    seen: set[int] = set()
    for spot in spots:
        if id(spot.node) in seen:
            continue
        seen.add(id(spot.node))
        kind = kind_of(spot.name, spot.node.value)
        if kind is None:
            continue
        old = spot.node.value
        for new in new_values(kind, old, model.steps.bold):
            direction = "up" if new > old else "down"
            text = repr(new)
            edit = model.text.replace(spot.node, text)
            yield Change(kind, f"{spot.label} {old!r} -> {text}", (edit,), direction)
            if kind == "width" and type(old) is int:
                same = [other.node for other in spots if other.node is not spot.node and other.node.value == old
                        and type(other.node.value) is int and not name_words(other.name) & NEVER_CARRIED]
                same += _product_factors_equal(model, old, {id(n) for n in same} | {id(spot.node)})
                if same:
                    edits = (edit, *(model.text.replace(node, str(new)) for node in same))
                    places = f"{len(same)} other place{'s' if len(same) > 1 else ''}"
                    description = f"{spot.label} {old} -> {new} with the {places} of size {old}"
                    yield Change(kind, description, edits, direction)


def kind_of(name: str, value: object) -> str | None:
    """The edit kind a number's name suggests: width, depth, dropout, kernel, heads or number; None to leave it."""
    if type(value) not in (int, float) or _fixed(name):
        return None
    words = name_words(name) if name else set()
    if type(value) is float:
        if words & DROPOUT_WORDS or name == "p":
            return "dropout" if 0 <= value <= 1 else None
        return "number" if value > 0 else None
    if value < 1:
        return None
    if words & DEPTH_WORDS:
        return "depth"
    if words & KERNEL_WORDS:
        return "kernel"
    if words & HEAD_WORDS:
        return "heads"
    if words & STEP_WORDS or (not words and value <= 4):
        return "number"
    return "width"


def new_values(kind: str, old: int | float, bold: bool) -> list[int | float]:
    """The values a number moves to, small or bold, leaving out no-ops and nonsense (a zero size)."""
    if kind == "dropout":
        step = 0.2 if bold else 0.1
        values = [round(min(0.9, max(0.0, old + d)), 2) for d in (step, -step)]
    elif kind == "number" and type(old) is float:
        factor = 4 if bold else 2
        values = [float(f"{old * factor:.4g}"), float(f"{old / factor:.4g}")]
    elif kind in ("depth", "number"):
        step = 2 if bold else 1
        values = [old + step, max(1 if kind == "depth" else 0, old - step)]
    elif kind == "kernel":
        step = 4 if bold else 2
        values = [old + step, old - step if old - step >= 1 else old]
    else:  # width and heads scale
        factor = 4 if bold else 2
        values = [old * factor, max(1, old // factor)]
    return [value for value in dict.fromkeys(values) if value != old]


def _fixed(name: str) -> bool:
    return bool(name and name_words(name) & FIXED_WORDS)


def _spots(model: ModelFile) -> Iterator[Spot]:
    """Numbers in module calls, `__init__` defaults, UPPER_CASE settings and range counts, in that order."""
    for layer in model.layers:
        names = parameter_names(layer.cls) if layer.cls else ()
        callee = layer.cls or (dotted(layer.call.func) or "block")
        for index, arg in enumerate(layer.call.args):
            if isinstance(arg, ast.Starred):
                break
            name = names[index] if index < len(names) else ""
            yield from _literals(arg, name, f"{layer.spot} {callee} {name or f'argument {index + 1}'}")
        for keyword in layer.call.keywords:
            if keyword.arg:
                yield from _literals(keyword.value, keyword.arg, f"{layer.spot} {callee} {keyword.arg}")
    for cls in (node for node in model.tree.body if isinstance(node, ast.ClassDef)):
        for arg, default in init_defaults(cls):
            yield from _literals(default, arg.arg, f"{cls.name}.__init__ default {arg.arg}")
    for node in model.tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if len(targets) == 1 and isinstance(targets[0], ast.Name) and targets[0].id.isupper():
                yield from _literals(node.value, targets[0].id, targets[0].id)
    for node in ast.walk(model.tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
            if len(node.args) == 1 and isinstance(node.args[0], ast.Constant):
                yield from _literals(node.args[0], "blocks", f"line {node.lineno} range")


def init_defaults(cls: ast.ClassDef) -> list[tuple[ast.arg, ast.expr]]:
    """(argument, default) of each defaulted argument of the class's __init__, positional then keyword-only."""
    init = init_method(cls)
    if init is None:
        return []
    args = init.args
    positional = args.posonlyargs + args.args
    pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
    return pairs + [(arg, default) for arg, default in zip(args.kwonlyargs, args.kw_defaults) if default is not None]


def _literals(node: ast.expr, name: str, label: str) -> Iterator[Spot]:
    """The number literals of one value: itself, or each element of a tuple or list, or a negated literal's."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        yield Spot(node, name, label)
    elif isinstance(node, (ast.Tuple, ast.List)):
        for index, element in enumerate(node.elts):
            if isinstance(element, ast.Constant) and type(element.value) in (int, float):
                yield Spot(element, name, f"{label}[{index}]")


def _product_factors_equal(model: ModelFile, value: int, known: set[int]) -> list[ast.Constant]:
    """Literal factors equal to `value` inside products in module calls, e.g. the 32 of `Linear(32 * 4 * 4, 64)`."""
    found = []
    for layer in model.layers:
        for node in ast.walk(layer.call):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
                for side in (node.left, node.right):
                    if isinstance(side, ast.Constant) and side.value == value and type(side.value) is int \
                            and id(side) not in known:
                        known.add(id(side))
                        found.append(side)
    return found


@lru_cache(maxsize=512)
def parameter_names(cls: str) -> tuple[str, ...]:
    """The positional parameter names of torch.nn class `cls`, from its signature; () when unknown."""
    import torch.nn  # only when a model file builds torch modules: importing torch takes a while

    target = getattr(torch.nn, cls, None)
    if not inspect.isclass(target):
        return ()
    try:
        parameters = inspect.signature(target.__init__).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(
        p.name for p in parameters
        if p.name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


def sequence_length_changes(model: ModelFile) -> Iterator[Change]:
    """Tuples and lists of sizes (settings and `__init__` defaults) one element longer or shorter: a layer more or less."""
    for spot_node, label in _size_sequences(model):
        elements = spot_node.elts
        text = model.text
        last = text.segment(elements[-1])
        times = 2 if model.steps.bold else 1
        longer = ", ".join([text.segment(e) for e in elements] + [last] * times)
        yield Change("depth", f"{label} {text.segment(spot_node)} -> one more layer of {last}" + (" (twice)" if times > 1 else ""),
                     (Edit(text.start(spot_node), text.end(spot_node), _bracket(spot_node, longer)),), "up")
        if len(elements) > 1:
            shorter = ", ".join(text.segment(e) for e in elements[:-1])
            yield Change("depth", f"{label} {text.segment(spot_node)} -> its last layer removed",
                         (Edit(text.start(spot_node), text.end(spot_node), _bracket(spot_node, shorter)),), "down")


def _bracket(node: ast.Tuple | ast.List, inner: str) -> str:
    if isinstance(node, ast.List):
        return f"[{inner}]"
    return f"({inner},)" if "," not in inner else f"({inner})"


def _size_sequences(model: ModelFile) -> Iterator[tuple[ast.Tuple | ast.List, str]]:
    """Tuples or lists of positive int literals bound to a setting or an `__init__` default not named for the task."""
    def wanted(node: ast.expr, name: str) -> bool:
        return (isinstance(node, (ast.Tuple, ast.List)) and bool(node.elts) and not _fixed(name)
                and all(isinstance(e, ast.Constant) and type(e.value) is int and e.value > 0 for e in node.elts))

    for node in model.tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if len(targets) == 1 and isinstance(targets[0], ast.Name) and wanted(node.value, targets[0].id):
                yield node.value, targets[0].id
    for cls in (node for node in model.tree.body if isinstance(node, ast.ClassDef)):
        for arg, default in init_defaults(cls):
            if wanted(default, arg.arg):
                yield default, f"{cls.name}.__init__ default {arg.arg}"


def optional_keyword_rule(model: ModelFile) -> Iterator[Change]:
    """Parameters a torch.nn layer takes but the file leaves at their default (num_layers, bias, norm_first...), set."""
    for layer in model.layers:
        if not layer.cls or any(isinstance(a, ast.Starred) for a in layer.call.args):
            continue
        names = parameter_names(layer.cls)
        passed = set(names[: len(layer.call.args)]) | {k.arg for k in layer.call.keywords}
        if None in passed:
            continue  # **kwargs: what is passed is unknown
        for name, default in optional_parameters(layer.cls).items():
            if name in passed or (name == "dropout" and _single_recurrent_layer(layer)):
                continue  # dropout of a one-layer GRU/LSTM/RNN acts between layers that are not there: a null change
            if name == "activation":
                values: list = ["gelu"]
            elif type(default) is bool:
                values = [not default]
            else:
                kind = kind_of(name, default)
                values = new_values(kind, default, model.steps.bold) if kind else []
                values = [v for v in values if v >= 1 or type(default) is float]  # a stride or a count of 0 breaks
            for value in values:
                keyword = f"{name}={value!r}"
                at = model.text.end(layer.call) - 1  # before the closing parenthesis
                separator = ", " if layer.call.args or layer.call.keywords else ""
                kind = kind_of(name, default) if type(default) in (int, float) else "option"
                direction = "swap" if kind == "option" else ("up" if value > default else "down")
                shown = getattr(default, "__name__", None) or repr(default)  # a function's repr holds its address
                yield Change(kind or "option", f"{layer.spot} {layer.cls} {keyword} (default {shown})",
                             (Edit(at, at, separator + keyword),), direction)


def _single_recurrent_layer(layer) -> bool:
    """A GRU, LSTM or RNN call whose num_layers is left at 1 or written as the literal 1."""
    if layer.cls not in ("GRU", "LSTM", "RNN"):
        return False
    given = [k.value for k in layer.call.keywords if k.arg == "num_layers"] or layer.call.args[2:3]
    return not given or (isinstance(given[0], ast.Constant) and given[0].value == 1)


# Layers whose signature is (*args, **kwargs): the options torch documents for them.
RECURRENT_OPTIONS = {"num_layers": 1, "bias": True, "dropout": 0.0, "bidirectional": False}
# Options that change what the layer means to the code around it, or nothing a user would tune.
NOT_OPTIONS = {
    "batch_first", "inplace", "device", "dtype", "padding_mode", "return_indices", "ceil_mode", "proj_size",
    "enable_nested_tensor", "mask_check", "track_running_stats", "elementwise_affine", "affine", "eps",
    "layer_norm_eps", "momentum", "count_include_pad", "divisor_override", "sparse", "scale_grad_by_freq",
    "max_norm", "norm_type", "padding_idx", "_weight", "_freeze", "align_corners", "recompute_scale_factor",
    "approximate", "dim", "start_dim", "end_dim", "groups", "dilation", "padding", "output_padding", "add_bias_kv",
    "add_zero_attn", "kdim", "vdim", "encoder_layer", "norm", "custom_encoder", "custom_decoder",
}


@lru_cache(maxsize=512)
def optional_parameters(cls: str) -> dict[str, object]:
    """The tunable parameters of torch.nn class `cls` that have a number, a bool or an activation as default."""
    if cls in ("GRU", "LSTM", "RNN"):
        return dict(RECURRENT_OPTIONS)
    import torch.nn

    target = getattr(torch.nn, cls, None)
    if not inspect.isclass(target):
        return {}
    try:
        parameters = inspect.signature(target.__init__).parameters.values()
    except (TypeError, ValueError):
        return {}
    found = {}
    for p in parameters:
        if p.name in NOT_OPTIONS or p.default is p.empty:
            continue
        if type(p.default) in (int, float, bool) or (p.name == "activation" and callable(p.default)):
            found[p.name] = p.default
    return found
