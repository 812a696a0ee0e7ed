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
        if word in line:
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


def test_scoring_up_then_sigterm_leaves_no_process_behind(artifacts: Path, tmp_path: Path) -> None:
    process = _scoring_up(artifacts)
    try:
        line = _wait_for_line(process, "ready", 120)
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
        _wait_for_line(process, "ready", 120)
        [triton] = [p for p in psutil.Process(process.pid).children(recursive=True) if p.name() == "tritonserver"]
        stubs = [p for p in triton.children(recursive=True) if "triton_python_backend_stub" in " ".join(p.cmdline())]
        assert stubs, "Triton runs its models in Python-backend stub processes"
        triton.kill()
        gone, alive = psutil.wait_procs(stubs, timeout=60)
        assert not alive, f"stubs of the killed Triton still running: {[p.pid for p in alive]}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
