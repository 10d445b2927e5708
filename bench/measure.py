"""One child process measured: wall time, its own peak resident memory, memory over time."""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path


def run_measured(cmd, env=None, sample: bool = False) -> dict:
    """Run ``cmd``. Returns wall time (s), the child's own peak RSS (bytes; os.wait4 gives the
    rusage of exactly that child, unlike RUSAGE_CHILDREN, which is a maximum over every child so
    far), its stdout, and with ``sample`` its resident memory once a second."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        samples, done = [], threading.Event()

        def sampler():
            while not done.wait(1.0):
                try:
                    text = Path(f"/proc/{proc.pid}/status").read_text()
                    samples.append((time.perf_counter() - t, int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) * 1024))
                except (OSError, AttributeError):
                    pass

        th = threading.Thread(target=sampler, daemon=True)
        if sample:
            th.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        done.set()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd[:5]))} … failed ({proc.returncode}): {stderr.strip().splitlines()[-1:]}")
    return {"wall_s": wall, "peak_bytes": usage.ru_maxrss * 1024, "samples": samples, "stdout": stdout}
