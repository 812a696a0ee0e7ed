"""The launcher's supervision on small real processes: a child that dies is restarted with a back-off that doubles,
counts as up only once its health check passes, and one stopped on purpose stays down until restarted."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from scoring.launcher import Child, Ports, Stack, StackConfig, StackError

pytestmark = pytest.mark.chaos

# A child that exits at once while <dir>/fail exists; otherwise becomes healthy (writes <dir>/ready-<pid>) after
# <delay> seconds, then lives on.
_PROGRAM = """
import os, sys, time
folder, delay = sys.argv[1], float(sys.argv[2])
if os.path.exists(os.path.join(folder, "fail")):
    sys.exit(3)
time.sleep(delay)
open(os.path.join(folder, f"ready-{os.getpid()}"), "w").close()
time.sleep(600)
"""


class _LittleStack(Stack):
    """A Stack whose children are small programs; healthy when their ready file exists."""

    def __init__(self, config: StackConfig, folder: Path) -> None:
        super().__init__(config)
        self.folder = folder

    async def _ready(self, child: Child) -> bool:
        return (self.folder / f"ready-{child.pid}").exists()

    def add(self, name: str, delay_s: float = 0.0) -> Child:
        child = Child(name, [sys.executable, "-c", _PROGRAM, str(self.folder), str(delay_s)], {}, self.folder / name)
        self.children[name] = child
        return child


@pytest_asyncio.fixture
async def little(tmp_path: Path) -> AsyncIterator[_LittleStack]:
    config = StackConfig(artifacts=tmp_path, ports=Ports.free(), log_dir=tmp_path, restart_backoff_s=0.05,
                         restart_backoff_max_s=0.4, backoff_reset_s=30.0, ready_timeout_s=20.0, stop_grace_s=2.0)
    stack = _LittleStack(config, tmp_path)
    yield stack
    await stack.aclose()


async def _start(stack: _LittleStack, child: Child) -> None:
    child.start()
    await stack.wait_ready(child, 20)


async def test_a_crashed_child_comes_back_and_counts_as_up_only_once_healthy(little) -> None:
    child = little.add("worker", delay_s=1.0)
    await _start(little, child)
    little.supervise()
    first_pid = child.pid
    little.send_signal("worker", signal.SIGKILL)
    deadline = time.monotonic() + 10
    while child.restarts == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    # Started again (back-off 0.05 s), but not healthy for another second: not up yet.
    assert child.alive() and child.pid != first_pid and not child.ready
    ready_at = await little.wait_up("worker", 20, restarted_from=0)
    assert child.ready and child.restarts == 1
    assert (little.folder / f"ready-{child.pid}").exists()
    what = [(e.what, e.child) for e in little.events]
    assert what == [("exited", "worker"), ("restarting", "worker"), ("up", "worker")]
    assert little.events[-1].at >= ready_at


async def test_the_back_off_doubles_while_a_child_keeps_dying_then_resets(little) -> None:
    child = little.add("flaky")
    await _start(little, child)
    little.supervise()
    (little.folder / "fail").touch()
    little.send_signal("flaky", signal.SIGKILL)
    deadline = time.monotonic() + 20
    while sum(e.what == "restarting" for e in little.events) < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    (little.folder / "fail").unlink()
    await little.wait_up("flaky", 20, restarted_from=0)
    delays = [e.delay_s for e in little.events if e.what == "restarting"]
    assert delays[:5] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.4])  # doubling, capped at restart_backoff_max_s
    assert any(e.what == "failed" for e in little.events)
    assert little.events[-1].what == "up"


async def test_a_child_killed_on_purpose_stays_down_until_restarted(little) -> None:
    child = little.add("held")
    await _start(little, child)
    little.supervise()
    await little.kill("held")
    await asyncio.sleep(0.5)
    assert not child.alive() and child.restarts == 0
    await little.restart("held")
    assert child.alive() and child.ready and not child.held
    little.send_signal("held", signal.SIGKILL)  # supervised again after the restart
    await little.wait_up("held", 20, restarted_from=0)
    assert child.restarts == 1


async def test_without_supervision_a_dead_child_stays_dead(little) -> None:
    child = little.add("alone")
    await _start(little, child)
    little.send_signal("alone", signal.SIGKILL)
    await asyncio.sleep(0.5)
    assert not child.alive() and child.restarts == 0
    with pytest.raises(StackError):
        await little.wait_up("alone", 0.2)


# A launcher in its own process: starts one Child that sleeps, prints the child's pid, then waits to be killed.
_LAUNCHER = """
import sys, time
from pathlib import Path
from scoring.launcher import Child
child = Child("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], {}, Path(sys.argv[1]))
child.start()
print(child.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_children_die_with_a_launcher_killed_by_sigkill(tmp_path: Path) -> None:
    import os
    import subprocess

    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(tmp_path / "sleeper.log")],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout is not None
        child_pid = int(launcher.stdout.readline())
        deadline = time.monotonic() + 10
        # The shim has exec'd the real command: the child's command line is the sleeper's, in its own group.
        while "time.sleep(600)" not in " ".join(psutil.Process(child_pid).cmdline()):
            assert time.monotonic() < deadline, "the child never exec'd its command"
            time.sleep(0.02)
        assert os.getpgid(child_pid) == child_pid
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
        while _alive(child_pid):
            assert time.monotonic() < deadline, "the child outlived its launcher"
            time.sleep(0.02)
    finally:
        launcher.kill()
        launcher.wait(10)
