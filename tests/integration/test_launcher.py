"""`scoring up` as a user runs it: a real process tree, stopped with a real SIGTERM."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration


def _wait_for_line(process: subprocess.Popen[str], word: str, timeout_s: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        seen.append(line)
        if line.startswith(word):  # the launcher's own line, not a traceback that mentions wait_ready
            return line
    raise AssertionError(f"no line with {word!r} within {timeout_s} s; output so far:\n{''.join(seen)}")


def _scoring_up(artifacts: Path) -> subprocess.Popen[str]:
    """`scoring up` as a user runs it, in its own process, its output readable line by line."""
    return subprocess.Popen(
        [sys.executable, "-m", "scoring.cli", "up", "--free-ports", "--artifacts", str(artifacts)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _triton_with_stubs(process: subprocess.Popen[str], timeout_s: float) -> tuple[psutil.Process, list[psutil.Process]]:
    """The stack's tritonserver and its Python-backend stubs, waited for: the supervisor may be restarting a Triton
    that died after the stack said ready (one CI run found none at the first look)."""
    deadline = time.monotonic() + timeout_s
    tree: list[str] = []
    while time.monotonic() < deadline:
        tree = []
        for child in psutil.Process(process.pid).children(recursive=True):
            try:
                tree.append(f"{child.pid} {child.name()}: {' '.join(child.cmdline())[:120]}")
                if child.name() != "tritonserver":
                    continue
                stubs = [p for p in child.children(recursive=True)
                         if "triton_python_backend_stub" in " ".join(p.cmdline())]
            except psutil.NoSuchProcess:
                continue
            if stubs:
                return child, stubs
        time.sleep(0.2)
    listing = "\n".join(tree)
    raise AssertionError(f"no tritonserver with Python-backend stubs within {timeout_s} s; process tree:\n{listing}")


def test_scoring_up_then_sigterm_leaves_no_process_behind(artifacts: Path, tmp_path: Path) -> None:
    process = _scoring_up(artifacts)
    try:
        line = _wait_for_line(process, "ready ", 120)
        assert "gateway=127.0.0.1:" in line
        tree = psutil.Process(process.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in tree)
        for part in ("redis-server", "tritonserver", "services.gateway", "services.filter_model",
                     "services.feature_service"):
            assert part in names, f"{part} not started: {names}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        gone, alive = psutil.wait_procs(tree, timeout=10)
        assert not alive, f"left running: {[p.cmdline() for p in alive]}"
    finally:
        if process.poll() is None:
            process.kill()


def test_a_killed_triton_leaves_no_backend_stub_behind(artifacts: Path, tmp_path: Path) -> None:
    """A Triton killed with SIGKILL leaves none of its Python-backend stubs (each holds a model in memory) behind.

    The stubs notice a dead server within seconds on their own; the launcher also ends whatever is left in a
    dead child's process group before it starts the child again, and at stop."""
    process = _scoring_up(artifacts)
    try:
        _wait_for_line(process, "ready ", 120)
        triton, stubs = _triton_with_stubs(process, 60)
        triton.kill()
        gone, alive = psutil.wait_procs(stubs, timeout=60)
        assert not alive, f"stubs of the killed Triton still running: {[p.pid for p in alive]}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
