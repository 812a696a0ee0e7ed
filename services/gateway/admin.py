"""gRPC servicer of `scoring.v1.Releases`, the gateway's admin API: thin over `ReleaseManager`.

Served on its own port (GATEWAY_ADMIN_PORT), on loopback unless configured otherwise, never beside the public API.
Each error type gets its status: a bad name or path INVALID_ARGUMENT, a release not in the store NOT_FOUND, a request
that does not fit the routing now (or a schema mismatch) FAILED_PRECONDITION.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from scoring.common.schema import SchemaMismatch
from scoring.releases.routing import Routing
from scoring.releases.store import Release, ReleaseError
from scoring.v1 import releases_pb2, releases_pb2_grpc
from services.gateway.releases import SCENARIO, ReleaseManager, ReleaseStateError

T = TypeVar("T")


def _statuses(
    method: Callable[..., Awaitable[T]],
) -> Callable[..., Awaitable[T]]:
    @functools.wraps(method)
    async def wrapper(self: ReleasesServicer, request: Any, context: grpc.aio.ServicerContext) -> T:
        try:
            return await method(self, request, context)
        except SchemaMismatch as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except ReleaseError as exc:
            code = grpc.StatusCode.NOT_FOUND if "not in the store" in str(exc) else grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, str(exc))
        except (ReleaseStateError, ValueError) as exc:
            code = (grpc.StatusCode.INVALID_ARGUMENT if isinstance(exc, ValueError)
                    else grpc.StatusCode.FAILED_PRECONDITION)
            await context.abort(code, str(exc))
        raise AssertionError("unreachable")  # abort raises

    return wrapper


class ReleasesServicer(releases_pb2_grpc.ReleasesServicer):
    def __init__(self, manager: ReleaseManager) -> None:
        self.manager = manager

    def _info(self, release: Release) -> releases_pb2.ReleaseInfo:
        return releases_pb2.ReleaseInfo(
            name=release.name, scenario=release.scenario, created_at=release.created_at,
            created_by=release.created_by, triton_model=release.triton_model, triton_version=release.triton_version,
            feature_schema_hash=release.schema.hash, threshold=release.threshold, role=self.manager.role(release.name),
        )

    def _status(self, routing: Routing) -> releases_pb2.ReleaseStatus:
        detail = routing.to_dict()
        detail.pop("salt")  # which entities are on the candidate is not for the admin API to give away
        detail["loaded"] = sorted(self.manager.loaded)
        detail["shadow"] = self.manager.shadow_figures()
        detail["gate"] = self.manager.gate_figures()
        return releases_pb2.ReleaseStatus(
            scenario=SCENARIO, champion=routing.champion, candidate=routing.candidate, mode=routing.mode,
            canary_fraction=routing.fraction, steps=list(routing.steps), step=routing.step, previous=routing.previous,
            detail_json=json.dumps(detail, sort_keys=True),
        )

    @staticmethod
    def _by(request: Any, context: grpc.aio.ServicerContext) -> str:
        return request.by or f"admin@{context.peer()}"

    @_statuses
    async def Create(
        self, request: releases_pb2.CreateReleaseRequest, context: grpc.aio.ServicerContext
    ) -> releases_pb2.ReleaseInfo:
        if not request.source:
            raise ValueError("source: the training output folder to make the release from is required")
        release = await self.manager.create(request.name, Path(request.source), self._by(request, context))
        return self._info(release)

    @_statuses
    async def List(
        self, request: releases_pb2.ListReleasesRequest, context: grpc.aio.ServicerContext
    ) -> releases_pb2.ListReleasesResponse:
        return releases_pb2.ListReleasesResponse(releases=[self._info(r) for r in self.manager.store.all()])

    @_statuses
    async def Status(
        self, request: releases_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> releases_pb2.ReleaseStatus:
        return self._status(self.manager.routing)

    @_statuses
    async def Shadow(
        self, request: releases_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> releases_pb2.ReleaseStatus:
        return self._status(await self.manager.start_shadow(request.name, self._by(request, context)))

    @_statuses
    async def Canary(
        self, request: releases_pb2.CanaryRequest, context: grpc.aio.ServicerContext
    ) -> releases_pb2.ReleaseStatus:
        steps = tuple(request.steps)
        return self._status(await self.manager.start_canary(request.name, steps, self._by(request, context)))

    @_statuses
    async def Promote(
        self, request: releases_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> releases_pb2.ReleaseStatus:
        return self._status(await self.manager.promote(request.name, self._by(request, context)))

    @_statuses
    async def Rollback(
        self, request: releases_pb2.RollbackRequest, context: grpc.aio.ServicerContext
    ) -> releases_pb2.ReleaseStatus:
        reason = request.reason or "asked for"
        return self._status(await self.manager.rollback(self._by(request, context), reason))

    @_statuses
    async def Retire(
        self, request: releases_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> releases_pb2.ReleaseStatus:
        return self._status(await self.manager.retire(request.name, self._by(request, context)))
