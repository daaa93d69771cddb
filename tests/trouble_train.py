"""A train.py whose parallel candidates misbehave in every way at once (SLOTS_DIR and PIDS_DIR filled in)."""
import os
import signal
import subprocess
import sys
import time


def load_model():  # never called: behaviour comes from the slot each run takes
    from model import Model


SLOTS, PIDS = "SLOTS_DIR", "PIDS_DIR"


def claim_slot() -> int:
    for i in range(1000):
        try:
            os.close(os.open(os.path.join(SLOTS, str(i)), os.O_CREAT | os.O_EXCL))
            return i
        except FileExistsError:
            continue
    raise RuntimeError("no slot left")


def record(name, *pids):
    with open(os.path.join(PIDS, name), "w") as f:
        f.write(" ".join(map(str, pids)))


def ray_worker_pid() -> int:
    # train.py <- the trial's supervisor <- the Ray worker
    with open(f"/proc/{os.getppid()}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


slot = claim_slot()
if slot == 0:  # the baseline
    print("val_acc=0.5")
elif slot == 1:
    raise RuntimeError("boom")
elif slot == 2:  # hangs, with a grandchild
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    record("hang", os.getpid(), child.pid)
    time.sleep(600)
elif slot == 3:  # takes its Ray worker down with it
    record("killer", os.getpid())
    os.kill(ray_worker_pid(), signal.SIGKILL)
    time.sleep(600)
else:
    time.sleep(1)
    print("val_acc=0.9")
