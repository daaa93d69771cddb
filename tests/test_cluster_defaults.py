"""Seed-faithful defaults: attach to the cluster running on this machine, 1 GPU per trial where there are GPUs,
the cluster and go summary setup prints, and a train.py of the user's own that calls ray.init refused."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoraysearch.cluster import (
    ClusterSummary, NodeSummary, cluster_stopped, describe_address, resolve_address, running_local_cluster,
)
from autoraysearch.local_cluster import listening_process, open_files, started_by_user
from autoraysearch.errors import AutoraysearchError
from autoraysearch.setup.folder import baseline_out_of_memory, calls_ray_init, go_summary
from autoraysearch.campaign.settings import CampaignSettings

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def test_cluster_lines_count_the_trials_that_fit_on_each_node():
    cluster = ClusterSummary((NodeSummary("gpu-a", 16, 4), NodeSummary("gpu-b", 16, 2), NodeSummary("cpu-c", 8, 0)))
    assert cluster.trials_at_once(1, 1) == 6
    assert cluster.trials_at_once(1, 0.5) == 12
    assert cluster.trials_at_once(2, 4) == 1  # DDP trials stay on one node
    assert cluster.trials_at_once(4, 0) == 10
    assert cluster.lines(1, 0.5) == [
        "cluster: 3 nodes, 40 CPUs, 6 GPUs (gpu-a: 16 CPUs, 4 GPUs; gpu-b: 16 CPUs, 2 GPUs; cpu-c: 8 CPUs, 0 GPUs)",
        "trials at once: 12 (1 CPU and 0.5 GPUs each)",
    ]


def test_go_summary_names_goal_model_cluster_gpus_baseline_scope_and_mode():
    settings = CampaignSettings(goal="higher accuracy", dataset="cifar10", gpus_per_trial=1)
    lines = go_summary(settings, ["cluster: 1 node, 8 CPUs, 1 GPUs (box: 8 CPUs, 1 GPUs)"], "val_acc=0.61", "sequential")
    assert lines[0] == "goal: higher accuracy (the offline mutate ideator ignores the goal; an LLM ideator reads it)"
    assert lines[1] == "model: model.py, trained by train.py on cifar10"
    assert "GPUs per trial: 1, CPUs per trial: 1" in lines
    assert "baseline: val_acc=0.61" in lines
    assert "scope: only model.py changes; train.py and everything else stay as they are" in lines
    assert lines[-1] == "ideator: mutate; mode: sequential"
    llm = go_summary(CampaignSettings(goal="fewer parameters", ideator="openai", llm_model="m"), [], "x", "parallel 4")
    assert llm[0] == "goal: fewer parameters"


@pytest.mark.parametrize(
    "source, calls",
    [
        ("import ray\nray.init()\nfrom model import Model\n", True),
        ("import ray as r\nr.init(address='auto')\n", True),
        ("from ray import init\ninit()\n", True),
        ("import ray\n@ray.remote\ndef f():\n    pass\n", False),
        ("import torch\ntorch.distributed.init_process_group('gloo')\n", False),
    ],
)
def test_ray_init_is_detected(source, calls):
    assert calls_ray_init(ast.parse(source)) is calls


def test_setup_refuses_a_train_py_that_calls_ray_init(tmp_path):
    from autoraysearch.setup.folder import user_train_source

    (tmp_path / "train.py").write_text("import ray\nfrom model import Model\nray.init()\nprint('val_acc=1.0')\n")
    with pytest.raises(AutoraysearchError, match="calls ray.init") as caught:
        user_train_source(tmp_path, Path("train.py"), "model.py")
    assert "\n" not in str(caught.value)


def test_a_baseline_out_of_gpu_memory_is_refused_naming_the_batch_size(tmp_path):
    error = baseline_out_of_memory(CampaignSettings(gpus_per_trial=0.5), 512, tmp_path / "baseline.log")
    assert "ran out of GPU memory even on a whole GPU: lower --batch-size (now 512)" in str(error)


@pytest.fixture
def own_ray_tmpdir(monkeypatch):
    """A Ray temp folder of this test's own (short: Ray's socket paths must stay short), so the cluster it
    starts is found by this test only and never by anybody else's command on the machine."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", folder)
    for name in ("AUTORAYSEARCH_RAY_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_no_address_attaches_to_the_cluster_running_here_and_defaults_to_one_gpu(own_ray_tmpdir):
    assert resolve_address(None) == "local"
    # `ray start --head` as a user runs it, with declared GPUs (Ray schedules by them); --block keeps it
    # in the foreground, so ending that process stops exactly this cluster.
    head = subprocess.Popen(
        [RAY, "start", "--head", "--port=0", "--num-cpus=1", "--num-gpus=2", "--include-dashboard=false",
         "--disable-usage-stats", "--block"],
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while running_local_cluster() is None:
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(1)
        address = running_local_cluster()
        assert resolve_address(None) == address
        assert describe_address(None).startswith(f"Ray: attaching to the cluster `ray start` left running on this machine at {address}")
        assert resolve_address("local") == "local"
        # A driver attaches through the CLI's own connection code (token auth included) and sees its GPUs.
        code = (
            "import json; from autoraysearch.cluster import ray_session, cluster_summary, default_gpus_per_trial\n"
            "with ray_session(None):\n"
            "    c = cluster_summary()\n"
            "    print(json.dumps([c.gpus, default_gpus_per_trial(None), default_gpus_per_trial(0.5), c.lines(1, 1)]))\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        gpus, default, explicit, lines = json.loads(done.stdout.strip().splitlines()[-1])
        assert (gpus, default, explicit) == (2, 1.0, 0.5)
        assert lines[1] == "trials at once: 1 (1 CPU and 1 GPU each)"
    finally:
        head.terminate()
        head.wait(timeout=120)
    assert running_local_cluster() is None


def test_only_a_cluster_from_ray_start_counts_as_the_users():
    assert started_by_user(1, ["/usr/lib/systemd/systemd", "--user"])  # adopted once `ray start` exited
    assert started_by_user(4242, ["/home/me/.venv/bin/python3", "/home/me/.venv/bin/ray", "start", "--head", "--block"])
    assert started_by_user(None, [])  # its parent is gone
    assert started_by_user(77, ["/usr/bin/tini", "--", "ray"])  # a container's subreaper
    assert not started_by_user(4242, ["/usr/bin/python3.11", "-m", "pytest", "tests"])  # a test suite's own cluster


def test_a_gcs_server_is_found_even_while_it_opens_and_closes_descriptors(tmp_path):
    # A fake /proc (the real one cannot be made to race on demand): the GCS server listens on port 6379
    # through socket inode 777; one of its descriptors cannot be read, as one closed mid-scan cannot.
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1\n"
    )
    gcs = tmp_path / "4321"
    (gcs / "fd").mkdir(parents=True)
    (gcs / "cmdline").write_bytes(b"/venv/lib/ray/core/src/ray/gcs/gcs_server\0--gcs_server_port=6379\0")
    (gcs / "fd" / "3").symlink_to("socket:[555]")
    (gcs / "fd" / "4").write_text("")  # readlink fails on it, as on a descriptor that just closed
    (gcs / "fd" / "5").symlink_to("socket:[777]")
    assert open_files(gcs) == {"socket:[555]", "socket:[777]"}
    assert listening_process(6379, tmp_path) == 4321
    assert listening_process(6380, tmp_path) is None


def test_a_cluster_that_stopped_answering_is_told_from_one_that_runs():
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    address = f"127.0.0.1:{server.getsockname()[1]}"
    assert not cluster_stopped(address) and not cluster_stopped("local")
    server.close()
    assert cluster_stopped(address)


@pytest.mark.slow
def test_another_programs_own_cluster_is_named_and_left_alone(own_ray_tmpdir):
    from ray.cluster_utils import Cluster

    # What a test suite's simulated cluster leaves on the machine: a head node that records its address.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        assert running_local_cluster() is None and resolve_address(None) == "local"
        line = describe_address(None)
        assert line.startswith("Ray: a private local cluster for this command (the cluster at ")
        assert f"belongs to another program, pid {os.getpid()}: " in line and line.endswith("and is left alone)")
    finally:
        cluster.shutdown()


@pytest.mark.slow
def test_a_private_cluster_starts_without_rays_token_warning(own_ray_tmpdir):
    code = ("from autoraysearch.cluster import ray_session, cluster_summary\n"
            "with ray_session('local'):\n    print(cluster_summary().nodes[0].cpus > 0)\n")
    env = {name: value for name, value in os.environ.items() if name != "RAY_AUTH_MODE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith("True"), done.stderr
    assert "Token authentication" not in done.stderr + done.stdout  # still on: Ray's default, asked for explicitly
