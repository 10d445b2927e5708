"""A child process whose output is read on a thread and whose whole process tree can be stopped.

Plain Python (no MRML, no Qt), shared by the Slicer panel and the web front end, and tested
outside Slicer with a real tree of processes.

- stdout and stderr are merged and read line by line on a daemon thread into a queue, so the
  caller polls without blocking and without ``os.set_blocking`` (which pipes on Windows lack
  before Python 3.12).
- The child starts in its own process group (POSIX: a new session; Windows: a new process
  group), so ``kill_tree()`` reaches the grandchildren too: ``PythonSlicer`` is a launcher that
  starts the real interpreter as its child, and killing only the launcher would leave the work
  running.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque

IS_WINDOWS = sys.platform.startswith("win")


class ChildProcess:
    """``Popen`` with merged, thread-read output and a tree kill.

    ``new_lines()`` returns the lines that arrived since the last call (without newlines);
    ``tail`` keeps the last ``keep`` lines for error messages.
    """

    def __init__(self, cmd: list[str], env: dict | None = None, cwd=None, keep: int = 200):
        kwargs: dict = {}
        if IS_WINDOWS:
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # its own process group: killpg reaches the grandchildren
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     text=True, encoding="utf-8", errors="replace", bufsize=1, env=env, cwd=cwd, **kwargs)
        self.killed = False
        self.tail: deque[str] = deque(maxlen=keep)
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"output of pid {self.proc.pid}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:  # ends at EOF: when every process holding the pipe has exited
            line = line.rstrip("\r\n")
            self.tail.append(line)
            self._lines.put(line)
        self.proc.stdout.close()

    def new_lines(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self._lines.get_nowait())
            except queue.Empty:
                return out

    def poll(self) -> int | None:
        """The exit code once the child has exited and its output has been read, else None."""
        code = self.proc.poll()
        if code is None:
            return None
        self._reader.join(timeout=5)  # the last lines reach the queue before we say it is over
        return code

    def wait(self, timeout: float | None = None) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout=5)
        return code

    def kill_tree(self, grace_s: float = 5.0) -> None:
        """Stop the child and everything it started: a polite signal, then a forced kill after
        ``grace_s`` seconds. Safe to call more than once, and after the child has exited."""
        self.killed = True
        if IS_WINDOWS:
            # taskkill /T walks the tree by parent id; /F because console children ignore WM_CLOSE.
            if self.proc.poll() is None:
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.proc.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        else:
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and self._group_alive():
                time.sleep(0.05)
            self._signal_group(signal.SIGKILL)
        try:
            self.proc.wait(timeout=max(grace_s, 1.0))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)

    def _signal_group(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the group id is the child's pid (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass

    def _group_alive(self) -> bool:
        self.proc.poll()  # reap the leader if it exited, or the group would look alive forever
        try:
            os.killpg(self.proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def last_error(self, default: str = "the process failed") -> str:
        """The child's one-line error (``error: ...`` as the command line prints it), else its last line."""
        lines = [line.strip() for line in self.tail if line.strip()]
        for line in reversed(lines):
            if line.startswith(("error: ", "internal error: ")):
                return line.removeprefix("error: ")
        return lines[-1] if lines else default
