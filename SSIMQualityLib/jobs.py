"""Long work in another process, followed without blocking: scoring, corruption and training for a GUI.

A :class:`Job` starts a command (the Slicer CLI module's script, or
``python -m SSIMQualityLib.cli …``) with ``SSIMQUALITY_PROGRESS=filter``, so
that it reports progress in the lines of Slicer's Execution Model.  Its
output is read by background threads; :meth:`Job.poll` takes what arrived
and returns at once, so a GUI calls it from a timer and never freezes, and a
console or a test calls :meth:`Job.wait`.  :meth:`Job.cancel` stops the
process.  Nothing here knows Qt or Slicer.

Examples
--------
>>> import sys
>>> job = Job([sys.executable, "-c", "print('<filter-progress>0.5</filter-progress>'); print('hello')"]).start()
>>> job.wait(timeout=60).state, job.progress, job.output
('done', 0.5, ['hello'])
"""
from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .progress import PROGRESS_ENV

_TAG = re.compile(r"^<(filter-[a-z-]+)>(.*?)</\1>$")


def python_executable() -> str:
    """The Python that runs jobs: Slicer's ``PythonSlicer`` inside Slicer, else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def library_command(*args: str) -> List[str]:
    """``python -m SSIMQualityLib.cli ARGS``, run with :func:`job_environment` so the library is found."""
    return [python_executable(), "-m", "SSIMQualityLib.cli", *args]


def job_environment() -> dict:
    """This process's environment, with the folder holding SSIMQualityLib first on ``PYTHONPATH``."""
    env = dict(os.environ)
    lib_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([lib_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env[PROGRESS_ENV] = "filter"
    return env


class Job:
    """A command in another process: ``state`` ``"ready"`` → ``"running"`` → ``"done"`` / ``"failed"`` /
    ``"cancelled"``; ``progress`` (0–1) and ``text`` from its progress lines; ``output`` (its other
    stdout lines) and ``errors`` (its stderr lines); ``on_done(job)`` once it has ended, from the
    :meth:`poll` that sees the end.  ``cleanup()`` runs once however the job ends, after ``on_done``, and on
    :meth:`cancel` too (a job's temporary files, e.g. a copy of a patient's volume, must not outlive it).
    ``names`` maps the temporary files a job was given to what the user calls them (a Slicer node's name): its
    lines and progress text say those ("corrupting input.nrrd" means nothing in a panel)."""

    def __init__(self, args: Sequence[str], *, env: Optional[dict] = None, cwd: Optional[str] = None,
                 on_done: Optional[Callable[["Job"], None]] = None, cleanup: Optional[Callable[[], None]] = None,
                 names: Optional[Dict[str, str]] = None):
        self.args = [str(a) for a in args]
        # Whole paths first, then their file names (progress lines name the file only).
        self._names = sorted([*(names or {}).items(), *((os.path.basename(p), n) for p, n in (names or {}).items())],
                             key=lambda pair: -len(pair[0]))
        self.env = env if env is not None else job_environment()
        self.cwd = cwd
        self.on_done = on_done
        self._cleanup = cleanup
        self.state = "ready"
        self.progress = 0.0
        self.text = ""
        self.output: List[str] = []
        self.errors: List[str] = []
        self.returncode: Optional[int] = None
        self._process: Optional[subprocess.Popen] = None
        self._lines: "queue.Queue" = queue.Queue()
        self._readers: List[threading.Thread] = []

    def start(self) -> "Job":
        try:
            self._process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                             env=self.env, cwd=self.cwd, bufsize=1, encoding="utf-8",
                                             errors="replace")
        except OSError:  # no such program: the job never ran, and its temporary files go now
            self._clean()
            raise
        for stream, name in ((self._process.stdout, "out"), (self._process.stderr, "err")):
            t = threading.Thread(target=self._read, args=(stream, name), daemon=True)
            t.start()
            self._readers.append(t)
        self.state = "running"
        return self

    def _read(self, stream, name: str) -> None:
        for line in stream:
            self._lines.put((name, line.rstrip("\n")))
        stream.close()

    def poll(self) -> bool:
        """Take the lines that arrived; True while the job runs.  Never blocks."""
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                break
            self._take(name, line)
        if self.state != "running":
            return False
        if self._process.poll() is None or any(t.is_alive() for t in self._readers):
            return True
        while not self._lines.empty():
            self._take(*self._lines.get_nowait())
        self.returncode = self._process.returncode
        self.state = "done" if self.returncode == 0 else "failed"
        try:
            if self.on_done is not None:
                self.on_done(self)
        finally:
            self._clean()
        return False

    def _clean(self) -> None:
        cleanup, self._cleanup = self._cleanup, None
        if cleanup is not None:
            cleanup()

    def _named(self, line: str) -> str:
        for path, name in self._names:
            line = line.replace(path, name)
        return line

    def _take(self, name: str, line: str) -> None:
        line = self._named(line)
        if name == "err":
            if line.strip():
                self.errors.append(line)
            return
        m = _TAG.match(line.strip())
        if m is None:
            if line.strip():
                self.output.append(line)
        elif m.group(1) == "filter-progress":
            try:
                self.progress = float(m.group(2))
            except ValueError:
                pass
        elif m.group(1) in ("filter-progress-text", "filter-comment"):
            self.text = m.group(2)

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> "Job":
        """Poll until the job ends (for the console and tests); on timeout, cancel it."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if end is not None and time.monotonic() > end:
                self.cancel()
                break
            time.sleep(interval)
        return self

    def cancel(self) -> None:
        """Stop the process (terminate, then kill after 5 s); ``on_done`` is not called, ``cleanup`` is."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self.state == "running":
            self.state = "cancelled"
            self.returncode = self._process.returncode if self._process is not None else None
        self._clean()

    @property
    def warnings(self) -> List[str]:
        """The job's warning lines (our commands start them with ``warning:``), for a GUI to show."""
        return [e for e in self.errors if e.startswith("warning:")]

    @property
    def error_message(self) -> str:
        """The job's own last error line (our commands print one), or a generic line; empty for a job that
        succeeded."""
        if self.state == "done":
            return ""
        mine = [e for e in self.errors if "error:" in e]
        return (mine or self.errors or [f"the job ended with exit code {self.returncode}"])[-1]
