"""The benchmarks train the generated train.py in their own process; it must train there as a real run does."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmarks_in_process_training_scores_as_a_real_run_of_train_py(tmp_path, monkeypatch):
    # train.py's judge no longer imports torch: a benchmark that imported it as the judge could not train at all.
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.syspath_prepend(str(tmp_path))
    # train_once sets the seed, the split, the threads and the summary file for train.py to read, and puts
    # them back afterwards: a test session that trains here later starts train.py runs that must not inherit them.
    settings = {"AUTORAYSEARCH_SEED": "1", "AUTORAYSEARCH_EVAL_SPLIT": "validation", "AUTORAYSEARCH_NUM_THREADS": "1",
                "AUTORAYSEARCH_SUMMARY_PATH": str(tmp_path / "summary.json")}
    for name in settings:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUTORAYSEARCH_NUM_THREADS", "2")  # one of the user's own, kept
    monkeypatch.delitem(sys.modules, "model", raising=False)
    import training_cache

    (tmp_path / "train.py").write_text(training_cache.render_train(1))
    source = training_cache.EXAMPLE.read_text()
    argv, path = list(sys.argv), list(sys.path)
    run = training_cache.train_once(tmp_path, training_cache.PoolModel("example", "", "baseline", source), 1, "validation", 1)
    assert sys.argv == argv and sys.path == path
    assert len(run.curve) == 1 and 0.5 < run.metric <= 1.0
    assert {name: os.environ.get(name) for name in settings} == {**dict.fromkeys(settings), "AUTORAYSEARCH_NUM_THREADS": "2"}

    real = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **settings})
    assert real.returncode == 0, real.stderr
    value = float(re.findall(r"^val_acc=([0-9.]+)$", real.stdout, re.MULTILINE)[-1])
    # CPU kernels round with their buffers' alignment, so the two can end a few validation samples apart (each 1/359).
    assert abs(run.metric - value) < 0.02
