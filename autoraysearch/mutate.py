"""The offline ideator: small rule-based edits to a model.py, found by reading its syntax tree.

Every rule finds spots in the source (a layer size, an activation, a dropout rate...) and
rewrites only the text of those spots, so the user's comments and layout survive. A rule makes
an edit only when it can tell from the code alone that the model still builds: a layer made
wider carries its new size to the layers that consume it, or the edit is not proposed.
Nothing here imports torch or runs the model.
"""

from __future__ import annotations

import ast
import random
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, NamedTuple

from autoraysearch.model_source import check_model_source, defines_model, find_model_class, fingerprint


@dataclass(frozen=True)
class Mutation:
    """One proposed change: its rule group, what exactly changed, and the complete new model.py."""

    kind: str
    description: str
    source: str


def propose_mutations(source: str) -> list[Mutation]:
    """Every edit the rules can make to this model.py, in a deterministic order."""
    model = _ModelFile(source, check_model_source(source))
    seen = {fingerprint(source)}
    mutations = []
    for rule in _RULES:
        for candidate in rule(model):
            new_source = model.text.apply(candidate.edits)
            key = fingerprint(new_source)
            if key in seen or not _still_a_model(new_source):
                continue
            seen.add(key)
            mutations.append(Mutation(candidate.kind, candidate.description, new_source))
    return mutations


def choose_mutations(source: str, *, tried: set[str], seed: int, count: int = 1) -> list[Mutation]:
    """Up to `count` untried edits, of different kinds where possible; same inputs -> same answer."""
    rng = random.Random(seed)
    by_kind: dict[str, list[Mutation]] = {}
    for mutation in propose_mutations(source):
        if fingerprint(mutation.source) not in tried:
            by_kind.setdefault(mutation.kind, []).append(mutation)
    kinds = sorted(by_kind)
    rng.shuffle(kinds)
    for kind in kinds:
        rng.shuffle(by_kind[kind])
    # Round-robin over the kinds, so that several candidates explore different directions
    # rather than four sizes of the same layer.
    chosen: list[Mutation] = []
    while len(chosen) < count and any(by_kind.values()):
        for kind in kinds:
            if by_kind[kind] and len(chosen) < count:
                chosen.append(by_kind[kind].pop(0))
    return chosen


def _still_a_model(source: str) -> bool:
    """True when an edited model.py parses and still binds `Model`."""
    try:
        return defines_model(ast.parse(source))
    except SyntaxError:
        return False


# ---------------------------------------------------------------------------------------------
# Knowledge about torch.nn the rules rely on.

# Layers with an input size and an output size: class -> (input, output), each (position, keyword);
# lazy layers infer their input, so they have none.
_SIZED = {
    "Linear": ((0, "in_features"), (1, "out_features")),
    "Conv1d": ((0, "in_channels"), (1, "out_channels")),
    "Conv2d": ((0, "in_channels"), (1, "out_channels")),
    "Conv3d": ((0, "in_channels"), (1, "out_channels")),
    "LazyLinear": (None, (0, "out_features")),
    "LazyConv1d": (None, (0, "out_channels")),
    "LazyConv2d": (None, (0, "out_channels")),
    "LazyConv3d": (None, (0, "out_channels")),
}
_CONVS = {"Conv1d", "Conv2d", "Conv3d"}

# Normalisation layers whose size must follow the layer before them: class -> (position, keyword).
_NORM_SIZE = {
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
_ACTIVATIONS = {
    "ReLU": ("relu", ("inplace",)),
    "GELU": ("gelu", ("approximate",)),
    "SiLU": ("silu", ("inplace",)),
    "LeakyReLU": ("leaky_relu", ("negative_slope", "inplace")),
    "ELU": ("elu", ("alpha", "inplace")),
    "Mish": ("mish", ("inplace",)),
}
_SWAP_TO = ("ReLU", "GELU", "SiLU", "LeakyReLU")

# Dropout modules take the rate first; the functions take it after the input.
_DROPOUT_MODULES = {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"}
_DROPOUT_FUNCTIONS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"}

# Layers that change lengths (spatial sizes): the first ones keep the channel count, the others do not.
_POOLS = {f"{kind}Pool{n}d" for kind in ("Max", "Avg", "LP", "FractionalMax") for n in (1, 2, 3)} | {"Upsample"}
_RESAMPLERS = _POOLS | {"PixelShuffle", "PixelUnshuffle"}

# Layers a tensor passes through with its channel/feature count unchanged.
_SHAPE_NEUTRAL = (
    set(_ACTIVATIONS)
    | _DROPOUT_MODULES
    | _POOLS
    | {f"Adaptive{kind}Pool{n}d" for kind in ("Avg", "Max") for n in (1, 2, 3)}
    | {"ReLU6", "Tanh", "Sigmoid", "Hardswish", "Hardsigmoid", "Hardtanh", "Softplus", "SELU", "CELU"}
    | {"Softmax", "LogSoftmax", "Identity", "Flatten", "Sequential", "ModuleList", "ModuleDict"}
)

# Layers that mean tensors carry a sequence axis, where LayerNorm and BatchNorm1d normalise different axes.
_SEQUENCE_LAYERS = {
    "Embedding", "EmbeddingBag", "MultiheadAttention", "Transformer", "TransformerEncoder",
    "TransformerDecoder", "TransformerEncoderLayer", "TransformerDecoderLayer",
    "LSTM", "GRU", "RNN", "Conv1d", "LazyConv1d",
}

# Nodes whose body may run several times.
_LOOPS = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)

# Capitalised calls that build no module.
_NOT_MODULES = {"OrderedDict"}

# Words in setting names (split on "_"): what a setting sizes, and sizes the model does not choose.
_SIZE_WORDS = {
    "width", "hidden", "hid", "channels", "channel", "ch", "dim", "dims", "features", "filters",
    "units", "size", "embed", "embd", "embedding", "emb", "planes", "neurons", "model", "nf",
}
_NOT_SIZE_WORDS = {
    "in", "input", "inp", "out", "output", "class", "classes", "label", "labels", "vocab", "seq",
    "len", "length", "kernel", "stride", "padding", "pad", "batch", "patch", "image", "img",
    "groups", "heads", "pool",
}
_DEPTH_WORDS = {"depth", "layers", "blocks", "stages", "repeats"}
_DROPOUT_WORDS = {"dropout", "drop"}


# ---------------------------------------------------------------------------------------------
# Source text and edits.


class _Edit(NamedTuple):
    """Replace bytes [start, end) of the UTF-8 source with `text` (start == end inserts)."""

    start: int
    end: int
    text: str


class _Candidate(NamedTuple):
    """A rule's proposal before it is applied: kind, description, edits."""

    kind: str
    description: str
    edits: tuple[_Edit, ...]


class _Source:
    """model.py's text, addressed as `ast` addresses it: line numbers and UTF-8 byte columns."""

    def __init__(self, text: str):
        self.data = text.encode()
        self._line_starts = [0]
        for line in self.data.splitlines(keepends=True):
            self._line_starts.append(self._line_starts[-1] + len(line))

    def start(self, node: ast.AST) -> int:
        """Byte offset where a node's text begins."""
        return self._line_starts[node.lineno - 1] + node.col_offset

    def end(self, node: ast.AST) -> int:
        """Byte offset just past a node's text."""
        return self._line_starts[node.end_lineno - 1] + node.end_col_offset

    def segment(self, node: ast.AST) -> str:
        """The exact source text of a node."""
        return self.data[self.start(node) : self.end(node)].decode()

    def preview(self, node: ast.AST, edit: _Edit) -> str:
        """The text of `node` once `edit`, which lies inside it, is made."""
        start, text = self.start(node), self.data[self.start(node) : self.end(node)]
        return (text[: edit.start - start] + edit.text.encode() + text[edit.end - start :]).decode()

    def replace(self, node: ast.AST, text: str) -> _Edit:
        """An edit replacing a node's text."""
        return _Edit(self.start(node), self.end(node), text)

    def apply(self, edits: Iterable[_Edit]) -> str:
        """The whole text with every edit made; identical edits count once, others must not overlap."""
        pieces, cursor = [], 0
        for edit in sorted(set(edits)):
            if edit.start < cursor:
                raise ValueError(f"mutate produced overlapping edits at byte {edit.start}")
            pieces += [self.data[cursor : edit.start], edit.text.encode()]
            cursor = edit.end
        pieces.append(self.data[cursor:])
        return b"".join(pieces).decode()


# ---------------------------------------------------------------------------------------------
# Reading the model: how it names torch, which modules it builds, which settings it has.


class _TorchNames:
    """The names this file binds to torch, torch.nn, torch.nn.functional and single torch.nn classes."""

    def __init__(self, tree: ast.Module):
        self.torch: list[str] = []
        self.nn: list[str] = []
        self.functional: list[str] = []
        self.classes: dict[str, str] = {}  # local name -> torch.nn class, from `from torch.nn import X`
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    # `import torch.nn as nn` binds `nn`, but `import torch.nn` binds `torch`.
                    if alias.asname:
                        self._bind(alias.name, alias.asname)
                    else:
                        self._bind(alias.name.split(".")[0], alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    self._bind(f"{node.module}.{alias.name}", alias.asname or alias.name)
        imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        self.last_import = imports[-1] if imports else None

    def _bind(self, qualified: str, local: str) -> None:
        """Record that the name `local` refers to `qualified`, when that is torch's."""
        if qualified == "torch":
            self.torch.append(local)
        elif qualified == "torch.nn":
            self.nn.append(local)
        elif qualified == "torch.nn.functional":
            self.functional.append(local)
        elif qualified.count(".") == 2 and qualified.startswith("torch.nn.") and qualified[9:10].isupper():
            self.classes[local] = qualified[9:]

    def resolve(self, func: ast.expr) -> tuple[str, str] | None:
        """("nn", "Conv2d"), ("functional", "relu") or ("torch", "relu") for a callee; None if not torch's."""
        if isinstance(func, ast.Name):
            return ("nn", self.classes[func.id]) if func.id in self.classes else None
        if not isinstance(func, ast.Attribute):
            return None
        prefix = _dotted(func.value)
        nn_prefixes = self.nn + [f"{name}.nn" for name in self.torch]
        if prefix in nn_prefixes:
            return "nn", func.attr
        if prefix in self.functional + [f"{name}.functional" for name in nn_prefixes]:
            return "functional", func.attr
        if prefix in self.torch:
            return "torch", func.attr
        return None

    def nn_class(self, cls: str, like: ast.expr, text: _Source) -> tuple[str, list[_Edit]]:
        """Code naming torch.nn class `cls`, written like the callee `like`, and any import that needs."""
        if isinstance(like, ast.Attribute):
            return f"{text.segment(like.value)}.{cls}", []
        for local, name in self.classes.items():
            if name == cls:
                return local, []
        if self.nn:
            return f"{self.nn[0]}.{cls}", []
        if self.torch:
            return f"{self.torch[0]}.nn.{cls}", []
        # The file imports torch.nn classes one by one: import this one the same way.
        if self.last_import is None:
            return cls, [_Edit(0, 0, f"from torch.nn import {cls}\n")]
        at = text.end(self.last_import)
        return cls, [_Edit(at, at, f"\nfrom torch.nn import {cls}")]


@dataclass(frozen=True)
class _Layer:
    """A call building a module, e.g. `nn.Conv2d(1, 16, 3)` or a user's `Block(16)`, and where it sits."""

    call: ast.Call
    cls: str  # the torch.nn class, or "" for any other class (a module we cannot see into)
    scope: ast.AST  # the innermost function, lambda or class around the call
    repeated: bool  # inside a loop or comprehension: one call, several modules
    spot: str  # where it is, for descriptions: "features[0]", "Block.conv" or "line 12"

    def arg(self, index: int | None, keyword: str) -> ast.expr | None:
        """The argument passed for a parameter, or None when absent."""
        return _argument(self.call, index, keyword)


class _Setting(NamedTuple):
    """A number the model reads as a setting: a `Model.__init__` default or a module constant."""

    label: str  # "Model.__init__ default width", "constant HIDDEN"
    name: str
    value: ast.Constant


class _Loop(NamedTuple):
    """A `for ... in range(count)` loop or comprehension."""

    target: ast.expr
    count: ast.expr
    body: list[ast.AST]


class _ModelFile:
    """Everything the rules read: the text, the tree, torch's spellings and the module calls in order."""

    def __init__(self, source: str, tree: ast.Module):
        self.text = _Source(source)
        self.tree = tree
        self.names = _TorchNames(tree)
        model_class = find_model_class(tree)
        self.layers = _find_layers(tree, self.names, model_class)
        self.layer_at = {id(layer.call): layer for layer in self.layers}
        self.settings = _find_settings(tree, model_class)


def _find_layers(tree: ast.Module, names: _TorchNames, model_class: ast.ClassDef | None) -> list[_Layer]:
    """Every module-building call in the file, in source order."""
    spots = _attribute_paths(tree, model_class)
    layers = []

    def visit(node: ast.AST, scope: ast.AST, repeated: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner_scope, inner_repeated = scope, repeated
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                inner_scope, inner_repeated = child, False
            elif isinstance(child, _LOOPS):
                inner_repeated = True
            if isinstance(child, ast.Call):
                cls = _module_class(child, names)
                if cls is not None:
                    spot = spots.get(id(child), f"line {child.lineno}")
                    layers.append(_Layer(child, cls, scope, repeated, spot))
            visit(child, inner_scope, inner_repeated)

    visit(tree, tree, False)
    return sorted(layers, key=lambda layer: (layer.call.lineno, layer.call.col_offset))


def _module_class(call: ast.Call, names: _TorchNames) -> str | None:
    """The torch.nn class a call builds, "" for another capitalised callee (a user's block), else None."""
    resolved = names.resolve(call.func)
    if resolved is not None:
        form, name = resolved
        return name if form == "nn" and name[:1].isupper() else None
    callee = (_dotted(call.func) or "").rsplit(".", 1)[-1]
    return "" if callee[:1].isupper() and callee not in _NOT_MODULES else None


def _attribute_paths(tree: ast.Module, model_class: ast.ClassDef | None) -> dict[int, str]:
    """Readable names for module calls stored on `self` in an `__init__`: "features[0]", "Block.conv1"."""
    paths: dict[int, str] = {}
    for cls in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
        init = _init_method(cls)
        prefix = "" if cls is model_class else f"{cls.name}."
        for node in ast.walk(init) if init else ():
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            else:
                continue
            for target in targets:
                if isinstance(target, ast.Attribute) and _dotted(target.value) == "self":
                    _name_contents(node.value, prefix + target.attr, paths)
    return paths


def _name_contents(expr: ast.expr | None, path: str, paths: dict[int, str]) -> None:
    """Name a module call and, inside nn.Sequential or nn.ModuleList, the calls it holds by index."""
    if not isinstance(expr, ast.Call):
        return
    paths.setdefault(id(expr), path)
    callee = _dotted(expr.func) or ""
    items = expr.args
    if callee.endswith("ModuleList") and len(items) == 1 and isinstance(items[0], (ast.List, ast.Tuple)):
        items = items[0].elts
    elif not callee.endswith("Sequential"):
        return
    for index, item in enumerate(items):
        if isinstance(item, ast.Starred):
            return  # the indices after a *list depend on its length
        _name_contents(item, f"{path}[{index}]", paths)


def _find_settings(tree: ast.Module, model_class: ast.ClassDef | None) -> list[_Setting]:
    """Numeric `Model.__init__` defaults and module-level constants (assigned once), in source order."""
    settings = []
    init = _init_method(model_class) if model_class else None
    if init is not None:
        args = init.args
        positional = args.posonlyargs + args.args
        pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
        pairs += [(arg, default) for arg, default in zip(args.kwonlyargs, args.kw_defaults) if default is not None]
        for arg, default in pairs:
            if _number(default) is not None:
                settings.append(_Setting(f"{model_class.name}.__init__ default {arg.arg}", arg.arg, default))
    assigned = Counter(
        target.id for node in tree.body for target in _assign_targets(node) if isinstance(target, ast.Name)
    )
    for node in tree.body:
        targets = _assign_targets(node) if isinstance(node, (ast.Assign, ast.AnnAssign)) else []
        if len(targets) == 1 and isinstance(targets[0], ast.Name) and assigned[targets[0].id] == 1:
            if _number(node.value) is not None:
                settings.append(_Setting(f"constant {targets[0].id}", targets[0].id, node.value))
    return settings


def _assign_targets(node: ast.stmt) -> list[ast.expr]:
    """What a module-level statement assigns to (`x = `, `x: int = `, `x += `), if anything."""
    if isinstance(node, ast.Assign):
        return node.targets
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return [node.target]
    return []


def _init_method(cls: ast.ClassDef) -> ast.FunctionDef | None:
    """The class's own `__init__`, if it defines one."""
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            return node
    return None


def _range_loops(root: ast.AST) -> list[_Loop]:
    """Every `for x in range(n)` loop and comprehension under `root`, in source order."""
    loops = []
    for node in ast.walk(root):
        if isinstance(node, (ast.For, ast.AsyncFor)):
            count = _range_count(node.iter)
            if count is not None:
                loops.append(_Loop(node.target, count, node.body))
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            body = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            for generator in node.generators:
                count = _range_count(generator.iter)
                if count is not None:
                    loops.append(_Loop(generator.target, count, body))
    return sorted(loops, key=lambda loop: (loop.count.lineno, loop.count.col_offset))


def _range_count(expr: ast.expr) -> ast.expr | None:
    """`n` in `range(n)`, else None."""
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "range":
        if len(expr.args) == 1 and not expr.keywords and not isinstance(expr.args[0], ast.Starred):
            return expr.args[0]
    return None


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` for a chain of attribute accesses on a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _argument(call: ast.Call, index: int | None, keyword: str) -> ast.expr | None:
    """The argument a call passes for a parameter (positional slot `index` or `keyword`), or None."""
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    for position, arg in enumerate(call.args):
        if isinstance(arg, ast.Starred):
            return None  # positions after *args are unknown
        if position == index:
            return arg
    return None


def _plain(call: ast.Call) -> bool:
    """True when every argument of a call is visible: no *args or **kwargs."""
    return not any(isinstance(arg, ast.Starred) for arg in call.args) and all(kw.arg for kw in call.keywords)


def _int_literal(node: ast.expr | None) -> int | None:
    """The value of an integer literal, else None."""
    return node.value if isinstance(node, ast.Constant) and type(node.value) is int else None


def _number(node: ast.expr | None) -> int | float | None:
    """The value of an int or float literal (not a bool), else None."""
    return node.value if isinstance(node, ast.Constant) and type(node.value) in (int, float) else None


def _words(name: str) -> set[str]:
    """A snake_case or UPPER_CASE name's words, lowercased."""
    return set(name.lower().split("_"))


def _is_depth_name(name: str) -> bool:
    """True for names like depth, num_layers, n_blocks."""
    return bool(_words(name) & _DEPTH_WORDS)


def _is_size_name(name: str) -> bool:
    """True for names like width, hidden_dim, channels; false for input, output and class counts."""
    words = _words(name)
    return bool(words & _SIZE_WORDS) and not words & _NOT_SIZE_WORDS and not _is_depth_name(name)


# ---------------------------------------------------------------------------------------------
# Rule: width.


def _width_rule(model: _ModelFile) -> Iterator[_Candidate]:
    """Layer sizes and size settings x2 and x0.5, a layer's new size carried to its consumers."""
    # The model's output layer is never resized: it is the last sized layer of its class, so nothing
    # after it consumes its size (see _carry_size); a layer as wide as the class count is left alone
    # too, in case the code defines the classifier before the layers that feed it.
    classifiers = _class_count_layers(model)
    for index, layer in enumerate(model.layers):
        if layer.cls in _SIZED and id(layer.call) not in classifiers and _widenable(layer):
            later = [other for other in model.layers[index + 1 :] if other.scope is layer.scope]
            yield from _widen_layer(model, layer, later)
    for setting in model.settings:
        size = _int_literal(setting.value)
        if _is_size_name(setting.name) and size is not None and size > 0:
            for new in _scaled(size):
                edit = model.text.replace(setting.value, str(new))
                yield _Candidate("width", f"{setting.label} {size} -> {new}", (edit,))


def _widenable(layer: _Layer) -> bool:
    """True for a layer built once in an `__init__` with plain arguments and no channel groups."""
    in_init = isinstance(layer.scope, ast.FunctionDef) and layer.scope.name == "__init__"
    return in_init and not layer.repeated and _plain(layer.call) and not _has_groups(layer)


def _has_groups(layer: _Layer) -> bool:
    """True for a grouped convolution, whose sizes must stay multiples of its groups."""
    groups = layer.arg(6, "groups") if layer.cls in _CONVS else None
    return groups is not None and _int_literal(groups) != 1


def _class_count_layers(model: _ModelFile) -> set[int]:
    """The calls of sized layers whose literal output size equals the default class count."""
    class_counts = {
        _int_literal(setting.value) for setting in model.settings if _words(setting.name) & {"class", "classes"}
    }
    return {
        id(layer.call)
        for layer in model.layers
        if layer.cls in _SIZED and _int_literal(layer.arg(*_SIZED[layer.cls][1])) in class_counts - {None}
    }


def _scaled(size: int) -> list[int]:
    """Twice and half a size, leaving out no-ops."""
    return [new for new in dict.fromkeys((size * 2, max(1, size // 2))) if new != size]


def _widen_layer(model: _ModelFile, layer: _Layer, later: list[_Layer]) -> Iterator[_Candidate]:
    """Each new output size for one layer, with the edits that carry it to its consumers."""
    index, keyword = _SIZED[layer.cls][1]
    node = layer.arg(index, keyword)
    old = _int_literal(node)
    if old is None or old < 1:
        return
    for new in _scaled(old):
        carried = _carry_size(model, later, old, new)
        if carried is None:
            continue
        edits = (model.text.replace(node, str(new)), *(edit for edit, _ in carried))
        description = f"{layer.spot} {layer.cls} {keyword} {old} -> {new}"
        if carried:
            description += f" (with {', '.join(note for _, note in carried)})"
        yield _Candidate("width", description, edits)


def _carry_size(model: _ModelFile, later: list[_Layer], old: int, new: int) -> list[tuple[_Edit, str]] | None:
    """Edits resizing the norms after a layer and the next sized layer's input; None if that is unsafe."""
    carried = []
    for layer in later:
        if layer.repeated or not _plain(layer.call):
            return None  # built in a loop (so it also consumes its own output), or arguments unseen
        if layer.cls in _NORM_SIZE:
            resized = _resize_norm(model, layer, old, new)
            if resized is None:
                return None
            carried.append(resized)
        elif layer.cls in _SIZED:
            consumer = _resize_input(model, layer, old, new)
            return None if consumer is None else carried + consumer
        elif layer.cls not in _SHAPE_NEUTRAL:
            return None  # a module we cannot see into (a user's block, an LSTM...) may need the old size
    return None  # nothing in this class consumes the output: it leaves through code we cannot follow


def _resize_norm(model: _ModelFile, layer: _Layer, old: int, new: int) -> tuple[_Edit, str] | None:
    """The edit giving a normalisation layer the new size, or None when its size is not the literal old one."""
    index, keyword = _NORM_SIZE[layer.cls]
    node = layer.arg(index, keyword)
    if _int_literal(node) != old:
        return None
    if layer.cls == "GroupNorm":
        groups = _int_literal(layer.arg(0, "num_groups"))
        if not groups or new % groups:
            return None
    return model.text.replace(node, str(new)), f"{layer.spot} {layer.cls} {keyword} {old} -> {new}"


def _resize_input(model: _ModelFile, layer: _Layer, old: int, new: int) -> list[tuple[_Edit, str]] | None:
    """The edit giving the consuming layer its new input size ([] for a lazy layer), or None if unsafe."""
    spec = _SIZED[layer.cls][0]
    if spec is None:
        return []  # a lazy layer infers its input size
    if _has_groups(layer):
        return None
    node = layer.arg(*spec)
    if _int_literal(node) == old:
        edit = model.text.replace(node, str(new))
    else:
        # A flattened size written as a product, e.g. `32 * 4 * 4`: scale its one factor equal to the old size.
        factors = [factor for factor in _product_factors(node) if _int_literal(factor) == old] if node else []
        if not isinstance(node, ast.BinOp) or len(factors) != 1:
            return None
        edit = model.text.replace(factors[0], str(new))
    note = f"{layer.spot} {layer.cls} {spec[1]} {model.text.segment(node)} -> {model.text.preview(node, edit)}"
    return [(edit, note)]


def _product_factors(node: ast.expr) -> list[ast.expr]:
    """The factors of `a * b * c`; [node] for anything that is not a product."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return _product_factors(node.left) + _product_factors(node.right)
    return [node]


# ---------------------------------------------------------------------------------------------
# Rule: depth.


def _depth_rule(model: _ModelFile) -> Iterator[_Candidate]:
    """One block more or fewer: depth settings, and literal `range(n)` loops in `__init__` methods."""
    for setting in model.settings:
        count = _int_literal(setting.value)
        if not _is_depth_name(setting.name) or count is None or count < 1:
            continue
        loops = [loop for loop in _range_loops(model.tree) if _dotted(loop.count) == setting.name]
        if all(_repeats_safely(model, loop) for loop in loops):
            for new in _steps(count):
                edit = model.text.replace(setting.value, str(new))
                yield _Candidate("depth", f"{setting.label} {count} -> {new}", (edit,))
    for cls in (node for node in ast.walk(model.tree) if isinstance(node, ast.ClassDef)):
        init = _init_method(cls)
        for loop in _range_loops(init) if init else ():
            count = _int_literal(loop.count)
            if count is not None and count >= 1 and _repeats_safely(model, loop):
                for new in _steps(count):
                    description = f"line {loop.count.lineno} {cls.name}.__init__ range({count}) -> range({new})"
                    yield _Candidate("depth", description, (model.text.replace(loop.count, str(new)),))


def _steps(count: int) -> list[int]:
    """One more and one fewer, never below 1."""
    return [new for new in (count + 1, count - 1) if new >= 1]


def _repeats_safely(model: _ModelFile, loop: _Loop) -> bool:
    """True when every pass of a loop builds the same size-preserving modules, so the count can change."""
    index_names = {node.id for node in ast.walk(loop.target) if isinstance(node, ast.Name)}
    if index_names & _names_read(loop.body):
        return False  # passes differ (a list index, a size schedule): the count is tied to them
    for node in (node for part in loop.body for node in ast.walk(part)):
        layer = model.layer_at.get(id(node))
        if layer is not None and not _keeps_shape(layer):
            return False
    return True


def _names_read(nodes: list[ast.AST]) -> set[str]:
    """Names read in these nodes, ignoring f-strings: a loop index in a module's name is harmless."""
    names, stack = set(), list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.JoinedStr):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            names.add(node.id)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _keeps_shape(layer: _Layer) -> bool:
    """False for a layer visibly changing its input's size: pooling, a strided or unpadded convolution, a resize."""
    if layer.cls in _RESAMPLERS:
        return False
    if layer.cls in _CONVS | {"Linear"}:
        in_size, out_size = (_int_literal(layer.arg(*spec)) for spec in _SIZED[layer.cls])
        if in_size is not None and out_size is not None and in_size != out_size:
            return False
    if layer.cls in _CONVS:
        return _same_padding(layer) is not None and _is_one_or_absent(layer.arg(3, "stride"))
    return True


def _same_padding(layer: _Layer) -> tuple[int, ast.expr, bool] | None:
    """(kernel, kernel node, padding written "same") for a convolution whose padding keeps lengths, else None."""
    kernel_node = layer.arg(2, "kernel_size")
    kernel = _int_literal(kernel_node)
    padding = layer.arg(4, "padding")
    if kernel is None or kernel % 2 == 0 or not _is_one_or_absent(layer.arg(5, "dilation")):
        return None
    if isinstance(padding, ast.Constant) and padding.value == "same":
        return kernel, kernel_node, True
    if _int_literal(padding) == kernel // 2 or (kernel == 1 and padding is None):
        return kernel, kernel_node, False
    return None


def _is_one_or_absent(node: ast.expr | None) -> bool:
    """True when an argument is left out or is the literal 1 (stride, dilation)."""
    return node is None or _int_literal(node) == 1


# ---------------------------------------------------------------------------------------------
# Rule: activation.


class _ActivationUse(NamedTuple):
    """One place an activation is applied: `nn.ReLU()`, `F.relu(x)` or `torch.relu(x)`."""

    call: ast.Call
    family: str  # its torch.nn class, e.g. "ReLU"
    form: str  # "nn", "functional" or "torch"


def _activation_rule(model: _ModelFile) -> Iterator[_Candidate]:
    """Every use of one activation swapped for another, module and functional forms alike."""
    uses = _activation_uses(model)
    for family in dict.fromkeys(use.family for use in uses):
        mine = [use for use in uses if use.family == family]
        for target in _SWAP_TO:
            if target == family:
                continue
            swaps = [_swap_activation(model, use, target) for use in mine]
            if None in swaps:
                continue  # swap every use or none, so the model stays consistent
            places = f"{len(mine)} place{'s' if len(mine) > 1 else ''}"
            edits = tuple(edit for swap in swaps for edit in swap)
            yield _Candidate("activation", f"activation {family} -> {target} ({places})", edits)


def _activation_uses(model: _ModelFile) -> list[_ActivationUse]:
    """The swappable activation calls in the file, in source order."""
    by_function = {function: cls for cls, (function, _) in _ACTIVATIONS.items()}
    uses = []
    for node in ast.walk(model.tree):
        resolved = model.names.resolve(node.func) if isinstance(node, ast.Call) else None
        if resolved is None:
            continue
        form, name = resolved
        if form == "nn":
            family = name if name in _ACTIVATIONS else None
        elif form == "functional":
            family = by_function.get(name)
        else:
            family = "ReLU" if name == "relu" else None
        if family:
            uses.append(_ActivationUse(node, family, form))
    return sorted(uses, key=lambda use: (use.call.lineno, use.call.col_offset))


def _swap_activation(model: _ModelFile, use: _ActivationUse, target: str) -> list[_Edit] | None:
    """Edits turning one activation call into `target`, keeping `inplace=` where it takes one; None if unusual."""
    call, text = use.call, model.text
    if not _plain(call) or (use.form != "nn" and not call.args):
        return None  # unpacked arguments, or the input passed by keyword
    parameters = _ACTIVATIONS[use.family][1] if use.form != "torch" else ()
    first = 0 if use.form == "nn" else 1  # functions take the input first
    inplace = _argument(call, first + parameters.index("inplace"), "inplace") if "inplace" in parameters else None
    keep = f"inplace={text.segment(inplace)}" if inplace is not None and "inplace" in _ACTIVATIONS[target][1] else ""
    if use.form == "nn":
        spelling, imports = model.names.nn_class(target, call.func, text)
        return [text.replace(call, f"{spelling}({keep})"), *imports]
    if use.form == "functional":
        module = text.segment(call.func.value)
    elif model.names.functional:  # torch.relu has no torch.gelu sibling: use torch.nn.functional
        module = model.names.functional[0]
    else:
        module = f"{text.segment(call.func.value)}.nn.functional"
    tail = _Edit(text.end(call.args[0]), text.end(call), f", {keep})" if keep else ")")
    return [text.replace(call.func, f"{module}.{_ACTIVATIONS[target][0]}"), tail]


# ---------------------------------------------------------------------------------------------
# Rule: dropout.


def _dropout_rule(model: _ModelFile) -> Iterator[_Candidate]:
    """Each literal dropout rate, and each dropout setting, 0.1 up and 0.1 down."""
    for call, label, index in _dropout_calls(model):
        node = _argument(call, index, "p")
        rate = 0.5 if node is None else _number(node)
        if rate is None or not 0 <= rate <= 1:
            continue
        old = "default 0.5" if node is None else model.text.segment(node)
        for new in _rate_steps(rate):
            if node is None:
                edit = _add_keyword(model.text, call, f"p={new!r}")
            else:
                edit = model.text.replace(node, repr(new))
            yield _Candidate("dropout", f"{label} p {old} -> {new!r}", (edit,))
    for setting in model.settings:
        rate = _number(setting.value)
        if _words(setting.name) & _DROPOUT_WORDS and rate is not None and 0 <= rate <= 1:
            for new in _rate_steps(rate):
                edit = model.text.replace(setting.value, repr(new))
                description = f"{setting.label} {model.text.segment(setting.value)} -> {new!r}"
                yield _Candidate("dropout", description, (edit,))


def _dropout_calls(model: _ModelFile) -> Iterator[tuple[ast.Call, str, int]]:
    """(call, label for descriptions, position of `p`) for each dropout module or function call."""
    for layer in model.layers:
        if layer.cls in _DROPOUT_MODULES and _plain(layer.call):
            yield layer.call, f"{layer.spot} {layer.cls}", 0
    calls = sorted(
        (node for node in ast.walk(model.tree) if isinstance(node, ast.Call) and _plain(node)),
        key=lambda call: (call.lineno, call.col_offset),
    )
    for call in calls:
        resolved = model.names.resolve(call.func)
        if resolved is not None and resolved[0] == "functional" and resolved[1] in _DROPOUT_FUNCTIONS:
            yield call, f"line {call.lineno} {model.text.segment(call.func)}", 1


def _rate_steps(rate: float) -> list[float]:
    """The rate 0.1 up and 0.1 down, kept within [0, 0.9] and rounded to 2 decimals; no no-ops."""
    steps = []
    for new in (rate + 0.1, rate - 0.1):
        new = round(min(0.9, max(0.0, new)), 2)
        if new != rate and new not in steps:
            steps.append(new)
    return steps


def _add_keyword(text: _Source, call: ast.Call, keyword: str) -> _Edit:
    """An edit adding `name=value` as the last argument of a call."""
    arguments = [*call.args, *call.keywords]
    if not arguments:
        at = text.end(call) - 1  # just before the closing parenthesis
        return _Edit(at, at, keyword)
    at = max(text.end(argument) for argument in arguments)
    return _Edit(at, at, f", {keyword}")


# ---------------------------------------------------------------------------------------------
# Rule: norm.


def _norm_rule(model: _ModelFile) -> Iterator[_Candidate]:
    """BatchNorm <-> GroupNorm after convolutions; BatchNorm1d <-> LayerNorm after linear layers."""
    has_sequences = any(layer.cls in _SEQUENCE_LAYERS for layer in model.layers)
    for index, layer in enumerate(model.layers):
        feeders = [other for other in model.layers[:index] if other.scope is layer.scope and other.cls in _SIZED]
        feeder = feeders[-1].cls.removeprefix("Lazy") if feeders else None
        replacement = _other_norm(model, layer, feeder, has_sequences) if _plain(layer.call) else None
        if replacement is None:
            continue
        cls, arguments = replacement
        spelling, imports = model.names.nn_class(cls, layer.call.func, model.text)
        new = f"{spelling}({arguments})"
        description = f"{layer.spot} {model.text.segment(layer.call)} -> {new}"
        yield _Candidate("norm", description, (model.text.replace(layer.call, new), *imports))


def _other_norm(model: _ModelFile, layer: _Layer, feeder: str | None, has_sequences: bool) -> tuple[str, str] | None:
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
            count = _int_literal(channels)
            groups = next(g for g in (8, 4, 2, 1) if count % g == 0) if count else 1
            return "GroupNorm", f"{groups}, {segment(channels)}{extra}"
    elif layer.cls == "GroupNorm":
        channels = layer.arg(1, "num_channels")
        if channels is not None and feeder in _CONVS:
            return f"BatchNorm{feeder[-2:]}", f"{segment(channels)}{extra}"
    elif layer.cls == "LayerNorm":
        shape = layer.arg(0, "normalized_shape")
        if shape is not None and not isinstance(shape, (ast.Tuple, ast.List)) and flat_features:
            return "BatchNorm1d", f"{segment(shape)}{extra}"
    return None


# ---------------------------------------------------------------------------------------------
# Rule: kernel.


def _kernel_rule(model: _ModelFile) -> Iterator[_Candidate]:
    """Convolution kernels 3 <-> 5 <-> 7 where the padding keeps lengths, with the padding following."""
    for layer in model.layers:
        same = _same_padding(layer) if layer.cls in _CONVS and _plain(layer.call) else None
        if same is None:
            continue
        kernel, kernel_node, padding_is_same = same
        for new in (kernel + 2, kernel - 2):
            if new not in (3, 5, 7) or kernel not in (3, 5, 7):
                continue
            edits = [model.text.replace(kernel_node, str(new))]
            description = f"{layer.spot} {layer.cls} kernel_size {kernel} -> {new}"
            if not padding_is_same:
                edits.append(model.text.replace(layer.arg(4, "padding"), str(new // 2)))
                description += f", padding {kernel // 2} -> {new // 2}"
            yield _Candidate("kernel", description, tuple(edits))


_RULES: tuple[Callable[[_ModelFile], Iterator[_Candidate]], ...] = (
    _width_rule,
    _depth_rule,
    _activation_rule,
    _dropout_rule,
    _norm_rule,
    _kernel_rule,
)
