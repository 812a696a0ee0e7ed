"""What is written: the machine and the commit, the text tables, the Markdown report, the output files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from scoring.bench.workload import MODES
from scoring.replay import ANSWER_KINDS


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {"cores": os.cpu_count(), "usable_cores": usable, "cpu_model": model, "memory_gib": mem_gib,
            "python": sys.version.split()[0], "grpcio": grpc.__version__}


def git_info(cwd: Path | None = None) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "--short", "HEAD")
        changed = [line for line in git("status", "--porcelain").splitlines() if line.strip()]
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None, "changed_files": None}
    return {"commit": sha, "dirty": bool(changed), "changed_files": len(changed)}


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


TABLE_HEADER = ("step", "mode", "target/s", "sent/s", "answered/s", "p50", "p90", "p99", "p99.9", "max",
                "filter", "ensemble", "full", "fallbacks f/e/u/l", "degraded", "errors", "floor p99", "p99/floor",
                "pass")


def _fallbacks(answers: dict[str, int]) -> str:
    """filter only / filter on the event's fields / ensemble unfiltered / last resort."""
    return "/".join(f"{answers.get(k, 0):,}" for k in ANSWER_KINDS[1:5])


def table_rows(steps: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for s in steps:
        lat = s["latency_ms"]
        share = s["stage_share"]
        errors = s["error_count"]
        rows.append((
            s["name"], s["mode"] + (" (closed)" if s["closed_loop"] else ""), f"{s['target_rate']:,.0f}",
            f"{s['sent_per_s']:,.0f}", f"{s['answered_per_s']:,.0f}",
            *(_fmt(lat[k]) for k in ("p50", "p90", "p99", "p99.9", "max")),
            f"{share.get('filter', 0):.1%}", f"{share.get('ensemble', 0):.1%}",
            f"{s.get('answers', {}).get('full', 0):,}", _fallbacks(s.get("answers", {})),
            f"{sum(s['degraded'].values()):,}", f"{errors:,}",
            _fmt(s["floor"]["latency_ms"]["p99"]) if "floor" in s else "-",
            f"{s['p99_over_floor']:.2f}" if "p99_over_floor" in s else "-",
            "-" if s["passed"] is None else ("yes" if s["passed"] else "no"),
        ))
    return rows


def format_table(steps: Sequence[dict[str, Any]]) -> str:
    rows = [TABLE_HEADER, *table_rows(steps)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEADER))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                   strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("latency in ms from each event's scheduled send time; filter/ensemble: share of answered events; "
                 "full: every stage in time; fallbacks: filter only / filter on the event's fields / ensemble "
                 "without the filter / the gateway's last resort")
    return "\n".join(lines)


def format_ceilings(ceilings: dict[str, Any]) -> str:
    lines = []
    echo = ceilings.get("echo")
    if echo:
        single = echo["steps"][0]["latency_ms"]
        lines.append(f"gRPC echo (Python grpc.aio, child process): unary 1-in-flight p50 {_fmt(single['p50'])} ms "
                     f"p99 {_fmt(single['p99'])} ms; highest rate passing (p99 <= 10 ms, >= 95% answered) over "
                     f"{', '.join(f'{r:g}' for r in echo['rates'])}/s: "
                     + ", ".join(f"{m} {_fmt(echo.get(f'{m}_highest_passing_rate'), ',.0f')}" for m in MODES))
        for s in echo["steps"][1:]:
            lines.append(f"    {s['name']:<20} answered {s['answered_per_s']:>9,.0f}/s"
                         f"  p50 {_fmt(s['latency_ms']['p50'])}  p99 {_fmt(s['latency_ms']['p99'])} ms"
                         f"  errors {s['error_count']:,}")
    red = ceilings.get("redis")
    if red:
        p, q = red["ping"], red["pipeline"]
        lines.append(f"Redis PING (redis.asyncio): p50 {_fmt(p['p50_ms'], '.3f')} ms "
                     f"p99 {_fmt(p['p99_ms'], '.3f')} ms, "
                     f"{p['calls_per_s']:,.0f}/s one at a time; pipeline of {q['commands_per_round_trip']}: "
                     f"p50 {_fmt(q['p50_ms'])} ms p99 {_fmt(q['p99_ms'])} ms, {q['commands_per_s']:,.0f} commands/s")
    warm = ceilings.get("feature_fold")
    if warm:
        lines.append(f"Feature fold (UpdateAndGet, batches of {warm['batch']}, the warm-up): "
                     f"{warm['events_per_s']:,.0f} events/s")
    for tri in (ceilings.get("triton"), ceilings.get("triton_scheduled")):
        if not tri:
            continue
        parts = []
        for key, v in tri.items():
            if key.startswith("batch_"):
                rows, _, callers = key.removeprefix("batch_").partition("_x")
                shape = f"{rows} rows x{callers} callers" if callers else f"{rows} rows"
                extra = (f", {v['rows_per_s']:,.0f} rows/s" if "rows_per_s" in v
                         else f", {v['calls_per_s']:,.0f} calls/s")
                parts.append(f"{shape}: p50 {_fmt(v['p50_ms'])} p99 {_fmt(v['p99_ms'])} ms" + extra)
        lines.append(f"Triton {tri['model']} alone (tritonclient.grpc.aio): " + "; ".join(parts))
    return "\n".join(lines)


def format_cpu(steps: Sequence[dict[str, Any]]) -> str:
    names = ["bench", "gateway", "feature_service", "filter_model", "triton", "redis", "others", "machine"]
    rows = [("step", *names, "stack us/event", "floor us/event")]
    for s in steps:
        cpu = s.get("cpu_percent") or {}
        if cpu:
            # CPU time of the stack's processes (not the generator, not others) per answered event.
            stack = sum(cpu.get(n, 0.0) for n in names[1:6])
            per_event = stack / 100 * 1e6 / s["answered_per_s"] if s["answered_per_s"] else None
            floor = (s.get("floor") or {}).get("cpu_us_per_event")
            rows.append((s["name"], *(_fmt(cpu.get(n), ".0f") for n in names), _fmt(per_event, ",.0f"),
                         _fmt(floor, ",.0f")))
    if len(rows) == 1:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
           for r in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    out.append("percent of one core per process tree; 'bench' is the load generator, 'others' the rest of the machine;"
               " 'stack us/event': CPU microseconds of gateway, feature service, filter, Triton and Redis per answered"
               " event; 'floor us/event': the same for the same-shape floor's four processes (gateway and trivial"
               " stages) at the same load")
    return "\n".join(out)


def format_saturated_replay(sat: dict[str, Any]) -> list[str]:
    lines = []
    budget = f"a {sat['budget_ms']:g} ms budget" if sat.get("budget_ms") else "the stack's budget"
    for mode, rpc in (("stream", "ScoreStream, one event a message"),
                      ("batch", f"ScoreBatchStream, {sat['batch_size']} a message"),
                      ("columns", f"ScoreColumnsStream, {sat['batch_size']} a message in columns")):
        if mode not in sat:
            continue
        m = sat[mode]
        cpu = m.get("cpu_us_per_event", {})
        lines.append(f"Saturated replay of {sat['events']:,} events on {rpc}, at {budget}, as fast as the gateway "
                     f"takes them: {m['events_per_s']:,.0f} events/s, full answers {m['full_share']:.2%} (target "
                     f"99%), ensemble {m.get('ensemble_share', 0):.1%}, fallbacks f/e/u/l {_fallbacks(m['answers'])}, "
                     f"errors {m['errors']:,}, lost {m['lost']:,}, answered twice {m['duplicates']:,}"
                     + (f"; CPU per answered event {cpu['stack']:.0f} us for the stack ("
                        + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items() if k not in ("stack", "bench"))
                        + ")" if cpu else "")
                     + (f"; Redis {m['redis_cpu_us_per_event']:.1f} us of CPU per event (INFO cpu)."
                        if "redis_cpu_us_per_event" in m else "."))
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    m, g, st = result["machine"], result["git"], result["settings"]
    thr = st.get("filter_threshold") or {}
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{result['command']}` on {result['date']} (commit `{g['commit']}`"
        + (f", working tree dirty: {g['changed_files']} changed files" if g.get("dirty") else ", clean tree") + ").",
        "",
        f"Machine: {m['cores']} cores ({m['usable_cores']} usable), {m['cpu_model'] or 'unknown CPU'}, "
        f"{m['memory_gib']} GiB; Python {m['python']}, grpcio {m['grpcio']}. Load average at start "
        f"{', '.join(f'{x:.2f}' for x in result['loadavg_start'])}; the load generator, the five services, Redis and "
        "Triton all share these cores.",
    ]
    contention = result.get("contention")
    if contention:
        lines += ["", f"Other processes on the machine used {contention['others_mean_percent']:.0f}% of one core on "
                      f"average during the measured steps (max {contention['others_max_percent']:.0f}%)"
                      + (": **figures taken under contention**." if contention["contended"] else ".")]
    lines += [
        "",
        "## Setup",
        "",
        f"- Gateway budget {st['budget_ms']:g} ms. Open loop: latency counts from each event's scheduled send time; "
        f"{st['duration_s']:g} s per step, sender ticks of {st['tick_ms']:g} ms; unary at most "
        f"{st['max_outstanding']} calls in flight; stream and batch over {st.get('streams', 1)} bidi call(s).",
        f"- Redis warmed with the first {st['warm_up']['days']:g} days of simulated transactions "
        f"({st['warm_up']['events']:,} events, {st['warm_up']['labels_accepted']:,} labels) through the feature "
        f"service in {st['warm_up']['seconds']:.1f} s; the bench sends later transactions with fresh ids (the "
        f"steps covered {st.get('event_days', 0):g} further days of event time) and reports their labels, genuine and "
        f"fraud, through ReportLabels once they are due in event time (as training's label-arrival model draws them), "
        f"between steps "
        f"({st.get('labels_during_bench', {}).get('accepted', 0):,} labels).",
    ]
    if thr:
        lines.append(
            f"- Filter threshold {thr['threshold']:.6g}: the highest on the training report's validation curve with a "
            f"pass rate >= {thr['min_pass_rate']:.0%} (curve: {thr['pass_rate']:.2%} passed, "
            f"{thr['retention']:.1%} of the ensemble's frauds kept). The ensemble share in the table is measured.")
    crit = st["criteria"]
    lines += [
        f"- A step passes with p99 <= {crit['p99_ms']:g} ms, ensemble share >= {crit['min_ensemble_share']:.0%}, "
        f"errors <= {crit['max_error_share']:.1%} of sent, degraded <= {crit['max_degraded_share']:.0%} of answered, "
        f"answered >= {crit['min_answered_ratio']:.0%} of the target rate.",
        "",
        "## Results",
        "",
    ]
    rows = [TABLE_HEADER, *table_rows(result["steps"])]
    lines.append("| " + " | ".join(rows[0]) + " |")
    lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(rows[0]))) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    lines += ["", "Latency in ms. filter/ensemble: share of answered events decided by that stage. full: answered by "
              "every stage in time; fallbacks: filter only / filter on the event's own fields / ensemble without "
              "the filter / the gateway's in-process last resort."]
    summary = result.get("summary") or []
    if summary:
        lines += ["", *[f"- {s}" for s in summary]]
    failing = [s for s in result["steps"] if s["passed"] is False]
    if failing:
        lines += ["", "Why steps failed:", ""]
        lines += [f"- {s['name']}: {'; '.join(s['fail_reasons'])}" for s in failing]
    errors = Counter[str]()
    for s in result["steps"]:
        errors.update(s["errors"])
    degraded = Counter[str]()
    for s in result["steps"]:
        degraded.update(s["degraded"])
    if errors:
        lines += ["", "Errors over all steps, by kind: " + ", ".join(f"`{k}` {v:,}" for k, v in sorted(errors.items()))]
    if degraded:
        lines += ["", "Degraded answers over all steps, by reason: "
                  + ", ".join(f"`{k}` {v:,}" for k, v in sorted(degraded.items()))]
    tr = result.get("tracing")
    if tr:
        lines += ["", "## Tracing overhead", "",
                  "Saturated `ScoreBatchStream` (closed loop, 16 batches of 200 events outstanding, budget 1 s, "
                  f"{tr['seconds']:g} s a run, {tr['rounds']} off/on pairs in ABBA order; the services restarted "
                  f"with and without `OTEL_SDK_DISABLED=true`). Sampling: `{tr['sampler']}`.", "",
                  "| tracing | runs (events/s) | mean events/s |", "|---|---|---:|",
                  f"| off | {', '.join(f'{x:,.0f}' for x in tr['off'])} | {tr['off_mean']:,.0f} |",
                  f"| on | {', '.join(f'{x:,.0f}' for x in tr['on'])} | {tr['on_mean']:,.0f} |", "",
                  f"Difference {tr['difference']:+.1%} (target: within 10%, "
                  f"{'met' if tr['within_10_percent'] else 'missed'})."]
    if result.get("ceilings"):
        lines += ["", "## Raw ceilings (same machine, same run)", "", "```", format_ceilings(result["ceilings"]), "```"]
    cpu = format_cpu(result["steps"])
    if cpu:
        lines += ["", "## CPU per process during each step", "", "```", cpu, "```"]
    json_name = result.get("json_name", "benchmarks.json")
    lines += ["", f"Raw figures, with every step's full HDR latency histogram: `{json_name}`.", ""]
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], json_path: Path | None, markdown_path: Path | None) -> None:
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
        result["json_name"] = json_path.name
    if markdown_path is not None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(render_markdown(result))
