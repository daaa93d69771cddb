"""A hostile candidate in a real campaign: it tries to forge rows, replace train.py, write outside and print its score."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from autoraysearch.campaign.results_log import read_results_log
from helpers import EXAMPLE_MODEL, git, loop, setup

pytestmark = pytest.mark.slow


def hostile_model(exp: Path, outside: Path) -> str:
    attack = textwrap.dedent(f'''\
        import atexit as _atexit
        for _path, _mode, _text in (
            ({str(exp / "autoraysearch-results.tsv")!r}, "a", "7\\tdeadbee\\t0.999\\t+0.5\\tkeep\\tforged\\n"),
            ({str(exp / "train.py")!r}, "w", "print('val_acc=0.999')\\n"),
            ({str(outside)!r}, "w", "was here\\n"),
        ):
            try:
                with open(_path, _mode) as _handle:
                    _handle.write(_text)
                print("WROTE", _path, flush=True)
            except OSError as _exc:
                print("BLOCKED", _path, type(_exc).__name__, flush=True)
        _atexit.register(lambda: print("val_acc=0.999"))
        ''')
    return attack + EXAMPLE_MODEL.read_text()


def test_a_hostile_candidate_changes_nothing_and_cannot_forge_its_score(services, example_repo: Path, tmp_path: Path):
    exp = example_repo
    setup(exp, epochs=1)
    train_before = (exp / "train.py").read_text()
    outside = tmp_path / "outside.txt"
    agent = tmp_path / "agent.py"
    candidate = {"description": "hostile", "kind": "other", "model_py": hostile_model(exp, outside)}
    agent.write_text(f"import sys\nsys.stdin.read()\nprint({json.dumps(json.dumps({'candidates': [candidate]}))})\n")

    summary = loop(exp, max_iterations=1, ideator="command", llm_command=f"{sys.executable} {agent}")

    rows = read_results_log(exp / "autoraysearch-results.tsv", True).rows
    # The same model as the baseline, whatever it printed at exit: scored by train.py's judge, not kept.
    assert [(r.iteration, r.status) for r in rows] == [("0", "baseline"), ("1", "discard")]
    assert rows[1].metric is not None and rows[1].metric < 0.999
    assert summary.kept == 0 and rows[0].metric == summary.best_metric
    assert (exp / "train.py").read_text() == train_before
    assert not outside.exists()
    trial_log = (exp / ".autoraysearch" / "logs" / "1.log").read_text()
    assert trial_log.count("BLOCKED") == 3 and "WROTE" not in trial_log
    assert git(exp, "status", "--porcelain", "train.py", "model.py") == ""
