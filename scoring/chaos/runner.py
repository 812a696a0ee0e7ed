"""`scoring chaos`: a local stack (or a compose project), a list of faults, one experiment each, the report table.

`make test` runs the chaos tests (tests/chaos, short windows); `make chaos` runs this command as a longer soak.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scoring.chaos.experiment import Report, Timing, format_table, run_experiment, summary_ok, write_json
from scoring.chaos.faults import STANDARD_FAULTS, parse_fault
from scoring.chaos.targets import ChaosTarget, ComposeTarget, LocalTarget

# The gateway's budget for chaos runs. Chaos runs check behaviour (answers, reasons, healing), not the latency target
# of the benchmark, and on a shared 2-core machine running every service a restarting Triton (loading its models)
# or a neighbour's job can stall the others for a few hundred milliseconds: with the 10 ms default, or even 300 ms,
# such a stall exhausts budgets and turns degraded answers into errors that say nothing about the fault.
CHAOS_BUDGET_MS = 1000.0
# Every gateway connection goes through the fault proxy, so any stage can be slowed or cut, and clients can be cut
# from the gateway.
ALL_ROUTES = ("feature_service", "filter_model", "triton", "gateway")


def chaos_stack_config(artifacts: Path, *, budget_ms: float = CHAOS_BUDGET_MS, filter_threshold: float | None = 0.0,
                       log_dir: Path | None = None, env: dict[str, str] | None = None) -> Any:
    """The launcher's configuration for chaos runs: free ports, supervised children, every fault route. With the
    filter threshold at 0 every event goes through every stage, so a full answer is an ensemble answer."""
    from scoring.launcher import Ports, StackConfig

    settings = {"GATEWAY_BUDGET_MS": repr(float(budget_ms))}
    if filter_threshold is not None:
        settings["FILTER_THRESHOLD"] = repr(float(filter_threshold))
    settings.update(env or {})
    return StackConfig(artifacts=artifacts, ports=Ports.free(), env=settings, log_dir=log_dir, supervise=True,
                       fault_routes=ALL_ROUTES)


@dataclass
class ChaosConfig:
    artifacts: Path = Path("artifacts")
    faults: list[str] = field(default_factory=lambda: list(STANDARD_FAULTS))
    timing: Timing = field(default_factory=Timing)
    rounds: int = 1
    budget_ms: float = CHAOS_BUDGET_MS
    filter_threshold: float | None = 0.0
    target: str = "local"
    compose_project: str = "scoring-graph"  # deploy/compose/docker-compose.yml
    gateway: str = "127.0.0.1:50051"
    proxied_gateway: str | None = None
    proxy_control: str | None = None
    json_path: Path | None = None


async def run_suite(target: ChaosTarget, faults: list[str], artifacts: Path, timing: Timing, rounds: int = 1,
                    verbose: bool = True) -> list[Report]:
    from scoring.bench.workload import EventSource
    from scoring.chaos.client import TransactionSource

    source = TransactionSource(EventSource.from_artifacts(artifacts, warm_days=0))
    reports = []
    tag = f"chaos{os.getpid()}t{time.time_ns() % 10**10}"
    for round_ in range(rounds):
        for k, text in enumerate(faults):
            fault = parse_fault(text)
            if verbose:
                print(f"[{round_ + 1}/{rounds}] {fault.name} ...", flush=True)
            report = await run_experiment(target, fault, source, timing, tag=f"{tag}r{round_}f{k}")
            reports.append(report)
            if verbose:
                problems = summary_ok(report)
                print(f"  sent {report.sent:,} answered {report.answered:,} lost {report.lost} dup "
                      f"{report.duplicated} p99 during {report.p99_ms.get('during')} ms, down {report.down_s:.2f} s,"
                      f" recovered in {report.recover_s} s" + (f"  PROBLEMS: {'; '.join(problems)}" if problems
                                                               else ""), flush=True)
    return reports


async def _run(config: ChaosConfig) -> tuple[list[Report], dict[str, Any]]:
    info: dict[str, Any] = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                            "target": config.target, "budget_ms": config.budget_ms,
                            "filter_threshold": config.filter_threshold, "timing": config.timing.__dict__}
    if config.target == "compose":
        target: ChaosTarget = ComposeTarget(config.compose_project, config.gateway,
                                            proxy_control=config.proxy_control,
                                            proxied_gateway_address=config.proxied_gateway)
        return await run_suite(target, config.faults, config.artifacts, config.timing, config.rounds), info
    from scoring.launcher import Stack

    stack_config = chaos_stack_config(config.artifacts, budget_ms=config.budget_ms,
                                      filter_threshold=config.filter_threshold)
    print("starting the stack ...", flush=True)
    t = time.monotonic()
    async with Stack(stack_config) as stack:
        print(f"  ready in {time.monotonic() - t:.1f} s: gateway {stack.gateway_address}, fault proxy "
              f"{stack.fault_proxy_control}, logs {stack_config.logs}", flush=True)
        reports = await run_suite(LocalTarget(stack), config.faults, config.artifacts, config.timing, config.rounds)
        info["restarts"] = {name: child.restarts for name, child in stack.children.items()}
    return reports, info


def main(config: ChaosConfig) -> int:
    reports, info = asyncio.run(_run(config))
    print()
    print(f"chaos report ({config.target}, budget {config.budget_ms:g} ms, {config.timing.rate:g} events/s, fault "
          f"window {config.timing.fault_s:g} s, {config.timing.after_s:g} s after):")
    print(format_table(reports))
    if config.json_path is not None:
        write_json(reports, config.json_path, info)
        print(f"wrote {config.json_path}")
    failed = [r.name for r in reports if summary_ok(r)]
    if failed:
        print(f"promise not kept in: {', '.join(failed)}")
    return 1 if failed else 0
