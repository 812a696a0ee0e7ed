"""pytest fixtures for chaos tests, built on the same code as `scoring chaos`.

Load it with `-p scoring.chaos.pytest_plugin`, or import its fixtures (and the summary hook) into a conftest.py.
It needs an `artifacts` fixture that returns a folder of trained models (this repository's tests/conftest.py has
one). Fixtures:

- `chaos_stack` (module): a local stack configured for chaos (`scoring.chaos.runner.chaos_stack_config`): free
  ports, supervised children, every gateway connection through the fault proxy;
- `chaos_target` (module): a `LocalTarget` on it; `chaos_source` (module): simulated transactions;
- `chaos_experiment`: an async function `fault -> Report` that runs one experiment with the module's timing
  (`CHAOS_TIMING`, or a module attribute `chaos_timing`) and keeps its report for the session's table;
- `chaos_reports`: every report of the session so far, in order.

At the end of the session the reports are printed as one table (`format_table`), and written as JSON to
`$CHAOS_REPORT_JSON` when it is set.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from scoring.chaos.experiment import Report, Timing, format_table, run_experiment, write_json
from scoring.chaos.faults import Fault, parse_fault

CHAOS_TIMING = Timing()
_REPORTS: list[Report] = []


@pytest_asyncio.fixture(scope="module")
async def chaos_stack(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    from scoring.chaos.runner import chaos_stack_config
    from scoring.launcher import Stack

    config = chaos_stack_config(artifacts, log_dir=tmp_path_factory.mktemp("chaos-logs"))
    async with Stack(config) as stack:
        yield stack


@pytest.fixture(scope="module")
def chaos_target(chaos_stack: Any) -> Any:
    from scoring.chaos.targets import LocalTarget

    return LocalTarget(chaos_stack)


@pytest.fixture(scope="module")
def chaos_source(artifacts: Path) -> Any:
    from scoring.bench.workload import EventSource
    from scoring.chaos.client import TransactionSource

    return TransactionSource(EventSource.from_artifacts(artifacts, warm_days=0))


@pytest.fixture
def chaos_reports() -> list[Report]:
    return _REPORTS


@pytest.fixture
def chaos_experiment(request: pytest.FixtureRequest, chaos_target: Any,
                     chaos_source: Any) -> Callable[[Fault | str], Awaitable[Report]]:
    timing = getattr(request.module, "chaos_timing", CHAOS_TIMING)

    async def run(fault: Fault | str) -> Report:
        report = await run_experiment(chaos_target, parse_fault(fault) if isinstance(fault, str) else fault,
                                      chaos_source, timing)
        _REPORTS.append(report)
        return report

    return run


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _REPORTS:
        return
    terminalreporter.section("chaos report")
    terminalreporter.write_line(format_table(_REPORTS))
    path = os.environ.get("CHAOS_REPORT_JSON")
    if path:
        write_json(_REPORTS, path)
        terminalreporter.write_line(f"wrote {path}")
