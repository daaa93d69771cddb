"""Reading a model.py: how it names torch, which modules it builds, which settings it has."""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from autoraysearch.campaign.model_source import find_model_class
from autoraysearch.ideators.mutate.source import SMALL_STEPS, Edit, Source, Steps
from autoraysearch.ideators.mutate.torch_nn import DEPTH_WORDS, LOOPS, NOT_MODULES, NOT_SIZE_WORDS, SIZE_WORDS


class TorchNames:
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
        prefix = dotted(func.value)
        nn_prefixes = self.nn + [f"{name}.nn" for name in self.torch]
        if prefix in nn_prefixes:
            return "nn", func.attr
        if prefix in self.functional + [f"{name}.functional" for name in nn_prefixes]:
            return "functional", func.attr
        if prefix in self.torch:
            return "torch", func.attr
        return None

    def nn_class(self, cls: str, like: ast.expr, text: Source) -> tuple[str, list[Edit]]:
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
            return cls, [Edit(0, 0, f"from torch.nn import {cls}\n")]
        at = text.end(self.last_import)
        return cls, [Edit(at, at, f"\nfrom torch.nn import {cls}")]


@dataclass(frozen=True)
class Layer:
    """A call building a module, e.g. `nn.Conv2d(1, 16, 3)` or a user's `Block(16)`, and where it sits."""

    call: ast.Call
    cls: str  # the torch.nn class, or "" for any other class (a module we cannot see into)
    scope: ast.AST  # the innermost function, lambda or class around the call
    repeated: bool  # inside a loop or comprehension: one call, several modules
    spot: str  # where it is, for descriptions: "features[0]", "Block.conv" or "line 12"

    def arg(self, index: int | None, keyword: str) -> ast.expr | None:
        """The argument passed for a parameter, or None when absent."""
        return argument_for(self.call, index, keyword)


class Setting(NamedTuple):
    """A number the model reads as a setting: a `Model.__init__` default or a module constant."""

    label: str  # "Model.__init__ default width", "constant HIDDEN"
    name: str
    value: ast.Constant


class Loop(NamedTuple):
    """A `for ... in range(count)` loop or comprehension."""

    target: ast.expr
    count: ast.expr
    body: list[ast.AST]


class ModelFile:
    """Everything the rules read: the text, the tree, torch's spellings, the module calls in order, the step size."""

    def __init__(self, source: str, tree: ast.Module, steps: Steps = SMALL_STEPS):
        self.text = Source(source)
        self.tree = tree
        self.steps = steps
        self.names = TorchNames(tree)
        model_class = find_model_class(tree)
        self.layers = _find_layers(tree, self.names, model_class)
        self.layer_at = {id(layer.call): layer for layer in self.layers}
        self.settings = _find_settings(tree, model_class)


def _find_layers(tree: ast.Module, names: TorchNames, model_class: ast.ClassDef | None) -> list[Layer]:
    """Every module-building call in the file, in source order."""
    spots = _attribute_paths(tree, model_class)
    layers = []

    def visit(node: ast.AST, scope: ast.AST, repeated: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner_scope, inner_repeated = scope, repeated
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                inner_scope, inner_repeated = child, False
            elif isinstance(child, LOOPS):
                inner_repeated = True
            if isinstance(child, ast.Call):
                cls = _module_class(child, names)
                if cls is not None:
                    spot = spots.get(id(child), f"line {child.lineno}")
                    layers.append(Layer(child, cls, scope, repeated, spot))
            visit(child, inner_scope, inner_repeated)

    visit(tree, tree, False)
    return sorted(layers, key=lambda layer: (layer.call.lineno, layer.call.col_offset))


def _module_class(call: ast.Call, names: TorchNames) -> str | None:
    """The torch.nn class a call builds, "" for another capitalised callee (a user's block), else None."""
    resolved = names.resolve(call.func)
    if resolved is not None:
        form, name = resolved
        return name if form == "nn" and name[:1].isupper() else None
    callee = (dotted(call.func) or "").rsplit(".", 1)[-1]
    return "" if callee[:1].isupper() and callee not in NOT_MODULES else None


def _attribute_paths(tree: ast.Module, model_class: ast.ClassDef | None) -> dict[int, str]:
    """Readable names for module calls stored on `self` in an `__init__`: "features[0]", "Block.conv1"."""
    paths: dict[int, str] = {}
    for cls in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
        init = init_method(cls)
        prefix = "" if cls is model_class else f"{cls.name}."
        for node in ast.walk(init) if init else ():
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            else:
                continue
            for target in targets:
                if isinstance(target, ast.Attribute) and dotted(target.value) == "self":
                    _name_contents(node.value, prefix + target.attr, paths)
    return paths


def _name_contents(expr: ast.expr | None, path: str, paths: dict[int, str]) -> None:
    """Name a module call and, inside nn.Sequential or nn.ModuleList, the calls it holds by index."""
    if not isinstance(expr, ast.Call):
        return
    paths.setdefault(id(expr), path)
    callee = dotted(expr.func) or ""
    items = expr.args
    if callee.endswith("ModuleList") and len(items) == 1 and isinstance(items[0], (ast.List, ast.Tuple)):
        items = items[0].elts
    elif not callee.endswith("Sequential"):
        return
    for index, item in enumerate(items):
        if isinstance(item, ast.Starred):
            return  # the indices after a *list depend on its length
        _name_contents(item, f"{path}[{index}]", paths)


def _find_settings(tree: ast.Module, model_class: ast.ClassDef | None) -> list[Setting]:
    """Numeric `Model.__init__` defaults and module-level constants (assigned once), in source order."""
    settings = []
    init = init_method(model_class) if model_class else None
    if init is not None:
        args = init.args
        positional = args.posonlyargs + args.args
        pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
        pairs += [(arg, default) for arg, default in zip(args.kwonlyargs, args.kw_defaults) if default is not None]
        for arg, default in pairs:
            if number_literal(default) is not None:
                settings.append(Setting(f"{model_class.name}.__init__ default {arg.arg}", arg.arg, default))
    assigned = Counter(
        target.id for node in tree.body for target in _assign_targets(node) if isinstance(target, ast.Name)
    )
    for node in tree.body:
        targets = _assign_targets(node) if isinstance(node, (ast.Assign, ast.AnnAssign)) else []
        if len(targets) == 1 and isinstance(targets[0], ast.Name) and assigned[targets[0].id] == 1:
            if number_literal(node.value) is not None:
                settings.append(Setting(f"constant {targets[0].id}", targets[0].id, node.value))
    return settings


def _assign_targets(node: ast.stmt) -> list[ast.expr]:
    """What a module-level statement assigns to (`x = `, `x: int = `, `x += `), if anything."""
    if isinstance(node, ast.Assign):
        return node.targets
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        return [node.target]
    return []


def init_method(cls: ast.ClassDef) -> ast.FunctionDef | None:
    """The class's own `__init__`, if it defines one."""
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            return node
    return None


def range_loops(root: ast.AST) -> list[Loop]:
    """Every `for x in range(n)` loop and comprehension under `root`, in source order."""
    loops = []
    for node in ast.walk(root):
        if isinstance(node, (ast.For, ast.AsyncFor)):
            count = _range_count(node.iter)
            if count is not None:
                loops.append(Loop(node.target, count, node.body))
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            body = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            for generator in node.generators:
                count = _range_count(generator.iter)
                if count is not None:
                    loops.append(Loop(generator.target, count, body))
    return sorted(loops, key=lambda loop: (loop.count.lineno, loop.count.col_offset))


def _range_count(expr: ast.expr) -> ast.expr | None:
    """`n` in `range(n)`, else None."""
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "range":
        if len(expr.args) == 1 and not expr.keywords and not isinstance(expr.args[0], ast.Starred):
            return expr.args[0]
    return None


def dotted(node: ast.expr) -> str | None:
    """`a.b.c` for a chain of attribute accesses on a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def argument_for(call: ast.Call, index: int | None, keyword: str) -> ast.expr | None:
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


def is_plain(call: ast.Call) -> bool:
    """True when every argument of a call is visible: no *args or **kwargs."""
    return not any(isinstance(arg, ast.Starred) for arg in call.args) and all(kw.arg for kw in call.keywords)


def int_literal(node: ast.expr | None) -> int | None:
    """The value of an integer literal, else None."""
    return node.value if isinstance(node, ast.Constant) and type(node.value) is int else None


def number_literal(node: ast.expr | None) -> int | float | None:
    """The value of an int or float literal (not a bool), else None."""
    return node.value if isinstance(node, ast.Constant) and type(node.value) in (int, float) else None


def name_words(name: str) -> set[str]:
    """A snake_case or UPPER_CASE name's words, lowercased."""
    return set(name.lower().split("_"))


def is_depth_name(name: str) -> bool:
    """True for names like depth, num_layers, n_blocks."""
    return bool(name_words(name) & DEPTH_WORDS)


def is_size_name(name: str) -> bool:
    """True for names like width, hidden_dim, channels; false for input, output and class counts."""
    words = name_words(name)
    return bool(words & SIZE_WORDS) and not words & NOT_SIZE_WORDS and not is_depth_name(name)



def same_padding(layer: Layer) -> tuple[int, ast.expr, bool] | None:
    """(kernel, kernel node, padding written "same") for a convolution whose padding keeps lengths, else None."""
    kernel_node = layer.arg(2, "kernel_size")
    kernel = int_literal(kernel_node)
    padding = layer.arg(4, "padding")
    if kernel is None or kernel % 2 == 0 or not is_one_or_absent(layer.arg(5, "dilation")):
        return None
    if isinstance(padding, ast.Constant) and padding.value == "same":
        return kernel, kernel_node, True
    if int_literal(padding) == kernel // 2 or (kernel == 1 and padding is None):
        return kernel, kernel_node, False
    return None


def is_one_or_absent(node: ast.expr | None) -> bool:
    """True when an argument is left out or is the literal 1 (stride, dilation)."""
    return node is None or int_literal(node) == 1
