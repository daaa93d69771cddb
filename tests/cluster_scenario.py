"""Parallel campaigns on a simulated multi-node Ray cluster; prints one JSON line of what happened.

Runs in a process of its own (a process holds one Ray): python cluster_scenario.py TMP_DIR TRIAL_DIR, where
TRIAL_DIR is a folder the trials may write (their markers and timestamps).
Head node: 2 CPUs, no GPU (the driver, holding the repositories). Two worker nodes: 2 CPUs and one
declared GPU each (no CUDA here: train.py runs on the CPU, Ray still schedules by GPU).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import ray
from prefect import flow
from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import EXAMPLE_MODEL, git, make_repo  # noqa: E402

from autoraysearch.cluster import CampaignTaskRunner, on_repo_node, ray_init_arguments  # noqa: E402
from autoraysearch.errors import AutoraysearchError  # noqa: E402
from autoraysearch.campaign.experiment import Campaign  # noqa: E402
from autoraysearch.flows.loop import autoraysearch_loop  # noqa: E402
from autoraysearch.flows.setup_experiment import autoraysearch_setup  # noqa: E402
from autoraysearch.campaign.results_log import read_results_log  # noqa: E402
from autoraysearch.campaign.settings import load_settings  # noqa: E402
from autoraysearch.tasks.review import review  # noqa: E402

# A candidate waits until three candidates run at once (two minutes at most), so that packing shows
# however slowly the machine starts them; without packing only two would ever run together.
TIMED_TRAIN_PY = '''
import os, random, sys, time
def load_model():
    from model import Model
start = time.time()
if os.path.exists({marker!r}):
    open(os.path.join({started!r}, str(os.getpid())), "w").close()
    while len(os.listdir({started!r})) < 3 and time.time() < start + 120:
        time.sleep(0.1)
with open(os.path.join({times!r}, str(os.getpid())), "w") as f:
    f.write(f"{{start}} {{time.time()}}")
open({marker!r}, "a").close()
print(f"val_acc={{random.random():.4f}}")
'''

OOM_TRAIN_PY = '''
import os, sys
def load_model():
    from model import Model
if os.path.exists({marker!r}) and os.environ.get("AUTORAYSEARCH_GPU_MEMORY_FRACTION"):
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
    sys.exit(1)
open({marker!r}, "a").close()
print("val_acc=0.9" if os.path.exists({marker!r} + "2") else "val_acc=0.5")
open({marker!r} + "2", "a").close()
'''


def experiment(root: Path, train_py: str) -> Path:
    exp = make_repo(root, {"model.py": EXAMPLE_MODEL.read_text(), "train.py": train_py})
    return exp


@flow(task_runner=CampaignTaskRunner())
def where_review_runs(campaign: Campaign, node: str) -> str:
    with on_repo_node(node):
        return review.submit(campaign, "probe").result().node_id


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = best = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


def main(tmp: Path, trial_dir: Path) -> None:
    os.environ["AUTORAYSEARCH_TRIAL_WRITABLE"] = str(trial_dir)  # the test's own, not the session's shared folder
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    for _ in range(2):
        cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    _, kwargs = ray_init_arguments(cluster.address)
    ray.init(address=cluster.address, **{k: v for k, v in kwargs.items() if k != "include_dashboard"})
    driver = ray.get_runtime_context().get_node_id()
    gpu_nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]

    times, started = trial_dir / "times", trial_dir / "started"
    times.mkdir()
    started.mkdir()
    placed = experiment(tmp / "placed", TIMED_TRAIN_PY.format(
        marker=str(trial_dir / "placed.marker"), times=str(times), started=str(started)))
    autoraysearch_setup(experiment_dir=str(placed), train_py="train.py", gpus_per_trial=0.5, cpus_per_trial=0.5, seeds=1)
    for stamp in times.iterdir():
        stamp.unlink()  # the baseline ran alone; only the parallel iteration counts
    summary = autoraysearch_loop(experiment_dir=str(placed), max_iterations=1, parallel=4, tag="placed")
    rows = read_results_log(placed / "autoraysearch-results.tsv", True).rows[1:]
    full = {node[:8]: node for node in [driver, *gpu_nodes]}
    campaign = Campaign(str(placed), summary.branch, load_settings(placed), 60.0)
    intervals = [tuple(map(float, p.read_text().split())) for p in times.iterdir()]

    oom = experiment(tmp / "oom", OOM_TRAIN_PY.format(marker=str(trial_dir / "oom.marker")))
    autoraysearch_setup(experiment_dir=str(oom), train_py="train.py", gpus_per_trial=0.5, cpus_per_trial=0.5, seeds=1)
    autoraysearch_loop(experiment_dir=str(oom), max_iterations=1, parallel=2)
    oom_rows = read_results_log(oom / "autoraysearch-results.tsv", True).rows[1:]

    try:
        autoraysearch_loop(experiment_dir=str(oom), max_iterations=1, gpus_per_trial=2)
        too_big = "accepted"
    except AutoraysearchError as exc:
        too_big = str(exc)

    print(json.dumps({
        "driver_node": driver,
        "gpu_nodes": gpu_nodes,
        "review_node": where_review_runs(campaign, driver),
        "trial_nodes": [full.get(r.extra.get("node_id", ""), r.extra.get("node_id")) for r in rows],
        "max_concurrent": max_overlap(intervals),
        "oom_rows": [{"status": r.status, "description": r.description} for r in oom_rows],
        "too_big": too_big,
        "exp_branches": git(placed, "branch", "--list", "*-exp/*"),
    }))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
