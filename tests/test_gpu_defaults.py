"""GPUs per trial when nobody says: 1 on a cluster with GPUs, 0 without, decided once Ray is up.

The cluster is a simulated multi-node one (ray.cluster_utils.Cluster) whose worker node declares two
GPUs: there is no CUDA here, but Ray schedules by the declared GPUs, which is what the default reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autoraysearch.setup.wizard import check_gpus

HERE = Path(__file__).resolve().parent

SCENARIO = '''
import json, sys
from pathlib import Path
import ray
from ray.cluster_utils import Cluster
sys.path.insert(0, {tests!r})
from helpers import EXAMPLE_MODEL, make_repo
from autoraysearch.cluster import cluster_summary, default_gpus_per_trial, ray_init_arguments
from autoraysearch.flows.setup_experiment import autoraysearch_setup
from autoraysearch.campaign.settings import load_settings
from autoraysearch.campaign.results_log import read_results_log

cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
gpu_node = cluster.add_node(num_cpus=1, num_gpus=2)
cluster.wait_for_nodes()
_, kwargs = ray_init_arguments(cluster.address)
ray.init(address=cluster.address, **{{k: v for k, v in kwargs.items() if k != "include_dashboard"}})
exp = make_repo(Path({root!r}), {{"model.py": EXAMPLE_MODEL.read_text(),
                                  "train.py": "from model import Model\\nprint('val_acc=0.5')\\n"}})
summary = autoraysearch_setup(experiment_dir=str(exp), train_py="train.py", seeds=1)  # GPUs per trial not given
[baseline] = read_results_log(exp / "autoraysearch-results.tsv", True).rows
print(json.dumps({{
    "gpus": cluster_summary().gpus, "default": default_gpus_per_trial(None), "given": default_gpus_per_trial(0.0),
    "recorded": load_settings(exp).gpus_per_trial, "summary": list(summary.summary),
    "baseline_node": baseline.extra.get("node_id"), "gpu_node": gpu_node.node_id,
}}))
ray.shutdown()
cluster.shutdown()
'''


def test_the_plan_question_leaves_gpus_to_the_cluster_by_default():
    assert check_gpus("auto") is None and check_gpus("") is None  # decided once Ray is up
    assert check_gpus("0") == 0.0 and check_gpus("1") == 1.0


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_setup_on_a_cluster_with_gpus_gives_each_trial_one(prefect_api, tmp_path: Path, trial_dir: Path):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    script = SCENARIO.format(tests=str(HERE), root=str(tmp_path / "exp"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=360)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (report["gpus"], report["default"], report["given"]) == (2, 1.0, 0.0)
    assert report["recorded"] == 1.0  # what setup wrote to autoraysearch.toml, for every later trial
    # Ray placed the one-GPU baseline where the GPUs are (the log keeps the node id's first characters)
    assert report["baseline_node"] and report["gpu_node"].startswith(report["baseline_node"])
    assert "GPUs per trial: 1, CPUs per trial: 1" in report["summary"]
    assert any(line.startswith("trials at once: 1 ") for line in report["summary"]), report["summary"]
