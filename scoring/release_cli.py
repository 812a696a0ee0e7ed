"""`scoring release ...`: a client of the gateway's admin API (scoring.v1.Releases) on GATEWAY_ADMIN_PORT.

Every command is one admin RPC; the gateway holds the store, the routing and the audit log, so the same commands
work against a local stack, a compose project (`docker compose exec gateway scoring release ...`) or a pod.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import grpc

from scoring.v1 import releases_pb2, releases_pb2_grpc

DEFAULT_ADMIN = "127.0.0.1:50055"


def add_parser(sub: Any) -> None:
    release = sub.add_parser(
        "release", help="releases: create, list, status, shadow, canary, promote, rollback, retire"
    )
    release.add_argument("--admin", default=DEFAULT_ADMIN, help="the gateway's admin address (GATEWAY_ADMIN_PORT)")
    release.add_argument("--by", default="", help="who asks (recorded in the audit log; default: the caller's peer)")
    actions = release.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a release from a training run's output folder")
    create.add_argument("name")
    create.add_argument("--from", dest="source", required=True, help="the `scoring train --out` folder")
    actions.add_parser("list", help="every release in the store, with its role")
    actions.add_parser("status", help="the routing now, and the shadow's comparison figures")
    shadow = actions.add_parser("shadow", help="score a copy of every event with NAME, off the answer path")
    shadow.add_argument("name")
    canary = actions.add_parser("canary", help="send a share of customers to NAME, in steps")
    canary.add_argument("name")
    canary.add_argument("--steps", default="1,5,25,50,100", help="percent of customers per step")
    promote = actions.add_parser("promote", help="make the candidate NAME the champion (routing only)")
    promote.add_argument("name")
    rollback = actions.add_parser("rollback", help="end the shadow or canary, else return to the previous champion")
    rollback.add_argument("--reason", default="")
    retire = actions.add_parser("retire", help="unload a release that serves nothing")
    retire.add_argument("name")
    release.set_defaults(func=cmd_release)


def _info_row(info: releases_pb2.ReleaseInfo) -> str:
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info.created_at))
    return (f"{info.name:<36} {info.role:<10} {info.triton_model}:{info.triton_version:<4} "
            f"{info.feature_schema_hash}  threshold {info.threshold:.4f}  {created} UTC by {info.created_by}")


def _status_text(status: releases_pb2.ReleaseStatus) -> str:
    lines = [f"champion  {status.champion}", f"mode      {status.mode}"]
    if status.candidate:
        lines.append(f"candidate {status.candidate}")
    if status.mode == "canary":
        steps = ", ".join(f"{s:.0%}" for s in status.steps)
        lines.append(f"canary    {status.canary_fraction:.0%} of customers (step {status.step + 1} of "
                     f"{len(status.steps)}: {steps})")
    if status.previous:
        lines.append(f"previous  {status.previous} (kept loaded: rollback returns to it)")
    detail = json.loads(status.detail_json or "{}")
    shadow = detail.get("shadow") or {}
    if shadow:
        lines.append("shadow comparison (pairs where both releases gave a full answer):")
        for key, value in shadow.items():
            lines.append(f"  {key:<28} {value:.4f}" if isinstance(value, float) else f"  {key:<28} {value}")
    lines.append(f"changed   {detail.get('reason', '')} at "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(detail.get('changed_at', 0)))} UTC")
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> str:
    async with grpc.aio.insecure_channel(args.admin) as channel:
        stub = releases_pb2_grpc.ReleasesStub(channel)
        by = args.by
        if args.action == "create":
            info = await stub.Create(releases_pb2.CreateReleaseRequest(name=args.name, source=args.source, by=by))
            return "created " + _info_row(info)
        if args.action == "list":
            reply = await stub.List(releases_pb2.ListReleasesRequest())
            return "\n".join(_info_row(i) for i in reply.releases) or "no releases"
        if args.action == "status":
            return _status_text(await stub.Status(releases_pb2.StatusRequest()))
        if args.action == "shadow":
            return _status_text(await stub.Shadow(releases_pb2.ReleaseRequest(name=args.name, by=by)))
        if args.action == "canary":
            steps = [float(s) / 100.0 for s in args.steps.split(",") if s.strip()]
            return _status_text(await stub.Canary(releases_pb2.CanaryRequest(name=args.name, steps=steps, by=by)))
        if args.action == "promote":
            return _status_text(await stub.Promote(releases_pb2.ReleaseRequest(name=args.name, by=by)))
        if args.action == "rollback":
            return _status_text(await stub.Rollback(releases_pb2.RollbackRequest(by=by, reason=args.reason)))
        if args.action == "retire":
            return _status_text(await stub.Retire(releases_pb2.ReleaseRequest(name=args.name, by=by)))
    raise AssertionError(args.action)


def cmd_release(args: argparse.Namespace) -> int:
    try:
        print(asyncio.run(_run(args)))
    except grpc.aio.AioRpcError as exc:
        print(f"release {args.action}: {exc.code().name}: {exc.details()}")
        return 1
    return 0
