"""Rules that resize the model: layer widths and the number of repeated blocks."""

from __future__ import annotations

import ast
from typing import Iterator

from autoraysearch.ideators.mutate.reading import (
    Layer, Loop, ModelFile, dotted, init_method, int_literal, is_depth_name, is_one_or_absent, is_plain,
    is_size_name, name_words, range_loops, same_padding,
)
from autoraysearch.ideators.mutate.source import Change, Edit
from autoraysearch.ideators.mutate.torch_nn import CONVS, NORM_SIZE, RESAMPLERS, SHAPE_NEUTRAL, SIZED


# ---------------------------------------------------------------------------------------------
# Rule: width.


def width_rule(model: ModelFile) -> Iterator[Change]:
    """Layer sizes and size settings times and divided by the step factor (2, or 4 when bold), a layer's new size carried to its consumers."""
    # The model's output layer is never resized: it is the last sized layer of its class, so nothing
    # after it consumes its size (see _carry_size); a layer as wide as the class count is left alone
    # too, in case the code defines the classifier before the layers that feed it.
    classifiers = _class_count_layers(model)
    for index, layer in enumerate(model.layers):
        if layer.cls in SIZED and id(layer.call) not in classifiers and _widenable(layer):
            later = [other for other in model.layers[index + 1 :] if other.scope is layer.scope]
            yield from _widen_layer(model, layer, later)
    for setting in model.settings:
        size = int_literal(setting.value)
        if is_size_name(setting.name) and size is not None and size > 0:
            for new in _scaled(size, model.steps.width_factor):
                edit = model.text.replace(setting.value, str(new))
                yield Change("width", f"{setting.label} {size} -> {new}", (edit,))


def _widenable(layer: Layer) -> bool:
    """True for a layer built once in an `__init__` with plain arguments and no channel groups."""
    in_init = isinstance(layer.scope, ast.FunctionDef) and layer.scope.name == "__init__"
    return in_init and not layer.repeated and is_plain(layer.call) and not _has_groups(layer)


def _has_groups(layer: Layer) -> bool:
    """True for a grouped convolution, whose sizes must stay multiples of its groups."""
    groups = layer.arg(6, "groups") if layer.cls in CONVS else None
    return groups is not None and int_literal(groups) != 1


def _class_count_layers(model: ModelFile) -> set[int]:
    """The calls of sized layers whose literal output size equals the default class count."""
    class_counts = {
        int_literal(setting.value) for setting in model.settings if name_words(setting.name) & {"class", "classes"}
    }
    return {
        id(layer.call)
        for layer in model.layers
        if layer.cls in SIZED and int_literal(layer.arg(*SIZED[layer.cls][1])) in class_counts - {None}
    }


def _scaled(size: int, factor: int) -> list[int]:
    """A size times and divided by `factor`, leaving out no-ops."""
    return [new for new in dict.fromkeys((size * factor, max(1, size // factor))) if new != size]


def _widen_layer(model: ModelFile, layer: Layer, later: list[Layer]) -> Iterator[Change]:
    """Each new output size for one layer, with the edits that carry it to its consumers."""
    index, keyword = SIZED[layer.cls][1]
    node = layer.arg(index, keyword)
    old = int_literal(node)
    if old is None or old < 1:
        return
    for new in _scaled(old, model.steps.width_factor):
        carried = _carry_size(model, later, old, new)
        if carried is None:
            continue
        edits = (model.text.replace(node, str(new)), *(edit for edit, _ in carried))
        description = f"{layer.spot} {layer.cls} {keyword} {old} -> {new}"
        if carried:
            description += f" (with {', '.join(note for _, note in carried)})"
        yield Change("width", description, edits)


def _carry_size(model: ModelFile, later: list[Layer], old: int, new: int) -> list[tuple[Edit, str]] | None:
    """Edits resizing the norms after a layer and the next sized layer's input; None if that is unsafe."""
    carried = []
    for layer in later:
        if layer.repeated or not is_plain(layer.call):
            return None  # built in a loop (so it also consumes its own output), or arguments unseen
        if layer.cls in NORM_SIZE:
            resized = _resize_norm(model, layer, old, new)
            if resized is None:
                return None
            carried.append(resized)
        elif layer.cls in SIZED:
            consumer = _resize_input(model, layer, old, new)
            return None if consumer is None else carried + consumer
        elif layer.cls not in SHAPE_NEUTRAL:
            return None  # a module we cannot see into (a user's block, an LSTM...) may need the old size
    return None  # nothing in this class consumes the output: it leaves through code we cannot follow


def _resize_norm(model: ModelFile, layer: Layer, old: int, new: int) -> tuple[Edit, str] | None:
    """The edit giving a normalisation layer the new size, or None when its size is not the literal old one."""
    index, keyword = NORM_SIZE[layer.cls]
    node = layer.arg(index, keyword)
    if int_literal(node) != old:
        return None
    if layer.cls == "GroupNorm":
        groups = int_literal(layer.arg(0, "num_groups"))
        if not groups or new % groups:
            return None
    return model.text.replace(node, str(new)), f"{layer.spot} {layer.cls} {keyword} {old} -> {new}"


def _resize_input(model: ModelFile, layer: Layer, old: int, new: int) -> list[tuple[Edit, str]] | None:
    """The edit giving the consuming layer its new input size ([] for a lazy layer), or None if unsafe."""
    spec = SIZED[layer.cls][0]
    if spec is None:
        return []  # a lazy layer infers its input size
    if _has_groups(layer):
        return None
    node = layer.arg(*spec)
    if int_literal(node) == old:
        edit = model.text.replace(node, str(new))
    else:
        # A flattened size written as a product, e.g. `32 * 4 * 4`: scale its one factor equal to the old size.
        factors = [factor for factor in _product_factors(node) if int_literal(factor) == old] if node else []
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


def depth_rule(model: ModelFile) -> Iterator[Change]:
    """One block more or fewer (two when bold): depth settings, and literal `range(n)` loops in `__init__` methods."""
    for setting in model.settings:
        count = int_literal(setting.value)
        if not is_depth_name(setting.name) or count is None or count < 1:
            continue
        loops = [loop for loop in range_loops(model.tree) if dotted(loop.count) == setting.name]
        if all(_repeats_safely(model, loop) for loop in loops):
            for new in _steps(count, model.steps.depth):
                edit = model.text.replace(setting.value, str(new))
                yield Change("depth", f"{setting.label} {count} -> {new}", (edit,))
    for cls in (node for node in ast.walk(model.tree) if isinstance(node, ast.ClassDef)):
        init = init_method(cls)
        for loop in range_loops(init) if init else ():
            count = int_literal(loop.count)
            if count is not None and count >= 1 and _repeats_safely(model, loop):
                for new in _steps(count, model.steps.depth):
                    description = f"line {loop.count.lineno} {cls.name}.__init__ range({count}) -> range({new})"
                    yield Change("depth", description, (model.text.replace(loop.count, str(new)),))


def _steps(count: int, step: int) -> list[int]:
    """`step` more and `step` fewer, never below 1."""
    return [new for new in (count + step, count - step) if new >= 1]


def _repeats_safely(model: ModelFile, loop: Loop) -> bool:
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


def _keeps_shape(layer: Layer) -> bool:
    """False for a layer visibly changing its input's size: pooling, a strided or unpadded convolution, a resize."""
    if layer.cls in RESAMPLERS:
        return False
    if layer.cls in CONVS | {"Linear"}:
        in_size, out_size = (int_literal(layer.arg(*spec)) for spec in SIZED[layer.cls])
        if in_size is not None and out_size is not None and in_size != out_size:
            return False
    if layer.cls in CONVS:
        return same_padding(layer) is not None and is_one_or_absent(layer.arg(3, "stride"))
    return True
