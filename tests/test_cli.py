"""The command line refuses unsafe or meaningless runs with one sentence and exit code 1, losing nothing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from autoraysearch.cli import main
from autoraysearch.campaign.results_log import ResultRow, ResultsLog, format_log
from autoraysearch.campaign.settings import CampaignSettings, dump_settings
from helpers import EXAMPLE_MODEL, git, make_repo


def ready_experiment(path: Path) -> Path:
    """A folder that looks set up: committed model.py, train.py and settings, and a baseline row."""
    make_repo(path, {
        "model.py": EXAMPLE_MODEL.read_text(),
        "train.py": "from model import Model\nprint('val_acc=0.5')\n",
        "autoraysearch.toml": dump_settings(CampaignSettings(generated=False)),
    })
    baseline = ResultRow("0", "baseline", 0.5, 0.0, "baseline", "initial state")
    (path / "autoraysearch-results.tsv").write_text(format_log(ResultsLog(True, (baseline,))))
    return path


def refusal(capsys, *argv: str) -> str:
    assert main(list(argv)) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line
    return err


def test_run_outside_a_git_repository(tmp_path: Path, capsys):
    (tmp_path / "model.py").write_text(EXAMPLE_MODEL.read_text())
    assert "is not in a git repository; run `git init` there" in refusal(capsys, "run", str(tmp_path))


def test_run_before_setup(tmp_path: Path, capsys):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE_MODEL.read_text()})
    assert "autoraysearch.toml does not exist: run `autoraysearch setup model.py`" in refusal(capsys, "run", str(exp))


@pytest.mark.parametrize("name", ["model.py", "train.py"])
def test_run_with_uncommitted_model_or_train_py(name, tmp_path: Path, capsys):
    exp = ready_experiment(tmp_path / "exp")
    (exp / name).write_text((exp / name).read_text() + "# my unsaved edit\n")
    message = refusal(capsys, "run", str(exp))
    assert f"{name} has uncommitted changes; commit or stash them" in message
    assert (exp / name).read_text().endswith("# my unsaved edit\n")  # nothing lost


def test_run_with_a_model_py_that_has_no_model(tmp_path: Path, capsys):
    exp = ready_experiment(tmp_path / "exp")
    (exp / "model.py").write_text("import torch\nclass Net(torch.nn.Module):\n    pass\n")
    git(exp, "commit", "-qam", "rename the class")
    assert "model.py has no `Model`: name your nn.Module subclass `Model`" in refusal(capsys, "run", str(exp))


def test_run_while_another_run_holds_the_campaign(tmp_path: Path, capsys):
    exp = ready_experiment(tmp_path / "exp")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (exp / ".autoraysearch").mkdir()
        (exp / ".autoraysearch" / "run.lock").write_text(
            json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "2026-11-27T22:00:00"}))
        message = refusal(capsys, "run", str(exp))
        assert f"another autoraysearch run (pid {holder.pid}" in message and "stop it first" in message
        assert "no run is active" not in capsys.readouterr().out
        assert main(["status", str(exp)]) == 0
        assert f"a run is active (pid {holder.pid}" in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is stale and no longer stands in the way.
    assert main(["status", str(exp)]) == 0
    assert "no run is active" in capsys.readouterr().out


def test_run_without_a_baseline(tmp_path: Path, capsys):
    exp = ready_experiment(tmp_path / "exp")
    (exp / "autoraysearch-results.tsv").unlink()
    assert "has no baseline; run `autoraysearch setup model.py` first" in refusal(capsys, "run", str(exp))


def test_bad_deadline_is_refused_before_anything_starts(tmp_path: Path, capsys):
    exp = ready_experiment(tmp_path / "exp")
    assert "is not a time of day; write it as HH:MM" in refusal(capsys, "run", str(exp), "--deadline", "7am")


def test_unreachable_ray_address_is_refused_at_once(tmp_path: Path, capsys):
    exp = ready_experiment(tmp_path / "exp")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message = refusal(capsys, "run", str(exp), "--ray-address", f"127.0.0.1:{port}")
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in message


def test_setup_of_a_model_without_model(tmp_path: Path, capsys):
    exp = make_repo(tmp_path / "exp", {"model.py": "class Net:\n    pass\n"})
    assert "model.py has no `Model`" in refusal(capsys, "setup", str(exp / "model.py"))


def test_setup_of_a_model_that_does_not_parse(tmp_path: Path, capsys):
    exp = make_repo(tmp_path / "exp", {"model.py": "class Model(:\n"})
    assert "model.py does not parse (line 1" in refusal(capsys, "setup", str(exp / "model.py"))


def test_status_shows_the_table_and_the_best(tmp_path: Path, capsys):
    exp = ready_experiment(tmp_path / "exp")
    assert main(["status", str(exp)]) == 0
    out = capsys.readouterr().out
    assert "initial state" in out and "best val_acc=0.5 from the baseline" in out
    assert "no campaign branch yet" in out and "no run is active" in out


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path: Path, capsys):
    (tmp_path / "keep.txt").write_text("mine\n")
    assert "already exists and is not empty" in refusal(capsys, "demo", str(tmp_path))
    assert (tmp_path / "keep.txt").read_text() == "mine\n"


def test_setup_with_uncommitted_model_py(tmp_path: Path, capsys):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE_MODEL.read_text()})
    (exp / "model.py").write_text(EXAMPLE_MODEL.read_text() + "# unsaved\n")
    assert "model.py has uncommitted changes; commit it first" in refusal(capsys, "setup", str(exp / "model.py"))


def test_setup_never_overwrites_a_train_py_git_could_not_give_back(tmp_path: Path, capsys):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE_MODEL.read_text()})
    (exp / "train.py").write_text("# my own training script, never committed\n")
    message = refusal(capsys, "setup", str(exp / "model.py"))
    assert "train.py exists and is not committed; pass --train-py train.py to use it" in message
    assert (exp / "train.py").read_text() == "# my own training script, never committed\n"


def test_setup_with_a_train_py_that_does_not_import_model(tmp_path: Path, capsys):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE_MODEL.read_text(), "train.py": "print('val_acc=1')\n"})
    message = refusal(capsys, "setup", str(exp / "model.py"), "--train-py", "train.py")
    assert "does not import Model from model.py; add `from model import Model`" in message


def test_setup_with_an_unknown_dataset(tmp_path: Path, capsys):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE_MODEL.read_text()})
    assert "dataset 'imagenet' is unknown" in refusal(capsys, "setup", str(exp / "model.py"), "--dataset", "imagenet")


def test_setup_of_an_image_dataset_without_its_folder_or_files(tmp_path: Path, capsys):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE_MODEL.read_text()})
    message = refusal(capsys, "setup", str(exp / "model.py"), "--dataset", "fashionmnist")
    assert "dataset fashionmnist needs --data-dir" in message
    (tmp_path / "empty").mkdir()
    message = refusal(capsys, "setup", str(exp / "model.py"), "--dataset", "fashionmnist", "--data-dir", str(tmp_path / "empty"))
    assert f"Fashion-MNIST files are not in {tmp_path / 'empty'}: put train-images-idx3-ubyte.gz" in message
    assert "--download" in message
    assert git(exp, "status", "--porcelain") == ""  # nothing written


def test_setup_with_model_kwargs_that_are_not_a_json_object(tmp_path: Path, capsys):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE_MODEL.read_text()})
    assert "--model-kwargs is not valid JSON" in refusal(capsys, "setup", str(exp / "model.py"), "--model-kwargs", "{width: 3")
    assert "must be a JSON object" in refusal(capsys, "setup", str(exp / "model.py"), "--model-kwargs", "[1, 2]")


def test_setup_with_gpus_that_are_not_whole_for_ddp(tmp_path: Path, capsys):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE_MODEL.read_text()})
    message = refusal(capsys, "setup", str(exp / "model.py"), "--gpus-per-trial", "1.5")
    assert "--gpus-per-trial 1.5 cannot be split into whole GPUs for DDP" in message


def test_setup_with_a_custom_data_module_that_is_not_committed(tmp_path: Path, capsys):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE_MODEL.read_text()})
    (exp / "data.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def load_data():\n    x = torch.zeros(4, 1, 8, 8)\n"
        "    return TensorDataset(x, torch.tensor([0, 1, 2, 3])), TensorDataset(x, torch.tensor([0, 1, 2, 3]))\n"
    )
    message = refusal(capsys, "setup", str(exp / "model.py"), "--dataset", "custom", "--data-module", "data.py")
    assert "data.py has uncommitted changes; commit it first" in message
