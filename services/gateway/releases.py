"""The gateway's release manager: which release scores each event, and the only path that loads models into Triton.

Place in the graph: the cascade asks `plan(batch)` which rows go to which release (the champion, or a canary's
candidate by the salted hash of the customer), and runs the filter and the ensemble of each with the release's own
filter (by name, in the filter service) and Triton model (by explicit version). A shadow candidate gets a copy of
the batch after the answers are out. Promotion and rollback only rewrite the routing: every release they can route
to is loaded and warmed before it gets its first event, so a flip makes no Triton load call.

The admin service (`services.gateway.admin`) drives it; every change is written to the routing file first and
then to the audit log, both in the release store.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tritonclient.grpc.aio as triton
from tritonclient.utils import InferenceServerException

from scoring.common.schema import SchemaMismatch
from scoring.releases.audit import AuditLog
from scoring.releases.compare import PairedWindow
from scoring.releases.gates import GateSpec
from scoring.releases.routing import Routing, RoutingFile, on_candidate, validate_steps
from scoring.releases.store import Release, ReleaseError, ReleaseStore, materialise, remove_model
from services.gateway import metrics as M
from services.gateway.canary import CanaryGate
from services.gateway.stages import EnsembleClient, FeatureClient, FilterClient, StageError

if TYPE_CHECKING:
    from services.gateway.cascade import BatchOutcome

log = logging.getLogger(__name__)
SCENARIO = "fraud"
DESCRIBE_TIMEOUT_S = 5.0
WARM_TIMEOUT_S = 10.0
LOAD_TIMEOUT_S = 120.0


class ReleaseStateError(RuntimeError):
    """An admin request that does not fit the routing now (promoting what is not the candidate, ...)."""


@dataclass(frozen=True)
class Group:
    """Rows of a batch (None: all of them) scored by one release."""

    release: Release
    rows: np.ndarray | None


class ReleaseManager:
    def __init__(
        self,
        store: ReleaseStore,
        triton_repository: Path,
        triton_address: str,
        features: FeatureClient,
        filter_client: FilterClient,
        ensemble: EnsembleClient,
        *,
        n_features: int,
        seq_shape: tuple[int, ...],
        gate: GateSpec | None = None,
        gate_interval_s: float = 1.0,
        step_min_s: float = 10.0,
    ) -> None:
        self.store = store
        self.audit = AuditLog(store.root / "audit.jsonl")
        self.routing_file = RoutingFile(store.root / "routing.json")
        self.repository = Path(triton_repository)
        self.triton = triton.InferenceServerClient(url=triton_address)
        self.features = features
        self.filter = filter_client
        self.ensemble = ensemble
        self.n_features = n_features
        self.seq_shape = seq_shape
        self.routing = Routing()
        self.loaded: dict[str, Release] = {}
        # Each loaded release's decision threshold on its final score (its training report's ensemble threshold).
        self.alert_threshold: dict[str, float] = {}
        self.window = PairedWindow()
        self.lock = asyncio.Lock()
        self.gate = CanaryGate(self, gate or GateSpec(), interval_s=gate_interval_s, step_min_s=step_min_s)

    # --- the hot path -------------------------------------------------------------------------------------------

    @property
    def champion(self) -> Release:
        return self.loaded[self.routing.champion]

    def plan(self, entities: list[str]) -> list[Group]:
        """Which release scores which rows: one group, or two during a canary (champion rows, candidate rows)."""
        routing = self.routing
        champion = self.loaded[routing.champion]
        if routing.mode != "canary" or not routing.candidate:
            return [Group(champion, None)]
        mask = on_candidate(routing.salt, entities, routing.fraction)
        if not mask.any():
            return [Group(champion, None)]
        candidate = self.loaded[routing.candidate]
        if mask.all():
            return [Group(candidate, None)]
        return [Group(champion, np.flatnonzero(~mask)), Group(candidate, np.flatnonzero(mask))]

    def shadow(self) -> Release | None:
        """The release that scores copies of champion events off the answer's path: the candidate, in shadow mode
        and during a canary (whose gate reads the paired agreement)."""
        routing = self.routing
        return self.loaded.get(routing.candidate) if routing.mode in ("shadow", "canary") else None

    def observe(self, outcome: BatchOutcome, latency_s: np.ndarray) -> None:
        self.gate.observe(outcome, latency_s)

    # --- start and loading ----------------------------------------------------------------------------------------

    async def start(self, bootstrap: Path | None) -> None:
        """Reads the routing (or makes the first release from `bootstrap`, a training output, when the store has
        none) and loads every release it routes to. A champion trained on other features than the feature service
        computes stops the gateway here, with both hashes in the message."""
        routing = self.routing_file.read(SCENARIO)
        if routing is None or not routing.champion:
            routing = await asyncio.to_thread(self._bootstrap, bootstrap)
        self.routing = routing
        service_hash = await self._service_hash(required=False)
        for name in routing.live():
            await self._load(self.store.get(name), service_hash)
        self._publish_roles()
        self.gate.start()

    def _bootstrap(self, source: Path | None) -> Routing:
        existing = [r for r in self.store.all() if r.scenario == SCENARIO]
        if existing:
            release = existing[-1]
        else:
            if source is None:
                raise ReleaseError("the release store is empty and no training output was given to start from")
            name = initial_name(Path(source) / "train_report.json")
            try:
                release = self.store.create(name, source, created_by="gateway:bootstrap")
            except ReleaseError:
                if not (self.store.path(name) / "manifest.json").is_file():
                    raise
                release = self.store.get(name)  # another gateway on the same store made it first
            self.audit.append("created", name, by="gateway:bootstrap", source=str(source),
                              triton_model=release.triton_model, schema=release.schema.hash)
        routing = Routing(champion=release.name).changed("bootstrap")
        self.routing_file.write(routing, SCENARIO)
        self.audit.append("promoted", release.name, by="gateway:bootstrap", champion=release.name, previous="")
        return routing

    async def _service_hash(self, *, required: bool) -> str | None:
        try:
            hashes = await self.features.describe(DESCRIBE_TIMEOUT_S)
        except StageError as exc:
            if required:
                raise ReleaseStateError(f"feature service: cannot read its feature schema ({exc})") from exc
            log.warning("feature schema not checked: feature service unreachable", extra={"reason": exc.reason})
            return None
        if SCENARIO not in hashes:
            raise ReleaseStateError(f"feature service: folds no {SCENARIO} events (schemas: {sorted(hashes)})")
        return hashes[SCENARIO]

    async def _load(self, release: Release, service_hash: str | None) -> None:
        """Checks, materialises, loads (unless Triton has it ready already) and warms a release."""
        if service_hash is not None and release.schema.hash != service_hash:
            raise SchemaMismatch(f"release {release.name}", release.schema.hash, service_hash)
        await asyncio.to_thread(self.store.verify, release)
        await asyncio.to_thread(materialise, release, self.repository)
        try:
            ready = await self.triton.is_model_ready(release.triton_model, str(release.triton_version))
        except InferenceServerException:
            ready = False
        if not ready:
            started = time.perf_counter()
            try:
                await self.triton.load_model(release.triton_model, client_timeout=LOAD_TIMEOUT_S)
            except InferenceServerException as exc:
                raise ReleaseStateError(f"triton: cannot load {release.triton_model}: {exc}") from exc
            log.info("release loaded into triton", extra={"release": release.name, "model": release.triton_model,
                                                           "took_s": round(time.perf_counter() - started, 3)})
        await self._warm(release)
        self.alert_threshold[release.name] = float(release.report()["ensemble_threshold"])
        self.loaded[release.name] = release

    async def _warm(self, release: Release) -> None:
        """One call to the release's filter and ensemble: its first event must not pay their first-run costs."""
        zeros = np.zeros((4, self.n_features), dtype=np.float32)
        seqs = np.zeros((4, *self.seq_shape), dtype=np.float32)
        try:
            await self.filter.predict(zeros, False, WARM_TIMEOUT_S, release=release.name)
            await self.ensemble.score(zeros, seqs, WARM_TIMEOUT_S, model=(release.triton_model,
                                                                           release.triton_version))
        except StageError as exc:
            raise ReleaseStateError(f"release {release.name}: warm-up failed: {exc}") from exc

    # --- admin ------------------------------------------------------------------------------------------------------

    async def set_routing(self, routing: Routing) -> None:
        """The new routing serves from the next batch on; then it is written (fsync, in a thread: a flush on this
        machine can take tens of milliseconds, and the event loop must go on answering meanwhile). A crash between
        the two leaves the old routing on disk, which the admin call was not told had changed."""
        self.routing = routing
        self._publish_roles()
        await asyncio.to_thread(self.routing_file.write, routing, SCENARIO)

    async def record(self, event: str, release: str, *, by: str, **detail: Any) -> None:
        """An audit line, appended and flushed in a thread (see set_routing)."""
        await asyncio.to_thread(functools.partial(self.audit.append, event, release, by=by, **detail))

    def _publish_roles(self) -> None:
        routing = self.routing
        roles = {"champion": routing.champion, "candidate": routing.candidate if routing.mode == "canary" else "",
                 "shadow": routing.candidate if routing.mode == "shadow" else "", "previous": routing.previous}
        for name in self.loaded:
            for role, holder in roles.items():
                M.RELEASE_ROLE.labels(name, role).set(1.0 if holder == name else 0.0)

    async def create(self, name: str, source: Path, by: str) -> Release:
        async with self.lock:
            release = await asyncio.to_thread(self.store.create, name, source, created_by=by)
            await self.record("created", name, by=by, source=str(source), triton_model=release.triton_model,
                              schema=release.schema.hash)
            return release

    async def start_shadow(self, name: str, by: str) -> Routing:
        async with self.lock:
            release = self._candidate_release(name)
            await self._load(release, await self._service_hash(required=True))
            self.window = PairedWindow()
            await self.set_routing(self.routing.changed("shadow", candidate=name, mode="shadow", steps=(), step=-1))
            await self.record("shadow_started", name, by=by, champion=self.routing.champion)
            return self.routing

    async def start_canary(self, name: str, steps: tuple[float, ...], by: str) -> Routing:
        steps = validate_steps(steps)
        async with self.lock:
            release = self._candidate_release(name)
            await self._load(release, await self._service_hash(required=True))
            self.window = PairedWindow()
            await self.set_routing(self.routing.changed("canary", candidate=name, mode="canary", steps=steps, step=0))
            self.gate.new_step(fresh=True)
            await self.record("canary_step", name, by=by, fraction=steps[0], step=0, champion=self.routing.champion)
            return self.routing

    def _candidate_release(self, name: str) -> Release:
        release = self.store.get(name)
        routing = self.routing
        if name == routing.champion:
            raise ReleaseStateError(f"release {name} is the champion already")
        if routing.candidate and routing.candidate != name:
            raise ReleaseStateError(f"release {routing.candidate} is the candidate now ({routing.mode}); "
                                    "promote it or roll it back first")
        return release

    async def promote(self, name: str, by: str, **evidence: Any) -> Routing:
        async with self.lock:
            self.store.get(name)  # NOT_FOUND for a release that is not in the store at all
            routing = self.routing
            # The candidate, or a release loaded and warmed already (one rolled back from): routing only.
            if name == routing.champion or name not in self.loaded:
                raise ReleaseStateError(f"release {name} is not loaded beside the champion (candidate: "
                                        f"{routing.candidate or 'none'}; loaded: {', '.join(sorted(self.loaded))})")
            if routing.candidate and name != routing.candidate:
                raise ReleaseStateError(f"release {routing.candidate} is the candidate now ({routing.mode}); "
                                        "promote it or roll it back first")
            await self.set_routing(routing.changed("promoted", champion=name, candidate="", mode="none", steps=(),
                                                   step=-1, previous=routing.champion))
            await self.record("promoted", name, by=by, champion=name, previous=routing.champion, **evidence)
            return self.routing

    async def rollback(self, by: str, reason: str, **evidence: Any) -> Routing:
        """Ends a shadow or canary, else returns to the previous champion. Touches only the routing: it works
        whatever state the candidate's models are in."""
        async with self.lock:
            routing = self.routing
            if routing.candidate:
                await self.set_routing(routing.changed(f"rolled back: {reason}", candidate="", mode="none", steps=(),
                                                 step=-1))
                await self.record("rolled_back", routing.candidate, by=by, champion=routing.champion, reason=reason,
                                  mode=routing.mode, fraction=routing.fraction, **evidence)
            elif routing.previous and routing.previous in self.loaded:
                await self.set_routing(routing.changed(f"rolled back: {reason}", champion=routing.previous,
                                                       previous=""))
                await self.record("rolled_back", routing.champion, by=by, champion=routing.previous, reason=reason,
                                  mode="promoted", **evidence)
            else:
                raise ReleaseStateError("nothing to roll back: no candidate and no previous champion loaded")
            return self.routing

    async def retire(self, name: str, by: str) -> Routing:
        async with self.lock:
            release = self.store.get(name)
            if name in self.routing.live():
                raise ReleaseStateError(f"release {name} still serves ({self._role(name)}); roll back or promote "
                                        "another release first")
            if self.routing.previous == name:
                await self.set_routing(self.routing.changed("retired previous", previous=""))
            try:
                await self.triton.unload_model(release.triton_model)
            except InferenceServerException as exc:
                log.warning("retire: unload failed", extra={"release": name, "error": str(exc)})
            await asyncio.to_thread(remove_model, release, self.repository)
            self.loaded.pop(name, None)
            await self.record("retired", name, by=by)
            return self.routing

    def _role(self, name: str) -> str:
        routing = self.routing
        if name == routing.champion:
            return "champion"
        if name == routing.candidate:
            return "candidate"
        if name == routing.previous:
            return "previous"
        retired = {e.release for e in self.audit.read() if e.event == "retired"}
        return "retired" if name in retired and name not in self.loaded else "stored"

    def role(self, name: str) -> str:
        return self._role(name)

    def shadow_figures(self) -> dict[str, object]:
        """The paired comparison of the shadow (or the last shadow) with the champion it ran beside."""
        routing = self.routing
        if routing.mode != "shadow" and self.window.seen == 0:
            return {}
        champion, candidate = routing.champion, routing.candidate
        figures = self.window.figures(self.alert_threshold.get(champion, 0.5), self.alert_threshold.get(candidate, 0.5))
        return {"champion": champion, "shadow": candidate, **figures}

    def gate_figures(self) -> dict[str, Any]:
        return self.gate.figures()

    async def close(self) -> None:
        self.gate.close()
        await self.triton.close()


def initial_name(report: Path) -> str:
    """The first release's name, from its training run: "fraud-<date of the report>-<its schema hash's start>"."""
    import json

    data = json.loads(report.read_text())
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(report.stat().st_mtime))
    return f"{SCENARIO}-{stamp}-{data['feature_schema']['hash'].split(':')[1][:6]}"
