"""A trial reaches no service and no secret: its own network, its own /dev/shm, no credentials in sight.

Each test runs model code the way a trial does (process.run_in_directory: the supervisor and its
sandbox) and has it try to get out for real.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest
from helpers import processes_with, wait_until

from autoraysearch.campaign.experiment import Trial
from autoraysearch.trials.process import TrialLimits, run_in_directory
from autoraysearch.trials.sandbox import is_secret, trial_environment
from tasks.verify import run_trial

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the supervisor is Linux-only")
PYTHON = [sys.executable, "train.py"]


def isolated(outcome) -> bool:
    return "private network" in outcome.sandbox


@pytest.fixture
def tcp_server():
    """A TCP server on 127.0.0.1 that answers every connection with `hello`, as a local service would."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            with connection:
                connection.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def abstract_socket_server():
    """A Unix socket server in the abstract namespace, as Ray and other services use."""
    name = f"\0autoraysearch-test-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(name)
    server.listen()
    yield name
    server.close()


@pytest.fixture
def path_socket_server(tmp_path_factory):
    """A Unix socket server bound to a file, as Ray's raylet and plasma store and docker.sock are."""
    path = str(tmp_path_factory.mktemp("service") / "service.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    yield path
    server.close()


CONNECT = textwrap.dedent("""
    import socket, sys
    for name, family, address in (("tcp", socket.AF_INET, ("127.0.0.1", PORT)), ("abstract", socket.AF_UNIX, ABSTRACT),
                                  ("socket-file", socket.AF_UNIX, PATH)):
        probe = socket.socket(family, socket.SOCK_STREAM)
        probe.settimeout(5)
        try:
            probe.connect(address)
            print("CONNECTED", name, flush=True)
        except OSError as exc:
            print("BLOCKED", name, type(exc).__name__, flush=True)
        finally:
            probe.close()
""")


def test_model_code_reaches_no_local_service(tmp_path, tcp_server, abstract_socket_server, path_socket_server):
    script = (CONNECT.replace("PORT", str(tcp_server)).replace("ABSTRACT", repr(abstract_socket_server))
              .replace("PATH", repr(path_socket_server)))
    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=60, scratch_root=tmp_path)
    if not isolated(outcome):
        pytest.skip(f"this host gives trials no network of their own: {outcome.sandbox}")
    assert outcome.returncode == 0, outcome.output
    assert "CONNECTED" not in outcome.output
    for name in ("tcp", "abstract", "socket-file"):
        assert f"BLOCKED {name}" in outcome.output, outcome.output
    assert "stayed reachable" not in outcome.sandbox
    # The same script outside the sandbox does connect: the servers were there to be reached.
    outside = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert outside.stdout.count("CONNECTED") == 3, outside.stdout


def test_ranks_of_one_trial_still_meet_on_their_own_loopback(tmp_path):
    script = textwrap.dedent("""
        import socket
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname(), timeout=5)
        connection, _ = server.accept()
        client.sendall(b"rank")
        print("LOOPBACK", connection.recv(4).decode(), flush=True)
    """)
    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=60, scratch_root=tmp_path)
    assert outcome.returncode == 0, outcome.output
    assert "LOOPBACK rank" in outcome.output


def test_dev_shm_is_the_trials_own_and_goes_with_it(tmp_path):
    name = f"autoraysearch-test-{uuid.uuid4().hex}"
    write = f"open('/dev/shm/{name}', 'w').write('left for the next candidate')\nprint('WROTE', flush=True)\n"
    read = f"import os\nprint('SEEN' if os.path.exists('/dev/shm/{name}') else 'UNSEEN', flush=True)\n"
    first = run_in_directory({"train.py": write}, PYTHON, timeout=60, scratch_root=tmp_path)
    if "private /dev/shm" not in first.sandbox:
        pytest.skip(f"this host gives trials no /dev/shm of their own: {first.sandbox}")
    second = run_in_directory({"train.py": read}, PYTHON, timeout=60, scratch_root=tmp_path)
    assert "WROTE" in first.output and "UNSEEN" in second.output
    assert not Path("/dev/shm", name).exists()


CREDENTIALS = {
    "HF_TOKEN": "hf-secret", "WANDB_API_KEY": "wandb-secret", "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "AWS_ACCESS_KEY_ID": "aws-id", "GITHUB_TOKEN": "gh-secret", "DB_PASSWORD": "db-secret",
    "MY_COMPANY_THING": "company-secret",  # hidden only because AUTORAYSEARCH_SECRET_ENV names it
}
SERVICES = {"PREFECT_API_URL": "http://127.0.0.1:4200/api", "RAY_ADDRESS": "127.0.0.1:6379"}


def test_no_credential_or_service_address_reaches_model_code(tmp_path, monkeypatch):
    for name, value in {**CREDENTIALS, **SERVICES}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AUTORAYSEARCH_SECRET_ENV", "MY_COMPANY_*")
    script = "import os\nprint(sorted(os.environ.items()), flush=True)\nprint(open('/proc/self/environ').read())\n"
    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=60, scratch_root=tmp_path)
    assert outcome.returncode == 0, outcome.output
    for value in {**CREDENTIALS, **SERVICES}.values():
        assert value not in outcome.output


def test_what_counts_as_a_secret():
    for name in ("OPENAI_API_KEY", "HF_TOKEN", "hf_token", "AWS_SESSION_TOKEN", "AWS_REGION", "PGPASSWORD",
                 "SLACK_WEBHOOK_SECRET", "GOOGLE_APPLICATION_CREDENTIALS"):
        assert is_secret(name), name
    for name in ("PATH", "HOME", "CUDA_VISIBLE_DEVICES", "TOKENIZERS_PARALLELISM", "KEYBOARD"):
        assert not is_secret(name), name
    assert trial_environment({"PATH": "/bin", "PREFECT_API_URL": "x", "RAY_ADDRESS": "y", "HF_TOKEN": "z"}) == {
        "PATH": "/bin"
    }


def test_the_network_can_be_left_to_the_host_on_purpose(tmp_path, monkeypatch, tcp_server):
    monkeypatch.setenv("AUTORAYSEARCH_TRIAL_NETWORK", "host")
    script = (CONNECT.replace("PORT", str(tcp_server)).replace("ABSTRACT", repr("\0nothing-listens-here"))
              .replace("PATH", repr(str(tmp_path / "nothing-listens-here.sock"))))
    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=60, scratch_root=tmp_path)
    assert "CONNECTED tcp" in outcome.output
    assert "host network" in outcome.sandbox
    assert os.environ["AUTORAYSEARCH_TRIAL_NETWORK"] == "host"


@pytest.mark.parametrize("abi", [None, "0"], ids=["this-kernel", "no-landlock"])
def test_honest_code_reads_the_users_caches_and_writes_only_to_its_scratch(tmp_path, monkeypatch, abi):
    if abi is not None:
        monkeypatch.setenv("AUTORAYSEARCH_LANDLOCK_ABI", abi)
    home = tmp_path / "home"
    checkpoints = home / ".cache" / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "resnet.pth").write_bytes(b"pretrained weights")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("TORCH_HOME", raising=False)
    script = textwrap.dedent("""
        import os, pathlib, tempfile, torch.hub
        cached = pathlib.Path(torch.hub.get_dir()) / "checkpoints" / "resnet.pth"
        print("CACHED", cached.read_bytes().decode(), flush=True)
        (cached.parent / "new.pth").write_bytes(b"downloaded")  # a download next to it
        pathlib.Path(os.path.expanduser("~/.keras")).mkdir()
        with tempfile.NamedTemporaryFile() as scratch_file:
            scratch_file.write(b"x")
        print("WROTE", flush=True)
    """)
    (tmp_path / "scratch").mkdir()
    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=120, scratch_root=tmp_path / "scratch")
    assert outcome.returncode == 0, outcome.output
    assert "CACHED pretrained weights" in outcome.output and "WROTE" in outcome.output
    assert sorted(p.name for p in checkpoints.iterdir()) == ["resnet.pth"]  # nothing landed in the real home
    assert not (home / ".keras").exists()


# Kills every process it can name, the victim's host pid and its own ancestors first, then leaves a
# daemon in a session of its own, and exits.
SIGNALLER = textwrap.dedent("""
    import os, signal, subprocess, sys
    targets = [VICTIM, os.getppid()] + [int(p) for p in os.listdir("/proc") if p.isdigit()]
    for pid in targets:
        if pid in (0, os.getpid()):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            print("SIGNALLED", pid, flush=True)
        except OSError as exc:
            print("REFUSED", pid, type(exc).__name__, flush=True)
    subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)", "MARKER"],
                     start_new_session=True)
    print("DAEMON STARTED", flush=True)
""")


@pytest.mark.parametrize("abi", ["0", "5"], ids=["no-landlock", "landlock-without-signal-scoping"])
def test_without_signal_scoping_model_code_signals_nothing_outside_and_leaves_no_daemon(tmp_path, monkeypatch, abi):
    monkeypatch.setenv("AUTORAYSEARCH_LANDLOCK_ABI", abi)
    marker = f"autoraysearch-daemon-{uuid.uuid4().hex}"
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        script = SIGNALLER.replace("VICTIM", str(victim.pid)).replace("MARKER", marker)
        outcome = run_in_directory({"train.py": script}, PYTHON, timeout=60, scratch_root=tmp_path)
        if "private processes" not in outcome.sandbox:
            pytest.skip(f"this host gives trials no process namespace: {outcome.sandbox}")
        assert f"landlock ABI {abi}" in outcome.sandbox or abi == "0"
        assert outcome.returncode == 0, outcome.output
        assert "DAEMON STARTED" in outcome.output
        assert f"REFUSED {victim.pid} ProcessLookupError" in outcome.output
        assert victim.poll() is None  # the process outside the trial is alive
        assert not processes_with(marker)  # and the daemon died with the trial
    finally:
        victim.kill()
        victim.wait()
        for pid in processes_with(marker):
            os.kill(pid, 9)


# Tries every change to a file's metadata and size that Landlock leaves out (all of them on ABI 0,
# truncate too before ABI 3) on files of the experiment folder outside its scratch.
METADATA = textwrap.dedent("""
    import os
    attempts = {
        "chmod": lambda: os.chmod(RESULTS, 0),
        "chmod-folder": lambda: os.chmod(FOLDER, 0),
        "utime": lambda: os.utime(MODEL, (0, 0)),
        "setxattr": lambda: os.setxattr(MODEL, "user.autoraysearch", b"x"),
        "truncate": lambda: os.truncate(RESULTS, 0),
        "open-truncate": lambda: open(MODEL, "r+").truncate(0),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
            print("CHANGED", name, flush=True)
        except OSError as exc:
            print("REFUSED", name, exc.strerror, flush=True)
    os.chmod("train.py", 0o700)  # its own scratch stays its own
    print("SCRATCH OK", flush=True)
""")


@pytest.mark.parametrize("abi", ["0", "2"], ids=["no-landlock", "landlock-without-truncate"])
def test_metadata_of_the_experiment_folder_cannot_be_changed_from_model_code(tmp_path, monkeypatch, abi):
    monkeypatch.setenv("AUTORAYSEARCH_LANDLOCK_ABI", abi)
    exp = tmp_path / "exp"
    exp.mkdir()
    results, model = exp / "autoraysearch-results.tsv", exp / "model.py"
    results.write_text("iteration\tmetric\n0\t0.5\n")
    model.write_text("class Model: pass\n")
    def state(path):
        return path.stat().st_mode, path.stat().st_mtime_ns, None if path.is_dir() else path.read_bytes()

    before = {path: state(path) for path in (exp, results, model)}
    script = (METADATA.replace("RESULTS", repr(str(results))).replace("MODEL", repr(str(model)))
              .replace("FOLDER", repr(str(exp))))
    (tmp_path / "scratch").mkdir()
    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=60, scratch_root=tmp_path / "scratch")
    if "read-only outside scratch" not in outcome.sandbox:
        pytest.skip(f"this host gives trials no mounts of their own: {outcome.sandbox}")
    assert outcome.returncode == 0, outcome.output
    assert "CHANGED" not in outcome.output and outcome.output.count("REFUSED") == 6, outcome.output
    assert "SCRATCH OK" in outcome.output
    assert {path: state(path) for path in before} == before
    assert not os.listxattr(model)


# Forks up to 300 sleeping children, counting what the kernel refuses: bounded, so a broken limit costs little.
FORK_BOMB = textwrap.dedent("""
    import os, sys, time
    made = failed = 0
    for _ in range(300):
        try:
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", "MARKER"])
            made += 1
        except OSError:
            failed += 1
    print("MADE", made, "FAILED", failed, flush=True)
""")


@pytest.mark.parametrize("abi", [None, "5"], ids=["this-kernel", "landlock-without-signal-scoping"])
def test_a_fork_bomb_stops_at_the_trials_process_limit_and_leaves_nothing(tmp_path, monkeypatch, abi):
    if abi is not None:
        monkeypatch.setenv("AUTORAYSEARCH_LANDLOCK_ABI", abi)
    marker = f"autoraysearch-bomb-{uuid.uuid4().hex}"
    outcome = run_in_directory({"train.py": FORK_BOMB.replace("MARKER", marker)}, PYTHON, timeout=60,
                               scratch_root=tmp_path, limits=TrialLimits(processes=64))
    if "at most 64 processes" not in outcome.sandbox:
        pytest.skip(f"this host gives trials no cgroup of their own: {outcome.sandbox}")
    made, failed = (int(n) for n in outcome.output.split("MADE")[1].split()[::2][:2])
    assert made < 64 and failed > 236, outcome.output
    assert wait_until(lambda: not processes_with(marker), 5)


HOG = "x = bytearray(1024 * 2**20)\nx[::4096] = b'1' * len(x[::4096])\nprint('ALLOCATED', flush=True)\n"


def test_out_of_memory_is_judged_from_the_kernel_not_from_what_the_trial_prints(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORAYSEARCH_TRIAL_MEMORY", "0.25")
    hog = run_trial(Trial(label="hog", files={"train.py": HOG}, metric="val_acc", timeout=60))
    if "at most 256 MiB" not in hog.sandbox:
        pytest.skip(f"this host gives trials no cgroup of their own: {hog.sandbox}")
    assert "ALLOCATED" not in hog.output
    assert hog.status == "crash" and hog.error.startswith("ran out of memory: the kernel killed it"), hog.error
    # Saying so is not enough: a print, or an exit by SIGKILL of its own, is a plain crash.
    liar = "import os\nprint('CUDA out of memory; Killed', flush=True)\nos.kill(os.getpid(), 9)\n"
    lied = run_trial(Trial(label="liar", files={"train.py": liar}, metric="val_acc", timeout=60))
    assert lied.status == "crash" and not lied.error.startswith("ran out of memory"), lied.error


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_preflight_model_code_cannot_change_modes_or_times_outside_its_scratch(tmp_path, monkeypatch, warm):
    from autoraysearch.trials.preflight import preflight

    monkeypatch.setenv("AUTORAYSEARCH_LANDLOCK_ABI", "0")
    target = tmp_path / "model.py"
    target.write_text("original\n")
    before = (target.stat().st_mode, target.stat().st_mtime_ns)
    model = f"import os\nos.chmod({str(target)!r}, 0)\nos.utime({str(target)!r}, (0, 0))\nclass Model: pass\n"

    result = preflight(model, {}, None, None, timeout_s=60, warm=warm)

    assert not result.ok and "Read-only file system" in result.reason, result.reason
    assert (target.stat().st_mode, target.stat().st_mtime_ns) == before


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_preflight_model_code_gets_a_trials_memory_limit(monkeypatch, warm):
    from autoraysearch.trials import sandbox
    from autoraysearch.trials.preflight import preflight

    if "memory" not in sandbox._cgroup_folders():
        pytest.skip("this host gives us no cgroup with the memory controller")
    monkeypatch.setenv("AUTORAYSEARCH_TRIAL_MEMORY", "0.25")
    hog = f"{HOG}import torch\nclass Model(torch.nn.Module):\n    pass\n"

    result = preflight(hog, {}, None, None, timeout_s=60, warm=warm)

    assert not result.ok and result.stage == "crash", result
    # Within the limit, the same allocation passes: it was the limit that stopped it.
    monkeypatch.setenv("AUTORAYSEARCH_TRIAL_MEMORY", "4")
    assert preflight(hog, {}, None, None, timeout_s=60, warm=warm).ok


COMPILED = textwrap.dedent("""
    import os, torch
    from torch._dynamo.utils import counters
    double = torch.compile(lambda x: torch.sin(x) * 2 + 1)
    double(torch.randn(8))
    print("CACHE", dict(counters["inductor"]), os.environ["TORCHINDUCTOR_CACHE_DIR"], flush=True)
    mine = os.path.dirname(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    root = os.path.dirname(mine)
    for other in sorted(set(os.listdir(root)) - {os.path.basename(mine)}):
        try:
            open(os.path.join(root, other, "planted"), "w").close()
            print("PLANTED in", other, flush=True)
        except OSError as exc:
            print("REFUSED", type(exc).__name__, flush=True)
""")


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile on CPU needs a C compiler")
def test_torch_compile_reuses_its_kernels_within_a_campaign_and_writes_no_other_campaigns_cache(tmp_path, monkeypatch):
    root = tmp_path / "compile-caches"
    monkeypatch.setenv("AUTORAYSEARCH_COMPILE_CACHE", str(root))
    (root / "0ther0campaign").mkdir(parents=True)
    runs = [run_trial(Trial(label=str(n), files={"train.py": COMPILED}, metric="val_acc", timeout=240, cache_key=key))
            for n, key in enumerate(["abc123", "abc123", "def456"])]
    first, again, other = runs
    assert "fxgraph_cache_miss" in first.output and str(root / "abc123") in first.output, first.output
    assert "fxgraph_cache_hit" in again.output, again.output
    assert "fxgraph_cache_miss" in other.output, other.output  # another campaign starts from its own empty cache
    if "landlock" in first.sandbox:
        assert all("PLANTED" not in run.output and "REFUSED" in run.output for run in runs), [r.output for r in runs]
        assert not list(root.glob("*/planted"))


PREFECT_PROBE = textwrap.dedent("""
    import json, urllib.request
    request = urllib.request.Request(URL + "/block_documents/filter", data=json.dumps({"include_secrets": True}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            print("ANSWERED", answer.status, flush=True)
    except OSError as exc:
        print("UNREACHABLE", type(exc).__name__, flush=True)
""")


def test_model_code_cannot_ask_the_campaigns_prefect_api_for_its_secrets(tmp_path, prefect_api):
    from prefect.settings import PREFECT_API_URL

    script = PREFECT_PROBE.replace("URL", repr(PREFECT_API_URL.value().rstrip("/")))
    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=60, scratch_root=tmp_path)
    if not isolated(outcome):
        pytest.skip(f"this host gives trials no network of their own: {outcome.sandbox}")
    assert "UNREACHABLE" in outcome.output and "ANSWERED" not in outcome.output, outcome.output
    # The API is there: the same request from outside the sandbox is answered.
    outside = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "ANSWERED 200" in outside.stdout, outside.stdout + outside.stderr


def test_the_go_summary_says_plainly_what_containment_is_missing():
    from autoraysearch.setup.folder import containment_words

    full = "landlock ABI 7; private network, private /dev/shm, read-only outside scratch; no capabilities"
    assert "MISSING" not in containment_words(full)
    holes = containment_words("landlock ABI 7; private network (2 host Unix sockets stayed reachable); no capabilities")
    assert "MISSING some of the host's socket files could not be covered" in holes
    bare = containment_words("none: Landlock is not available on this kernel")
    assert "MISSING no Landlock" in bare and "MISSING no network namespace" in bare
