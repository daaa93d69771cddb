"""Rules that change the model's structure: a normalisation, a dropout, a layer or a residual connection added, a pooling or a named activation swapped.

Each rule writes the new module next to the one it follows, wrapping it in a Sequential where the
file builds modules one attribute at a time. Shapes are rarely visible in the text, so these rules
propose wherever the change could fit and the build check (see checking) drops what does not.
"""

from __future__ import annotations

import ast
from typing import Iterator

from autoraysearch.ideators.mutate.reading import Layer, ModelFile, is_plain
from autoraysearch.ideators.mutate.source import Change, Edit
from autoraysearch.ideators.mutate.torch_nn import (
    ACTIVATION_STRINGS, ACTIVATIONS, CONVS, DROPOUT_MODULES, NORM_SIZE, SIZED,
)

RESIDUAL_CLASS = "Residual"
# Wrapping these in a residual connection or repeating them adds nothing a user would want.
NOT_WORTH_WRAPPING = set(ACTIVATIONS) | DROPOUT_MODULES | set(NORM_SIZE) | {"RMSNorm", "Flatten", "Identity", "Unflatten"}
POOL_SWAPS = {"MaxPool": "AvgPool", "AvgPool": "MaxPool", "AdaptiveAvgPool": "AdaptiveMaxPool",
              "AdaptiveMaxPool": "AdaptiveAvgPool"}
FUNCTIONAL_POOL_SWAPS = {"max_pool": "avg_pool", "avg_pool": "max_pool",
                         "adaptive_avg_pool": "adaptive_max_pool", "adaptive_max_pool": "adaptive_avg_pool"}
RECURRENT = ("GRU", "LSTM", "RNN")
NORM_REPLACEMENTS = {"LayerNorm": ("RMSNorm",), "RMSNorm": ("LayerNorm",)}


def norm_insert_rule(model: ModelFile) -> Iterator[Change]:
    """A normalisation after each hidden linear or convolutional layer that has none."""
    for layer, out in _hidden_sized_layers(model):
        if _next_is(model, layer, set(NORM_SIZE) | {"RMSNorm"}):
            continue
        base = layer.cls.removeprefix("Lazy")
        if base in CONVS:
            dims = base[-2:]
            norms = [f"BatchNorm{dims}({out})", f"GroupNorm(1, {out})"]
        else:
            norms = [f"LayerNorm({out})", f"BatchNorm1d({out})"]
        for norm in norms:
            new = _after(model, layer, norm)
            yield Change("norm", f"{layer.spot} {layer.cls} followed by {norm}", new, "add")


def dropout_insert_rule(model: ModelFile) -> Iterator[Change]:
    """Dropout before each hidden linear or convolutional layer that has none before it."""
    rate = 0.3 if model.steps.bold else 0.1
    sized = [layer for layer in model.layers if layer.cls in SIZED]
    for layer in sized:
        if not is_plain(layer.call) or _previous_is(model, layer, DROPOUT_MODULES):
            continue
        spelling, imports = model.names.nn_class("Dropout", layer.call.func, model.text)
        edits = (model.text.replace(layer.call, f"{_sequential(model, layer)}({spelling}({rate}), "
                                                 f"{model.text.segment(layer.call)})"), *imports)
        yield Change("dropout", f"{layer.spot} {layer.cls} gets Dropout({rate}) before it", edits, "add")


def layer_insert_rule(model: ModelFile) -> Iterator[Change]:
    """A layer more: a hidden linear or convolutional layer followed by one (two when bold) of its own width, and any repeatable module repeated."""
    activation = _first_activation(model)
    times = 2 if model.steps.bold else 1
    for layer, out in _hidden_sized_layers(model):
        base = layer.cls.removeprefix("Lazy")
        if base in CONVS:
            kernel = model.text.segment(layer.arg(2, "kernel_size")) if layer.arg(2, "kernel_size") is not None else "3"
            extra = f"{base}({out}, {out}, {kernel}, padding=\"same\")"
        elif base == "Linear":
            extra = f"Linear({out}, {out})"
        else:
            continue
        added = ", ".join([f"{{nn}}{activation}(), {{nn}}{extra}"] * times)
        yield Change("layer", f"{layer.spot} {layer.cls} followed by {times} more {base}({out}, {out})",
                     _after(model, layer, added, raw=True), "up")
    for layer in model.layers:
        if layer.cls in NOT_WORTH_WRAPPING or layer.cls in SIZED or not is_plain(layer.call):
            continue
        if not (_in_sequence(model, layer) or _in_module_list(model, layer)):
            continue
        copies = ", ".join([model.text.segment(layer.call)] * times)
        at = model.text.end(layer.call)
        name = layer.cls or model.text.segment(layer.call.func)
        yield Change("layer", f"{layer.spot} {name} repeated{' twice' if times > 1 else ''}",
                     (Edit(at, at, f", {copies}"),), "up")


def residual_rule(model: ModelFile) -> Iterator[Change]:
    """A residual connection (x + block(x)) around a module that may keep its input's shape."""
    defined = {node.name for node in model.tree.body if isinstance(node, ast.ClassDef)}
    wrapped = {id(arg) for layer in model.layers if model.text.segment(layer.call.func) == RESIDUAL_CLASS
               for arg in layer.call.args}
    helper = () if RESIDUAL_CLASS in defined else _residual_helper(model)
    if helper is None:
        return
    for layer in model.layers:
        name = layer.cls or model.text.segment(layer.call.func)
        if name == RESIDUAL_CLASS or id(layer.call) in wrapped or layer.cls in NOT_WORTH_WRAPPING:
            continue
        if layer.cls in ("ModuleList", "ModuleDict") or (layer.cls in SIZED and _io_differ(layer)):
            continue
        edit = model.text.replace(layer.call, f"{RESIDUAL_CLASS}({model.text.segment(layer.call)})")
        yield Change("residual", f"{layer.spot} {name} inside a residual connection", (edit, *helper), "add")


def head_rule(model: ModelFile) -> Iterator[Change]:
    """Before the output layer: a hidden layer of its input's width, or a normalisation."""
    sized = [layer for layer in model.layers if layer.cls == "Linear" and is_plain(layer.call)]
    if not sized:
        return
    head = sized[-1]
    width_node = head.arg(*SIZED["Linear"][0])
    if width_node is None:
        return
    width = model.text.segment(width_node)
    prefix, imports = _nn_prefix(model, head)
    activation = _first_activation(model)
    head_text = model.text.segment(head.call)
    sequential = _sequential(model, head)
    times = 2 if model.steps.bold else 1
    hidden = ", ".join([f"{prefix}Linear({width}, {width}), {prefix}{activation}()"] * times)
    yield Change("layer", f"{head.spot} Linear gets {times} hidden Linear({width}, {width}) before it",
                 (model.text.replace(head.call, f"{sequential}({hidden}, {head_text})"), *imports), "up")
    if not _previous_is(model, head, set(NORM_SIZE)):
        for norm in (f"LayerNorm({width})", f"BatchNorm1d({width})"):
            yield Change("norm", f"{head.spot} Linear gets {norm} before it",
                         (model.text.replace(head.call, f"{sequential}({prefix}{norm}, {head_text})"), *imports), "add")


def recurrent_rule(model: ModelFile) -> Iterator[Change]:
    """GRU <-> LSTM <-> RNN, keeping the arguments: each returns (output, state) the same way."""
    for layer in model.layers:
        if layer.cls in RECURRENT:
            for cls in RECURRENT:
                if cls != layer.cls:
                    spelling, imports = model.names.nn_class(cls, layer.call.func, model.text)
                    edit = model.text.replace(layer.call.func, spelling)
                    yield Change("cell", f"{layer.spot} {layer.cls} -> {cls}", (edit, *imports), "swap")


def pooling_rule(model: ModelFile) -> Iterator[Change]:
    """Max pooling <-> average pooling, as modules and as functions."""
    for layer in model.layers:
        for old, new in POOL_SWAPS.items():
            if layer.cls.startswith(old) and layer.cls[len(old):] in ("1d", "2d", "3d"):
                cls = new + layer.cls[len(old):]
                spelling, imports = model.names.nn_class(cls, layer.call.func, model.text)
                args = [model.text.segment(a) for a in layer.call.args[:3]]
                args += [f"{k.arg}={model.text.segment(k.value)}" for k in layer.call.keywords
                         if k.arg in ("kernel_size", "stride", "padding", "output_size")]
                edit = model.text.replace(layer.call, f"{spelling}({', '.join(args)})")
                yield Change("pooling", f"{layer.spot} {layer.cls} -> {cls}", (edit, *imports), "swap")
    for node in ast.walk(model.tree):
        resolved = model.names.resolve(node.func) if isinstance(node, ast.Call) else None
        if resolved is None or resolved[0] != "functional":
            continue
        for old, new in FUNCTIONAL_POOL_SWAPS.items():
            if resolved[1].startswith(old) and resolved[1][len(old):] in ("1d", "2d", "3d"):
                name = new + resolved[1][len(old):]
                keep = [model.text.segment(a) for a in node.args[:4]]
                keep += [f"{k.arg}={model.text.segment(k.value)}" for k in node.keywords
                         if k.arg in ("kernel_size", "stride", "padding", "output_size")]
                edit = model.text.replace(node, f"{model.text.segment(node.func.value)}.{name}({', '.join(keep)})")
                yield Change("pooling", f"line {node.lineno} {resolved[1]} -> {name}", (edit,), "swap")


def named_choice_rule(model: ModelFile) -> Iterator[Change]:
    """Activations named by a string (`activation="relu"`, `ACTIVATION = "gelu"`) swapped; LayerNorm <-> RMSNorm."""
    for node in _setting_strings(model):
        if node.value.lower() in ACTIVATION_STRINGS:
            for target in ACTIVATION_STRINGS:
                if target != node.value.lower():
                    text = target.upper() if node.value.isupper() else target
                    yield Change("activation", f"line {node.lineno} activation {node.value!r} -> {text!r}",
                                 (model.text.replace(node, repr(text)),), "swap")
    for layer in model.layers:
        for cls in NORM_REPLACEMENTS.get(layer.cls, ()):
            if not is_plain(layer.call):
                continue
            spelling, imports = model.names.nn_class(cls, layer.call.func, model.text)
            args = ", ".join(model.text.segment(a) for a in layer.call.args)
            edit = model.text.replace(layer.call, f"{spelling}({args})")
            yield Change("norm", f"{layer.spot} {layer.cls} -> {cls}", (edit, *imports), "swap")


# ---------------------------------------------------------------------------------------------


def _setting_strings(model: ModelFile) -> list[ast.Constant]:
    """String literals that act as settings: UPPER_CASE constants, `__init__` defaults and keyword arguments of calls."""
    found = []
    for node in model.tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id.isupper():
                found.append(node.value)
    for node in ast.walk(model.tree):
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            found += [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
        elif isinstance(node, ast.Call):
            found += [keyword.value for keyword in node.keywords]
    strings = [n for n in found if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return sorted(strings, key=lambda n: (n.lineno, n.col_offset))


def _hidden_sized_layers(model: ModelFile) -> Iterator[tuple[Layer, str]]:
    """(layer, its output size as written) for each linear or convolutional layer but the model's last."""
    sized = [layer for layer in model.layers if layer.cls in SIZED and is_plain(layer.call)]
    for layer in sized[:-1]:
        node = layer.arg(*SIZED[layer.cls][1])
        if node is not None:
            yield layer, model.text.segment(node)


def _after(model: ModelFile, layer: Layer, module: str, raw: bool = False) -> tuple[Edit, ...]:
    """Edits placing `module` (code after `nn.`) right after the layer: a new Sequential element, or a wrap."""
    prefix, imports = _nn_prefix(model, layer)
    modules = module.replace("{nn}", prefix) if raw else prefix + module
    if _in_sequence(model, layer):
        at = model.text.end(layer.call)
        return (Edit(at, at, f", {modules}"), *imports)
    wrap = f"{_sequential(model, layer)}({model.text.segment(layer.call)}, {modules})"
    return (model.text.replace(layer.call, wrap), *imports)


def _nn_prefix(model: ModelFile, layer: Layer) -> tuple[str, list[Edit]]:
    """`nn.` (or however the file reaches torch.nn), and an import when the file has none."""
    if model.names.nn:
        return f"{model.names.nn[0]}.", []
    if model.names.torch:
        return f"{model.names.torch[0]}.nn.", []
    at = model.text.end(model.names.last_import) if model.names.last_import else 0
    return "nn.", [Edit(at, at, "\nfrom torch import nn" if at else "from torch import nn\n")]


def _sequential(model: ModelFile, layer: Layer) -> str:
    spelling, _ = model.names.nn_class("Sequential", layer.call.func, model.text)
    if spelling == "Sequential" and "Sequential" not in model.names.classes:
        return _nn_prefix(model, layer)[0] + "Sequential"
    return spelling


def _in_sequence(model: ModelFile, layer: Layer) -> bool:
    """True when the layer is an element of an nn.Sequential(...) call's arguments."""
    for node in ast.walk(model.tree):
        if isinstance(node, ast.Call) and any(arg is layer.call for arg in node.args):
            resolved = model.names.resolve(node.func)
            return resolved == ("nn", "Sequential")
    return False


def _in_module_list(model: ModelFile, layer: Layer) -> bool:
    """True when the layer is an element of the list literal given to nn.ModuleList([...])."""
    for node in ast.walk(model.tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], (ast.List, ast.Tuple)):
            if any(element is layer.call for element in node.args[0].elts):
                return model.names.resolve(node.func) == ("nn", "ModuleList")
    return False


def _neighbour(model: ModelFile, layer: Layer, offset: int) -> Layer | None:
    index = model.layers.index(layer) + offset
    if 0 <= index < len(model.layers) and model.layers[index].scope is layer.scope:
        return model.layers[index]
    return None


def _next_is(model: ModelFile, layer: Layer, classes: set[str]) -> bool:
    following = _neighbour(model, layer, 1)
    return following is not None and following.cls in classes


def _previous_is(model: ModelFile, layer: Layer, classes: set[str]) -> bool:
    before = _neighbour(model, layer, -1)
    return before is not None and before.cls in classes


def _first_activation(model: ModelFile) -> str:
    """The activation module the file uses first (ReLU when it uses none as a module)."""
    return next((layer.cls for layer in model.layers if layer.cls in ACTIVATIONS), "ReLU")


def _io_differ(layer: Layer) -> bool:
    """True for a linear or convolutional layer whose literal input and output sizes differ."""
    spec = SIZED[layer.cls]
    if spec[0] is None:
        return False
    sizes = [layer.arg(*s) for s in spec]
    texts = [ast.dump(node) if node is not None else None for node in sizes]
    return None not in texts and texts[0] != texts[1]


def _residual_helper(model: ModelFile) -> tuple[Edit, ...] | None:
    """The edit adding the small Residual module before the file's first class; None without a class."""
    first = next((node for node in model.tree.body if isinstance(node, ast.ClassDef)), None)
    if first is None:
        return None
    prefix = _nn_prefix(model, model.layers[0])[0] if model.layers else "nn."
    at = model.text.start(first.decorator_list[0] if first.decorator_list else first)
    helper = (
        f"class {RESIDUAL_CLASS}({prefix}Module):\n"
        f'    """Adds a block\'s input to its output."""\n\n'
        f"    def __init__(self, block):\n"
        f"        super().__init__()\n"
        f"        self.block = block\n\n"
        f"    def forward(self, x):\n"
        f"        return x + self.block(x)\n\n\n"
    )
    return (Edit(at, at, helper),)
