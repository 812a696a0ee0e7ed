"""The `scoring` command: run the local stack, replay a stream, simulate data, train the models."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path


def _simulation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--seed", type=int, default=0)


def _simulation_config(args: argparse.Namespace):  # noqa: ANN202
    from scoring.simulator import SimulationConfig

    return SimulationConfig(
        n_customers=args.customers, n_terminals=args.terminals, n_days=args.days, seed=args.seed
    )


def cmd_up(args: argparse.Namespace) -> int:
    from scoring.launcher import Ports, StackConfig, run_until_signalled

    env = dict(item.split("=", 1) for item in args.env)
    config = StackConfig(artifacts=args.artifacts, ports=Ports.free() if args.free_ports else Ports(), env=env)
    return asyncio.run(run_until_signalled(config))


def cmd_replay(args: argparse.Namespace) -> int:
    from scoring.replay import frame_transactions, load_replay_frame, replay_stream

    frame = load_replay_frame(args.artifacts, args.events, args.offset)
    result = asyncio.run(replay_stream(args.gateway, frame_transactions(frame), args.rate))
    print(result.summary())
    return 0 if result.answered == result.sent else 1


def cmd_simulate(args: argparse.Namespace) -> int:
    from scoring import simulator

    started = time.perf_counter()
    frame = simulator.simulate(_simulation_config(args))
    simulator.write_parquet(frame, args.out)
    print(json.dumps(simulator.summary(frame), default=str))
    print(f"wrote {args.out} in {time.perf_counter() - started:.2f} s")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from scoring.pipeline import TrainConfig, artifacts_current, format_report, train

    config = TrainConfig(simulation=_simulation_config(args))
    if args.if_missing and artifacts_current(args.out, config):
        print(f"models in {args.out} are current; not retraining")
        return 0
    report = train(args.out, config, data=args.data)
    print(format_report(report))
    print(f"wrote models, Triton repository and report to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Offline evaluation on the test period; with --live, the same from a gateway's answers."""
    from scoring.evaluate import evaluate, format_evaluation

    async def run() -> dict:
        if not args.live or args.gateway:
            return await evaluate(args.artifacts, gateway=args.gateway, history_days=args.history_days)
        from scoring.launcher import Ports, Stack, StackConfig

        # A budget that no stage misses on a busy laptop: this measures what the models score, not how fast.
        config = StackConfig(
            artifacts=args.artifacts, ports=Ports.free(), env={"GATEWAY_BUDGET_MS": str(args.budget_ms)}
        )
        async with Stack(config) as stack:
            return await evaluate(args.artifacts, gateway=stack.gateway_address, history_days=args.history_days)

    result = asyncio.run(run())
    print(format_evaluation(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    live = result.get("live")
    return 0 if live is None or (live["answered"] == result["test_transactions"] and not live["errors"]) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the stack, replay a stream, print the summary, stop the stack."""
    from scoring.launcher import Stack, StackConfig
    from scoring.replay import frame_transactions, load_replay_frame, replay_stream

    async def run() -> int:
        started = time.monotonic()
        async with Stack(StackConfig(artifacts=args.artifacts)) as stack:
            print(f"stack ready in {time.monotonic() - started:.1f} s: gateway {stack.gateway_address}", flush=True)
            frame = load_replay_frame(args.artifacts, args.events, args.offset)
            result = await replay_stream(stack.gateway_address, frame_transactions(frame), args.rate)
            print(result.summary(), flush=True)
        print("stack stopped", flush=True)
        return 0 if result.answered == result.sent else 1

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scoring", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the local stack and wait for Ctrl-C")
    up.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    up.add_argument("--free-ports", action="store_true", help="pick free ports instead of the defaults")
    up.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra service setting")
    up.set_defaults(func=cmd_up)

    replay = sub.add_parser("replay", help="stream simulated transactions to a running gateway")
    replay.add_argument("--gateway", default="127.0.0.1:50051")
    replay.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    replay.add_argument("--events", type=int, default=5000)
    replay.add_argument("--offset", type=int, default=0)
    replay.add_argument("--rate", type=float, default=1000.0, help="events per second (open loop)")
    replay.set_defaults(func=cmd_replay)

    simulate = sub.add_parser("simulate", help="write a simulated transaction dataset as Parquet")
    simulate.add_argument("--out", type=Path, default=Path("artifacts/data/transactions.parquet"))
    _simulation_args(simulate)
    simulate.set_defaults(func=cmd_simulate)

    train = sub.add_parser("train", help="train and export every model, write the Triton repository")
    train.add_argument("--out", type=Path, default=Path("artifacts"))
    train.add_argument("--data", type=Path, default=None, help="a Parquet file instead of simulating")
    train.add_argument("--if-missing", action="store_true", help="do nothing when the models are current")
    _simulation_args(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="AUC, AP and card precision on the test period, offline and live")
    evaluate.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    evaluate.add_argument("--live", action="store_true", help="also replay the test period through a gateway")
    evaluate.add_argument("--gateway", default=None, help="a running gateway (default: start a local stack)")
    evaluate.add_argument("--history-days", type=int, default=45, help="days replayed before the test period")
    evaluate.add_argument("--budget-ms", type=int, default=30_000, help="latency budget of the stack it starts")
    evaluate.add_argument("--json", type=Path, default=None, help="write the figures as JSON")
    evaluate.set_defaults(func=cmd_evaluate)

    demo = sub.add_parser("demo", help="start the stack, replay a stream, print the summary, stop")
    demo.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    demo.add_argument("--events", type=int, default=5000)
    demo.add_argument("--offset", type=int, default=0)
    demo.add_argument("--rate", type=float, default=1000.0)
    demo.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
