import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.lock import CampaignLock, read_holder


def test_second_holder_is_refused_with_who_holds_it(tmp_path: Path):
    path = tmp_path / ".autoraysearch" / "run.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path.parent.mkdir()
        path.write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "started": "2026-11-27T01:00:00"}))
        with pytest.raises(AutoraysearchError, match=f"another autoraysearch run \\(pid {sleeper.pid}"):
            CampaignLock(path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_lock_of_a_dead_process_is_cleared(tmp_path: Path):
    path = tmp_path / "run.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    with CampaignLock(path):
        assert read_holder(path).pid == os.getpid()
    assert not path.exists()


def test_half_written_lock_is_stale(tmp_path: Path):
    path = tmp_path / "run.lock"
    path.write_text('{"pid": 12')
    with CampaignLock(path):
        assert read_holder(path).pid == os.getpid()


def test_release_never_removes_someone_elses_lock(tmp_path: Path):
    path = tmp_path / "run.lock"
    path.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "started": "x"}))
    CampaignLock(path).release()
    assert path.exists()
