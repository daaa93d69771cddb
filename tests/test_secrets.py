"""Candidate code that hunts for the campaign's keys in every process's /proc/PID/environ finds none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autoraysearch.campaign.results_log import read_results_log
from helpers import EXAMPLE_MODEL, setup

pytestmark = pytest.mark.slow

KEY = "sk-test-" + "7f3a9c" * 4
# At import, in the pre-flight and in the trial: read every process's environment; a key found is reported.
HUNTER = textwrap.dedent(f'''\
    import os as _os
    _found = []
    for _pid in _os.listdir("/proc"):
        try:
            with open(f"/proc/{{_pid}}/environ", "rb") as _handle:
                _data = _handle.read()
        except OSError:
            continue
        if {KEY[:8]!r}.encode() in _data:
            _found.append(_pid + ":" + _data[_data.index({KEY[:8]!r}.encode()):][:40].decode(errors="replace"))
    if _found:
        raise RuntimeError("found keys " + " ".join(_found))
    ''')


def test_model_code_finds_no_key_in_any_process_environment(services, example_repo: Path, tmp_path: Path):
    from prefect.settings import PREFECT_API_URL

    exp = example_repo
    setup(exp, epochs=1)
    agent = tmp_path / "agent.py"
    candidate = {"description": "hunt for keys", "kind": "other", "model_py": HUNTER + EXAMPLE_MODEL.read_text()}
    agent.write_text(f"import sys\nsys.stdin.read()\nprint({json.dumps(json.dumps({'candidates': [candidate]}))})\n")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": KEY}
    run = subprocess.run(
        [sys.executable, "-m", "autoraysearch.cli", "run", str(exp), "--max-iterations", "1", "--ideator", "command",
         "--command", f"{sys.executable} {agent}", "--trial-timeout", "120"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    [row] = [r for r in read_results_log(exp / "autoraysearch-results.tsv", True).rows if r.iteration.startswith("1")]
    assert row.status in ("keep", "discard"), row  # it trained: neither the pre-flight nor the trial found a key
    assert "found keys" not in output and KEY not in output
    for path in exp.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert KEY not in path.read_text(errors="replace"), path
