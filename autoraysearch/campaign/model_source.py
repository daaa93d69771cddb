"""Static checks on a model.py's source: it parses, it defines `Model`, what `Model(...)` accepts."""

from __future__ import annotations

import ast
import hashlib
import threading

from autoraysearch.errors import AutoraysearchError


# CPython 3.11 builds an AST with a recursion counter that all threads share, so two threads parsing at
# once can fail with "AST constructor recursion depth mismatch" (python/cpython#106905): trials that run
# on threads of one process parse their files one at a time.
_PARSING = threading.Lock()


def parse_python(source: str, path: str = "<unknown>") -> ast.Module:
    """ast.parse, safe to call from several threads at once."""
    with _PARSING:
        return ast.parse(source, filename=path)


def parse_model_source(source: str, path: str = "model.py") -> ast.Module:
    """Parse model.py, turning a syntax error into a one-sentence user error."""
    try:
        return parse_python(source, path)
    except SyntaxError as exc:
        raise AutoraysearchError(
            f"{path} does not parse (line {exc.lineno}: {exc.msg}); fix the syntax and try again."
        ) from None


def find_model_class(tree: ast.Module) -> ast.ClassDef | None:
    """The class that `Model` names at module level: defined as `class Model` or aliased `Model = X`."""
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    if "Model" in classes:
        return classes["Model"]
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "Model" for t in targets):
            if isinstance(node.value, ast.Name) and node.value.id in classes:
                return classes[node.value.id]
    return None


def defines_model(tree: ast.Module) -> bool:
    """True when the module binds the name `Model` at top level (class, alias or import)."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Model":
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "Model" for t in targets):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((alias.asname or alias.name) == "Model" for alias in node.names):
                return True
    return False


def check_model_source(source: str, path: str = "model.py") -> ast.Module:
    """Raise a user error unless model.py parses and defines `Model`; return its tree."""
    tree = parse_model_source(source, path)
    if not defines_model(tree):
        raise AutoraysearchError(
            f"{path} has no `Model`: name your nn.Module subclass `Model` "
            "or add `Model = YourClass` at the end of the file."
        )
    return tree


def init_parameters(tree: ast.Module) -> list[str] | None:
    """Names `Model.__init__` accepts besides self, or None when they cannot be read statically."""
    cls = find_model_class(tree)
    if cls is None:
        return None
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            args = node.args
            if args.vararg or args.kwarg:
                return None
            names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
            return names[1:]
    # No __init__ of its own: nn.Module's takes nothing (a subclassed parent is unknown).
    return [] if all(_is_nn_module(b) for b in cls.bases) else None


def _is_nn_module(base: ast.expr) -> bool:
    return ast.unparse(base) in {"nn.Module", "torch.nn.Module", "Module"}


def fingerprint(source: str) -> str:
    """12 hex digits naming the model's code, blind to comments and formatting."""
    try:
        canonical = ast.dump(parse_python(source))
    except SyntaxError:
        canonical = source
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
