"""A train.py whose parallel candidates misbehave in every way at once (SLOTS_DIR and PIDS_DIR filled in)."""
import os
import subprocess
import sys
import time


def load_model():  # never called: behaviour comes from the slot each run takes
    from model import Model  # noqa: F401  (setup checks that train.py imports Model)


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


slot = claim_slot()
if slot == 0:  # the baseline
    print("val_acc=0.5")
elif slot == 1:
    raise RuntimeError("boom")
elif slot == 2:  # hangs, with a grandchild
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    record("hang", os.getpid(), child.pid)
    time.sleep(600)
elif slot == 3:  # its Ray worker dies under it: the test kills it, since the sandbox lets no trial signal it
    record("lost-worker", os.getpid())
    time.sleep(600)
else:
    time.sleep(1)
    print("val_acc=0.9")
