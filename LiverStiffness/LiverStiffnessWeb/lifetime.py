"""How a session process ends: with its launcher, never after it."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable


def end_with_the_launcher(shutdown: Callable[[], None]) -> None:
    """Stopped (SIGTERM) or orphaned, the session calls ``shutdown`` (stop its run, remove its folder) first.

    The estimate runs in its own process group (so Cancel can stop its tree), which a signal to
    this process's group does not reach: it must be stopped from here. And if the launcher dies
    without ending the session (killed), nothing else would: a thread notices the parent is gone.
    """
    def stop(*_):
        try:
            shutdown()
        finally:
            os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    if sys.platform.startswith("win"):
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)  # handled on the main thread, as a real SIGTERM

    threading.Thread(target=watch, name="watch the launcher", daemon=True).start()
