"""The `scoring` command: run the local stack, replay a stream, simulate data, train the models."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from pathlib import Path


def _simulation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--seed", type=int, default=0)


def _simulation_config(args: argparse.Namespace):  # noqa: ANN202
    from scoring.scenarios.fraud.simulator import SimulationConfig

    return SimulationConfig(
        n_customers=args.customers, n_terminals=args.terminals, n_days=args.days, seed=args.seed
    )


def cmd_up(args: argparse.Namespace) -> int:
    from scoring.launcher import Ports, StackConfig, run_until_signalled

    env = dict(item.split("=", 1) for item in args.env)
    config = StackConfig(artifacts=args.artifacts, ports=Ports.free() if args.free_ports else Ports(), env=env,
                         supervise=args.supervise, redis_cluster=args.redis_cluster)
    return asyncio.run(run_until_signalled(config))


def cmd_replay(args: argparse.Namespace) -> int:
    from scoring.replay import (
        LabelFeed,
        frame_transactions,
        load_replay_frame,
        replay_batches,
        replay_columns,
        replay_stream,
    )
    from scoring.scenarios.fraud.label_delay import LabelDelay

    frame = load_replay_frame(args.artifacts, args.events, args.offset)
    transactions = frame_transactions(frame)
    spec = None
    if args.label_delay != "none":
        try:
            spec = LabelDelay.parse(args.label_delay).spec
        except ValueError as exc:
            print(f"scoring replay: --label-delay: {exc}", file=sys.stderr)
            return 2

    async def run():  # noqa: ANN202
        # The seed training drew its label delays with, so a replayed label arrives when training assumed.
        report = args.artifacts / "train_report.json"
        seed = json.loads(report.read_text())["config"]["simulation"]["seed"] if report.exists() else 0
        feed = LabelFeed(frame, spec, seed=int(seed)) if spec else None
        if args.columns:
            return await replay_columns(args.gateway, transactions, args.columns, budget_ms=args.budget_ms,
                                        labels=feed)
        if args.batch:
            return await replay_batches(args.gateway, transactions, args.batch, budget_ms=args.budget_ms, labels=feed)
        return await replay_stream(args.gateway, transactions, args.rate, budget_ms=args.budget_ms, labels=feed)

    result = asyncio.run(run())
    print(result.summary())
    return 0 if result.answered == result.sent else 1


def cmd_simulate(args: argparse.Namespace) -> int:
    from scoring.scenarios.fraud import simulator

    if args.scenario == "market":
        return _simulate_market(args)
    started = time.perf_counter()
    out = args.out or Path("artifacts/data/transactions.parquet")
    frame = simulator.simulate(_simulation_config(args))
    simulator.write_parquet(frame, out)
    print(json.dumps(simulator.summary(frame), default=str))
    print(f"wrote {out} in {time.perf_counter() - started:.2f} s")
    return 0


def _simulate_market(args: argparse.Namespace) -> int:
    """Ticks of the market scenario's order-book simulator, with the order-flow-imbalance regression printed."""
    from scoring.scenarios.market.simulator import MarketConfig, cks_regression, simulate

    config = MarketConfig(n_symbols=args.symbols, ticks_per_symbol=args.ticks_per_symbol, seed=args.seed)
    started = time.perf_counter()
    frame = simulate(config)
    took = time.perf_counter() - started
    print(f"{len(frame):,} ticks of {config.n_symbols} symbols in {took:.1f} s ({len(frame) / took:,.0f} ticks/s)")
    for interval in (1.0, 10.0, 60.0):
        fit = cks_regression(frame, interval)
        print(f"mid-price change on order-flow imbalance over {interval:g} s (Cont, Kukanov and Stoikov): slope "
              f"{fit.slope:.3f} ticks per unit of depth, R^2 {fit.r2:.3f} over {fit.intervals:,} intervals")
    out = args.out or Path("artifacts/data/ticks.parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    print(f"wrote {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from scoring.scenarios.fraud.dataset import DataError
    from scoring.scenarios.fraud.label_delay import LabelDelay
    from scoring.scenarios.fraud.pipeline import TrainConfig, artifacts_current, format_report, train

    try:
        delays = tuple(LabelDelay.parse(d).spec for d in args.label_delay) if args.label_delay else None
    except ValueError as exc:
        print(f"scoring train: --label-delay: {exc}", file=sys.stderr)
        return 2
    if args.scenario in ("all", "fraud"):
        config = TrainConfig(simulation=_simulation_config(args))
        if delays:
            config = dataclasses.replace(config, label_delays=delays)
        if args.if_missing and artifacts_current(args.out, config):
            print(f"fraud models in {args.out} are current; not retraining")
        else:
            try:
                report = train(args.out, config, data=args.data)
            except DataError as exc:
                print(f"scoring train: refused {args.data}:\n{exc}", file=sys.stderr)
                return 2
            print(format_report(report))
    if args.scenario in ("all", "market"):
        from scoring.scenarios.market import pipeline as market

        market_config = market.MarketTrainConfig()
        if args.market_ticks_per_symbol:
            market_config = dataclasses.replace(market_config, ticks_per_symbol=args.market_ticks_per_symbol)
        if args.if_missing and market.artifacts_current(args.out, market_config):
            print(f"market models in {args.out} are current; not retraining")
        else:
            print(market.format_report(market.train(args.out, market_config)))
    print(f"models, Triton repository and reports in {args.out}")
    return 0


def cmd_evaluate_market(args: argparse.Namespace) -> int:
    """The market scenario: the offline table of training's report, recomputed; with --live, the test ticks through
    a gateway against the offline cascade."""
    from scoring.scenarios.market import pipeline as market
    from scoring.scenarios.market.evaluate import Served, evaluate_offline, format_evaluation

    report_path = args.artifacts / market.REPORT
    if not report_path.exists():
        print(f"scoring evaluate: no market models in {args.artifacts}: scoring train --scenario market",
              file=sys.stderr)
        return 2
    config = market.MarketTrainConfig(**json.loads(report_path.read_text())["config"])
    filter_dir, ensemble_dir = market.model_dirs(args.artifacts)
    served = Served.from_files(filter_dir / "model.onnx", ensemble_dir / "gbt.onnx", ensemble_dir / "seq.onnx")
    result: dict = {"offline": evaluate_offline(args.artifacts, market.build_dataset(config), config, served)}
    print(format_evaluation(result["offline"]))
    if args.live:
        from scoring.scenarios.market.evaluate_live import evaluate_live, format_live

        async def run() -> dict:
            budget_ms = 30_000.0 if args.budget_ms is None else args.budget_ms
            if args.gateway:
                return await evaluate_live(args.artifacts, args.gateway, budget_ms=budget_ms)
            from scoring.launcher import Ports, Stack, StackConfig

            config = StackConfig(artifacts=args.artifacts, ports=Ports.free(),
                                 env={"GATEWAY_MAX_BUDGET_MS": str(max(budget_ms, 1000))})
            async with Stack(config) as stack:
                return await evaluate_live(args.artifacts, stack.gateway_address, budget_ms=budget_ms)

        result["live"] = asyncio.run(run())
        print(format_live(result["live"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0 if "live" not in result or not result["live"]["degraded_or_errors"] else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Offline evaluation on the test period under each label delay; with --live, the same from a gateway's answers."""
    if args.scenario == "market":
        return cmd_evaluate_market(args)
    from scoring.scenarios.fraud.evaluate import PROTOCOLS, evaluate, format_evaluation
    from scoring.scenarios.fraud.label_delay import EVALUATED, LabelDelay

    try:
        delays = tuple(LabelDelay.parse(d).spec for d in (args.label_delay or EVALUATED))
    except ValueError as exc:
        print(f"scoring evaluate: --label-delay: {exc}", file=sys.stderr)
        return 2
    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)

    async def run() -> dict:
        options = {"history_days": args.history_days, "label_delays": delays, "protocols": protocols}
        if not args.live or args.gateway:
            return await evaluate(args.artifacts, gateway=args.gateway, budget_ms=args.budget_ms, **options)
        from scoring.launcher import Ports, Stack, StackConfig

        # A budget that no stage misses on a busy laptop, asked for per stream (x-scoring-budget-ms): this measures
        # what the models score, not how fast. The stack it starts allows that much.
        budget_ms = 30_000.0 if args.budget_ms is None else args.budget_ms
        config = StackConfig(
            artifacts=args.artifacts, ports=Ports.free(), env={"GATEWAY_MAX_BUDGET_MS": str(max(budget_ms, 1000))}
        )
        async with Stack(config) as stack:
            return await evaluate(args.artifacts, gateway=stack.gateway_address, budget_ms=budget_ms, **options)

    result = asyncio.run(run())
    print(format_evaluation(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    lives = [e["live"] for e in result["delays"].values() if "live" in e]
    complete = all(live["answered"] == result["test_transactions"] and not live["errors"] for live in lives)
    return 0 if complete else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the stack, replay a stream, print the summary, stop the stack."""
    from scoring.launcher import Stack, StackConfig
    from scoring.replay import frame_transactions, load_replay_frame, replay_stream

    async def run() -> int:
        started = time.monotonic()
        env = {}
        if "OTEL_TRACES_SAMPLER" not in os.environ:
            # A larger sample than the services' 1% default, so that the budget report rests on enough events.
            env = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(args.trace_ratio)}
        stack = Stack(StackConfig(artifacts=args.artifacts, env=env))
        if stack.trace_file is not None:
            stack.trace_file.unlink(missing_ok=True)  # this run's traces only
        async with stack:
            print(f"stack ready in {time.monotonic() - started:.1f} s: gateway {stack.gateway_address}", flush=True)
            frame = load_replay_frame(args.artifacts, args.events, args.offset)
            print(f"card fraud: {len(frame):,} transactions on ScoreStream at {args.rate:g}/s", flush=True)
            result = await replay_stream(stack.gateway_address, frame_transactions(frame), args.rate)
            print(result.summary(), flush=True)
            ok = result.answered == result.sent
            if stack.serves("market") and args.ticks:
                from scoring.scenarios.market.replay import demo_frame, frame_ticks

                prefix = f"demo{int(time.time())}-"  # this run's symbols: a stack's rings keep earlier runs' ticks
                ticks = frame_ticks(demo_frame(args.ticks), prefix)
                print(f"\nmarket ticks: {len(ticks):,} ticks of 20 symbols on ScoreStream at {args.rate:g}/s",
                      flush=True)
                tick_result = await replay_stream(stack.gateway_address, ticks, args.rate)
                print(tick_result.summary(), flush=True)
                ok = ok and tick_result.answered == tick_result.sent
        print("stack stopped", flush=True)
        if stack.trace_file is not None:
            from scoring.budget import format_report, load

            print(format_report(load(stack.trace_file)), flush=True)
        elif stack.tracing:
            print("traces went to the configured collector: `scoring budget --jaeger URL` reads them", flush=True)
        return 0 if ok else 1

    return asyncio.run(run())


def cmd_budget(args: argparse.Namespace) -> int:
    """Per-stage share of the latency budget, from Jaeger or the local trace file."""
    from scoring.budget import format_report, load

    try:
        report = load(args.file, args.jaeger)
    except (FileNotFoundError, OSError) as exc:
        print(f"scoring budget: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Open-loop load on a local stack (or --gateway), with the raw ceilings; `make bench` runs the standard set."""
    from scoring.bench.runner import BenchConfig, command_line, main, parse_rates
    from scoring.bench.workload import MODES

    if args.mode is not None and args.mode not in (*MODES, "ticks"):
        raise SystemExit(f"--mode must be one of {', '.join(MODES)}, ticks")
    rates = [args.rate] if args.rate is not None else (parse_rates(args.sweep) if args.sweep else None)
    config = BenchConfig(
        artifacts=args.artifacts, mode=args.mode, rates=rates, duration_s=args.duration, tick_s=args.tick_ms / 1e3,
        max_outstanding=args.max_outstanding, streams=args.streams, warm_days=args.warm_days,
        min_pass_rate=args.min_pass_rate,
        filter_threshold=args.filter_threshold, budget_ms=args.budget_ms, gateway=args.gateway,
        features=args.features, command=command_line(sys.argv[1:]),
    )
    config.ceilings = args.ceilings if args.ceilings is not None else config.standard
    config.floor = args.floor if args.floor is not None else config.standard
    standard = config.standard
    config.json_path = args.json or (Path("docs/benchmarks.json") if standard else None)
    config.markdown_path = args.markdown or (Path("docs/benchmarks.md") if standard else None)
    return main(config)


def cmd_chaos(args: argparse.Namespace) -> int:
    """Chaos experiments: a steady stream, one fault at a time, the report table (`make chaos` runs a soak)."""
    from scoring.chaos.experiment import Timing
    from scoring.chaos.faults import STANDARD_FAULTS, parse_fault
    from scoring.chaos.runner import ChaosConfig, main

    faults = list(STANDARD_FAULTS) if args.faults == "all" else [f for f in args.faults.split(",") if f]
    for text in faults:
        parse_fault(text)  # refuse a bad list before starting anything
    timing = Timing(rate=args.rate, before_s=args.before, fault_s=args.fault_window, after_s=args.after)
    config = ChaosConfig(
        artifacts=args.artifacts, faults=faults, timing=timing, rounds=args.rounds, budget_ms=args.budget_ms,
        filter_threshold=None if args.filter_threshold < 0 else args.filter_threshold, target=args.target,
        compose_project=args.compose_project, gateway=args.gateway, proxied_gateway=args.proxied_gateway,
        proxy_control=args.proxy_control, json_path=args.json,
    )
    return main(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scoring", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the local stack and wait for Ctrl-C")
    up.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    up.add_argument("--free-ports", action="store_true", help="pick free ports instead of the defaults")
    up.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra service setting")
    up.add_argument("--supervise", action=argparse.BooleanOptionalAction, default=True,
                    help="restart children that die, with back-off (default); --no-supervise stops all instead")
    up.add_argument("--redis-cluster", action="store_true",
                    help="keep the features on a local Redis Cluster of three masters instead of one Redis")
    up.set_defaults(func=cmd_up)

    replay = sub.add_parser("replay", help="stream simulated transactions to a running gateway")
    replay.add_argument("--gateway", default="127.0.0.1:50051")
    replay.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    replay.add_argument("--events", type=int, default=5000)
    replay.add_argument("--offset", type=int, default=0)
    replay.add_argument("--rate", type=float, default=1000.0,
                        help="events per second (open loop); 0: as fast as the gateway takes them")
    replay.add_argument("--batch", type=int, default=0, metavar="N",
                        help="send batches of N on ScoreBatchStream, as fast as the gateway takes them")
    replay.add_argument("--columns", type=int, default=0, metavar="N",
                        help="send batches of N in columns on ScoreColumnsStream, as fast as the gateway takes them")
    replay.add_argument("--budget-ms", type=float, default=None,
                        help="ask for this per-event budget (metadata x-scoring-budget-ms; capped by "
                             "GATEWAY_MAX_BUDGET_MS), e.g. for a backfill")
    replay.add_argument("--label-delay", default="realistic",
                        help="report each replayed transaction's label when the stream's event time passes its "
                        "arrival under this model (fixed:<duration>, uniform:<low>-<high>, realistic), or none")
    replay.set_defaults(func=cmd_replay)

    simulate = sub.add_parser("simulate", help="write a simulated transaction (or market tick) dataset as Parquet")
    simulate.add_argument("--out", type=Path, default=None,
                          help="default artifacts/data/transactions.parquet, or ticks.parquet for the market")
    simulate.add_argument("--scenario", choices=("fraud", "market"), default="fraud",
                          help="fraud: card transactions; market: order-book ticks (issue 16, its simulator only)")
    simulate.add_argument("--symbols", type=int, default=100, help="market: symbols")
    simulate.add_argument("--ticks-per-symbol", type=int, default=100_000, help="market: ticks per symbol")
    _simulation_args(simulate)
    simulate.set_defaults(func=cmd_simulate)

    train = sub.add_parser("train", help="train and export every model, write the Triton repository")
    train.add_argument("--out", type=Path, default=Path("artifacts"))
    train.add_argument("--data", type=Path, default=None,
                       help="your own transactions instead of simulating: Parquet or CSV with the handbook's columns "
                       "TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT, TX_FRAUD")
    train.add_argument("--label-delay", action="append", default=None,
                       help="how labels arrive, for the point-in-time label features of training (repeatable: each "
                       "event is trained on once per model; default realistic): fixed:<duration>, "
                       "uniform:<low>-<high> or realistic (scoring/scenarios/fraud/label_delay.py)")
    train.add_argument("--if-missing", action="store_true", help="do nothing when the models are current")
    train.add_argument("--scenario", choices=("all", "fraud", "market"), default="all",
                       help="train one scenario's models (default: every scenario)")
    train.add_argument("--market-ticks-per-symbol", type=int, default=None,
                       help="market scenario: simulated ticks per symbol (100 symbols; default 6000)")
    _simulation_args(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="AUC, AP and card precision on the test period, offline and live")
    evaluate.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    evaluate.add_argument("--live", action="store_true", help="also replay the test period through a gateway")
    evaluate.add_argument("--gateway", default=None, help="a running gateway (default: start a local stack)")
    evaluate.add_argument("--history-days", type=int, default=45, help="days replayed before the test period")
    evaluate.add_argument("--budget-ms", type=float, default=None,
                          help="per-event budget asked of the gateway (x-scoring-budget-ms); default 30000 for the "
                               "stack it starts, none for --gateway (whose GATEWAY_MAX_BUDGET_MS caps it, 1000 by "
                               "default)")
    evaluate.add_argument("--label-delay", action="append", default=None,
                          help="a label-arrival model to evaluate under (repeatable; default fixed:7d, fixed:8d and "
                          "realistic): fixed:<duration>, uniform:<low>-<high> or realistic")
    evaluate.add_argument("--protocol", choices=("all", "handbook", "both"), default="both",
                          help="all test events, or the handbook's (cards known compromised removed); default both")
    evaluate.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    evaluate.add_argument("--scenario", choices=("fraud", "market"), default="fraud",
                          help="market: macro-F1, MCC, the trader's figures and the baselines of the tick models")
    evaluate.set_defaults(func=cmd_evaluate)

    demo = sub.add_parser("demo", help="start the stack, replay a stream, print the summary, stop")
    demo.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    demo.add_argument("--events", type=int, default=5000)
    demo.add_argument("--offset", type=int, default=0)
    demo.add_argument("--rate", type=float, default=1000.0)
    demo.add_argument("--ticks", type=int, default=3000,
                      help="market ticks replayed after the transactions (when the market models are trained; 0: none)")
    demo.add_argument("--trace-ratio", type=float, default=0.1,
                      help="share of events traced (unless OTEL_TRACES_SAMPLER is set); the budget report reads them")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="benchmark the stack: open-loop load, latency, throughput, ceilings")
    bench.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    bench.add_argument("--mode", default=None,
                       help="unary, stream or batch: only that mode; ticks: only the market scenario's tick sweep "
                            "(default: the standard set, which runs a single-event step, then batch and stream "
                            "sweeps, then the tick sweep when the market models are trained)")
    bench.add_argument("--rate", type=float, default=None, help="one fixed rate, events per second")
    bench.add_argument("--sweep", default=None, metavar="R1,R2,...", help="the rates to sweep, events per second")
    bench.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    bench.add_argument("--tick-ms", type=float, default=1.0, help="sender tick; batch mode sends one message a tick")
    bench.add_argument("--max-outstanding", type=int, default=512, help="unary calls in flight at most")
    bench.add_argument("--streams", type=int, default=1, help="stream/batch: concurrent bidi calls, round-robin")
    bench.add_argument("--warm-days", type=float, default=30.0, help="days of history folded into Redis first")
    bench.add_argument("--min-pass-rate", type=float, default=0.06,
                       help="filter threshold: the highest whose validation pass rate is at least this")
    bench.add_argument("--filter-threshold", type=float, default=None, help="instead of the curve")
    bench.add_argument("--budget-ms", type=float, default=None, help="GATEWAY_BUDGET_MS for the stack")
    bench.add_argument("--gateway", default=None, help="bench a running gateway instead of starting a stack")
    bench.add_argument("--features", default=None, help="with --gateway: its feature service, for the warm-up")
    bench.add_argument("--ceilings", action=argparse.BooleanOptionalAction, default=None,
                       help="measure the echo/Redis/Triton ceilings (default: with the standard set)")
    bench.add_argument("--floor", action=argparse.BooleanOptionalAction, default=None,
                       help="the same-shape floor (the gateway before stages that do no work) after each step "
                            "(default: with the standard set)")
    bench.add_argument("--json", type=Path, default=None, help="write the result (standard: docs/benchmarks.json)")
    bench.add_argument("--markdown", type=Path, default=None, help="write a report (standard: docs/benchmarks.md)")
    bench.set_defaults(func=cmd_bench)

    budget = sub.add_parser("budget", help="where the latency budget went, per stage, from the traces")
    budget.add_argument("--file", type=Path, default=Path("artifacts/logs/spans.otlp.jsonl"),
                        help="OTLP/JSON lines written by the local stack's trace sink")
    budget.add_argument("--jaeger", help="read from Jaeger's query API instead, e.g. http://localhost:16686")
    budget.add_argument("--json", action="store_true", help="print the report as JSON")
    budget.set_defaults(func=cmd_budget)

    chaos = sub.add_parser("chaos", help="chaos experiments: kill, stall, slow or cut one service mid-stream")
    chaos.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    chaos.add_argument("--faults", default="all",
                       help="comma-separated: kill:SERVICE, pause:SERVICE, latency:SERVICE[:MS[:JITTER_MS]], "
                            "drop:SERVICE[:EVERY_S], redis-empty, client-drop[:EVERY_S]; or 'all' (the standard set)")
    chaos.add_argument("--rate", type=float, default=200.0, help="events per second (open loop)")
    chaos.add_argument("--before", type=float, default=2.0, help="seconds of steady stream before the fault")
    chaos.add_argument("--fault-window", type=float, default=3.0, help="seconds a pause or proxy fault lasts")
    chaos.add_argument("--after", type=float, default=4.0, help="seconds of stream after the service is back")
    chaos.add_argument("--rounds", type=int, default=1, help="run the list this many times")
    chaos.add_argument("--budget-ms", type=float, default=1000.0,
                       help="GATEWAY_BUDGET_MS of the local stack (scoring.chaos.runner.CHAOS_BUDGET_MS)")
    chaos.add_argument("--filter-threshold", type=float, default=0.0,
                       help="FILTER_THRESHOLD of the local stack (0: every event reaches the ensemble; <0: trained)")
    chaos.add_argument("--target", choices=("local", "compose"), default="local",
                       help="local processes (started here) or a running compose project (Docker SDK)")
    chaos.add_argument("--compose-project", default="scoring-graph", help="compose target: the project name")
    chaos.add_argument("--gateway", default="127.0.0.1:50051", help="compose target: the gateway's published address")
    chaos.add_argument("--proxied-gateway", default=None, help="compose target: the gateway through the fault proxy")
    chaos.add_argument("--proxy-control", default=None, help="compose target: the fault proxy's control address")
    chaos.add_argument("--json", type=Path, default=None, help="also write the reports as JSON")
    chaos.set_defaults(func=cmd_chaos)

    from scoring import release_cli

    release_cli.add_parser(sub)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
