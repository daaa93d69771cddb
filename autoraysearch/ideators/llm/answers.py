"""Read an LLM's answer into proposals for model.py and judge each one before anything runs (pure).

The answer format the prompt asks for:
    {"candidates": [{"description": "one sentence", "kind": "width", "model_py": "<whole file>"},
                    {"description": "...", "edits": [{"search": "...", "replace": "..."}]}]}
LLMs wrap JSON in fences and prose, or send a bare object for one candidate; all of that is accepted.
Anything that could change a file other than model.py is rejected, as is an edit that does not
match exactly once, a result that is not a model.py, too big, unchanged, or already tried.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Iterable

from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.model_source import check_model_source, fingerprint
from autoraysearch.campaign.results_log import clean_text

MODEL_FILE = "model.py"
MAX_BYTES = 200_000
MAX_GROWTH = 5  # times the current model.py
# A tiny model.py may legitimately grow more than 5x (one new block); below this the growth rule is off.
GROWTH_FLOOR_BYTES = 20_000
MAX_DESCRIPTION_CHARS = 200
# Keys an answer might use to say which file a proposal writes.
PATH_KEYS = ("path", "file", "filename", "file_name", "file_path", "filepath", "target")

_FENCE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder(strict=False)  # strict=False: raw newlines inside strings, a common LLM slip


class Rejected(Exception):
    """A proposal or a whole answer that cannot be used; the message is the reason, for the LLM and the log."""

    @property
    def reason(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Proposal:
    """One proposed change as the answer stated it: the whole new file, or search/replace edits."""

    description: str
    kind: str
    model_py: str | None
    edits: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Accepted:
    """A proposal that passed every static check: its new model.py and fingerprint."""

    description: str
    kind: str
    source: str
    fingerprint: str


@dataclass(frozen=True)
class AnswerReview:
    """What one answer yielded: accepted proposals and (description, reason) for each rejected one."""

    accepted: tuple[Accepted, ...]
    rejected: tuple[tuple[str, str], ...]
    proposals: int  # how many proposals the answer held (0 when it could not be read at all)


def review_answer(
    text: str, current_source: str, tried: Iterable[str], seen: dict[str, str] | None = None
) -> AnswerReview:
    """Parse an answer and check each proposal against model.py, the campaign's tried set and `seen`."""
    # seen: fingerprint -> what it was ("proposal 1 of this answer", "a change that failed pre-flight"...).
    seen = dict(seen or {})
    tried = frozenset(tried)
    try:
        items = parse_answer(text)
    except Rejected as exc:
        return AnswerReview((), (("answer", exc.reason),), 0)
    accepted: list[Accepted] = []
    rejected: list[tuple[str, str]] = []
    for number, item in enumerate(items, start=1):
        label = describe_item(item, number)
        try:
            proposal = read_proposal(item)
            source = apply_proposal(proposal, current_source)
            digest = check_result(source, current_source, tried, seen)
        except Rejected as exc:
            rejected.append((label, exc.reason))
            continue
        seen[digest] = f"proposal {number} of this answer"
        accepted.append(Accepted(proposal.description, proposal.kind, source, digest))
    return AnswerReview(tuple(accepted), tuple(rejected), len(items))


def parse_answer(text: str) -> list[dict]:
    """The proposals of an answer, tolerating fences, prose around the JSON and a bare object."""
    value = extract_json(text)
    if isinstance(value, dict) and "candidates" in value:
        items = value["candidates"]
        if not isinstance(items, list):
            raise Rejected('"candidates" must be a JSON list of objects')
    elif isinstance(value, dict):
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise Rejected('the answer must be a JSON object with a "candidates" list')
    if not items:
        raise Rejected("the answer proposes no candidates")
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise Rejected(f"candidate {number} is not a JSON object")
    return items


def extract_json(text: str) -> Any:
    """The first JSON object or list in the text that looks like an answer."""
    text = text.strip()
    if not text:
        raise Rejected("the answer is empty")
    first_error: str | None = None
    for chunk in _json_chunks(text):
        try:
            value, _end = _DECODER.raw_decode(chunk)
        except ValueError as exc:
            # Report the error of the first thing that meant to be JSON, not of the prose around it.
            if chunk and chunk[0] in "{[" and first_error is None:
                first_error = f"{exc.msg}: line {exc.lineno} column {exc.colno}"
            continue
        if _looks_like_answer(value):
            return value
    if first_error:
        raise Rejected(f"the answer is not valid JSON ({first_error}); answer with one JSON object as described")
    raise Rejected('the answer holds no JSON object; answer with one JSON object with a "candidates" list')


def _json_chunks(text: str) -> Iterable[str]:
    """Places a JSON answer may start: the whole text, each fenced block, then each '{' or '['."""
    yield text
    for match in _FENCE.finditer(text):
        yield match.group(1).strip()
    for index, char in enumerate(text):
        if char in "{[" and index > 0:
            yield text[index:]


def _looks_like_answer(value: Any) -> bool:
    if isinstance(value, dict):
        return bool({"candidates", "description", "model_py", "edits"} & value.keys())
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def describe_item(item: dict, number: int) -> str:
    """A short name for a proposal in logs and rejection lists: its description, else its number."""
    description = item.get("description")
    if isinstance(description, str) and clean_text(description):
        return clean_description(description)
    return f"candidate {number}"


def clean_description(text: str) -> str:
    """One line, no tabs, escape sequences or control characters, bounded length: it ends up in commit
    messages, the terminal and the results log."""
    text = clean_text(text)
    return text if len(text) <= MAX_DESCRIPTION_CHARS else text[: MAX_DESCRIPTION_CHARS - 3] + "..."


def read_proposal(item: dict) -> Proposal:
    """Check the shape of one proposal and that it writes model.py and nothing else."""
    check_scope(item)
    description = item.get("description")
    if not isinstance(description, str) or not clean_text(description):
        raise Rejected('each candidate needs a "description": one sentence saying what changes')
    kind = item.get("kind")
    kind = clean_kind(kind) if isinstance(kind, str) else ""
    model_py = item.get("model_py")
    edits = item.get("edits")
    if (model_py is None) == (edits is None):
        raise Rejected('give either "model_py" (the whole new file) or "edits" (search/replace pairs), not both or neither')
    if model_py is not None:
        if not isinstance(model_py, str) or not model_py.strip():
            raise Rejected('"model_py" must be the whole new model.py as one JSON string')
        return Proposal(clean_description(description), kind, model_py, ())
    return Proposal(clean_description(description), kind, None, read_edits(edits))


def clean_kind(text: str) -> str:
    """A short lower-case category such as 'width' or 'regularisation'."""
    words = re.sub(r"[^a-z0-9_ -]", "", text.lower()).split()
    return "-".join(words)[:30]


def check_scope(item: dict) -> None:
    """Reject a proposal that names or writes any file but model.py."""
    for key in PATH_KEYS:
        if key in item:
            _check_path(item[key])
    files = item.get("files")
    if files is not None:
        names = list(files) if isinstance(files, (dict, list)) else [files]
        for name in names:
            _check_path(name.get("path", name.get("file")) if isinstance(name, dict) else name)
    for key in item:
        # e.g. "train_py": the answer format's way of writing another file.
        if key.endswith("_py") and key != "model_py":
            raise Rejected(f"only model.py may change; this candidate also writes {key[:-3]}.py")
    for edit in item.get("edits") or []:
        if isinstance(edit, dict):
            for key in PATH_KEYS:
                if key in edit:
                    _check_path(edit[key])


def _check_path(name: Any) -> None:
    if not isinstance(name, str) or PurePosixPath(name.strip()) != PurePosixPath(MODEL_FILE):
        shown = name if isinstance(name, str) else json.dumps(name)[:60]
        raise Rejected(f"only model.py may change; this candidate names {shown!r}")


def read_edits(edits: Any) -> tuple[tuple[str, str], ...]:
    """Search/replace pairs from the answer, each search non-empty."""
    if not isinstance(edits, list) or not edits:
        raise Rejected('"edits" must be a non-empty list of {"search": ..., "replace": ...} objects')
    pairs = []
    for number, edit in enumerate(edits, start=1):
        if not isinstance(edit, dict) or not isinstance(edit.get("search"), str) or not isinstance(edit.get("replace"), str):
            raise Rejected(f'edit {number} must be an object with string "search" and "replace"')
        if not edit["search"]:
            raise Rejected(f'edit {number} has an empty "search"; copy the exact lines to replace from model.py')
        pairs.append((edit["search"], edit["replace"]))
    return tuple(pairs)


def apply_proposal(proposal: Proposal, current_source: str) -> str:
    """The new model.py: the whole file as given, or the current one with each edit applied once."""
    if proposal.model_py is not None:
        return proposal.model_py
    source = current_source
    for number, (search, replace) in enumerate(proposal.edits, start=1):
        # Counted in the current model.py, as the prompt promises, and again after the earlier edits
        # so that overlapping edits cannot silently apply somewhere unintended.
        count = current_source.count(search)
        if count == 0:
            raise Rejected(f'edit {number}\'s "search" text does not occur in model.py; copy it exactly, whitespace included')
        if count > 1:
            raise Rejected(f'edit {number}\'s "search" text occurs {count} times in model.py; include more lines so it matches once')
        if source.count(search) != 1:
            raise Rejected(f"edit {number} overlaps an earlier edit; combine them into one")
        source = source.replace(search, replace, 1)
    return source


def size_limit(current_source: str) -> int:
    """Most bytes a new model.py may have: 200 KB, and 5x the current file unless that is tiny."""
    return min(MAX_BYTES, max(MAX_GROWTH * len(current_source.encode()), GROWTH_FLOOR_BYTES))


def check_result(source: str, current_source: str, tried: frozenset[str], seen: dict[str, str]) -> str:
    """Reject a new model.py that is too big, broken, unchanged or already tried; return its fingerprint."""
    size = len(source.encode())
    limit = size_limit(current_source)
    if size > limit:
        raise Rejected(f"the new model.py is {size:,} bytes, more than the limit of {limit:,}; propose a smaller change")
    try:
        check_model_source(source, MODEL_FILE)
    except AutoraysearchError as exc:
        raise Rejected(str(exc)) from None
    digest = fingerprint(source)
    if digest == fingerprint(current_source):
        raise Rejected("this does not change model.py's code (only comments or formatting differ)")
    if digest in seen:
        raise Rejected(f"this is the same model.py as {seen[digest]}")
    if digest in tried:
        raise Rejected("this exact model.py was already tried in this campaign; propose a different change")
    return digest
