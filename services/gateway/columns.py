"""The columnar batch path (`ScoreColumnsStream`): a batch moves through validation, admission, the micro-batcher
and the answer as arrays, with no Python object, future or protobuf message per event.

Its answers are those of `ScoreBatchStream` for the same events (the same validation, dedup, budget and cascade);
only the field names of bad input differ (`amount[3]`, not `transactions[3].amount`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from google.rpc import code_pb2
from opentelemetry.trace import Link, Span

from scoring.scenarios.fraud.events import EventBatch
from scoring.scenarios.fraud.validation import Limits, ValidColumns, validate_columns
from scoring.v1 import gateway_pb2, types_pb2
from services.gateway import metrics as M
from services.gateway import tracing
from services.gateway.admission import AdmissionLimit
from services.gateway.batcher import Outcome, Overloaded
from services.gateway.cascade import BatchOutcome
from services.gateway.dedup import submit_group

# Stage codes of the cascade (cascade.STAGE_*) -> the public enum; the array form indexes a batch's stages at once.
PUBLIC_STAGES = {1: types_pb2.STAGE_FILTER, 2: types_pb2.STAGE_ENSEMBLE, 3: types_pb2.STAGE_NONE}
_STAGES = np.array([PUBLIC_STAGES.get(code, types_pb2.STAGE_NONE) for code in range(4)])


@dataclass
class _Columns:
    """The answer under construction: one value per row of the request."""

    score: np.ndarray
    filter_score: np.ndarray
    stage: np.ndarray
    reason: list[str]
    model: list[str]
    errors: dict[int, tuple[int, str, str]]  # row -> (code, field, message)
    release: list[str]

    @classmethod
    def empty(cls, n: int) -> _Columns:
        return cls(np.zeros(n), np.zeros(n), np.full(n, types_pb2.STAGE_NONE, np.int32), [""] * n, [""] * n, {},
                   [""] * n)

    def refuse(self, row: int, code: int, field: str, message: str) -> None:
        self.errors[row] = (code, field, message)
        self.reason[row] = "invalid_argument" if code == code_pb2.INVALID_ARGUMENT else "rejected"

    def scored(self, rows: np.ndarray, outcome: BatchOutcome) -> None:
        self.score[rows] = outcome.score
        self.filter_score[rows] = outcome.filter_score
        self.stage[rows] = _STAGES[np.asarray(outcome.stage, dtype=np.int64)]
        for j, row in enumerate(rows.tolist()):
            error = outcome.error[j]
            self.reason[row] = error or outcome.degraded_reason[j]
            self.model[row] = outcome.model_version[j]
            if outcome.release:
                self.release[row] = outcome.release[j]
            if error:
                self.errors[row] = (code_pb2.UNAVAILABLE, "", f"no stage could score the event: {error}")

    def replayed(self, row: int, outcome: Outcome) -> None:
        self.score[row], self.filter_score[row] = outcome.score, outcome.filter_score
        self.stage[row] = _STAGES[outcome.stage]
        self.reason[row] = outcome.error or outcome.degraded_reason
        self.model[row] = outcome.model_version
        self.release[row] = outcome.release
        if outcome.error:
            self.errors[row] = (code_pb2.UNAVAILABLE, "", f"no stage could score the event: {outcome.error}")

    def message(self) -> gateway_pb2.ColumnarScoreResponse:
        reasons: dict[str, int] = {"": 0}
        models: dict[str, int] = {"": 0}
        reason_index = [reasons.setdefault(r, len(reasons)) for r in self.reason]
        model_index = [models.setdefault(m, len(models)) for m in self.model]
        releases: dict[str, int] = {"": 0}
        release_index = [releases.setdefault(r, len(releases)) for r in self.release]
        rows = sorted(self.errors)
        for code, n in _count_codes(self.errors).items():
            M.ERRORS.labels(code_pb2.Code.Name(code)).inc(n)
        return gateway_pb2.ColumnarScoreResponse(
            score=self.score.tolist(),
            filter_score=self.filter_score.tolist(),
            stage=self.stage.tolist(),
            degraded=[bool(r) for r in self.reason],
            reason_index=reason_index,
            reasons=list(reasons),
            model_index=model_index,
            model_versions=list(models),
            release_index=release_index,
            releases=list(releases),
            error_rows=rows,
            errors=[types_pb2.EventError(code=self.errors[r][0], field=self.errors[r][1], message=self.errors[r][2])
                    for r in rows],
        )


def _count_codes(errors: dict[int, tuple[int, str, str]]) -> dict[int, int]:
    # Scoring failures (UNAVAILABLE) are counted by the batcher already, as for the other RPCs.
    counts: dict[int, int] = {}
    for code, _, _ in errors.values():
        if code != code_pb2.UNAVAILABLE:
            counts[code] = counts.get(code, 0) + 1
    return counts


def _release(admission: AdmissionLimit, n: int, _: asyncio.Future[BatchOutcome]) -> None:
    admission.release(n)


def _end_span(span: Span, _: asyncio.Future[BatchOutcome]) -> None:
    span.end()


def _part(valid: ValidColumns, lo: int, hi: int) -> EventBatch:
    return EventBatch(
        transaction_id=valid.transaction_id[lo:hi],
        event_time_us=valid.event_time_us[lo:hi],
        customer_id=valid.customer_id[lo:hi],
        terminal_id=valid.terminal_id[lo:hi],
        amount=valid.amount[lo:hi],
    )


async def score_columns(
    request: gateway_pb2.ColumnarScoreRequest,
    *,
    batcher: object,
    admission: AdmissionLimit,
    limits: Limits,
    max_request_batch: int,
    max_chunk: int,
    deadline: Callable[[], float],
    links: Sequence[Link],
    in_order: asyncio.Lock,
) -> gateway_pb2.ColumnarScoreResponse:
    n = len(request.transaction_id)
    if n == 0:
        answer = _Columns.empty(1)
        answer.refuse(0, code_pb2.INVALID_ARGUMENT, "transaction_id", "batch is empty")
        return answer.message()
    answer = _Columns.empty(n)
    if n > max_request_batch:
        message = f"transaction_id: batch of {n} exceeds the maximum of {max_request_batch}"
        for row in range(n):
            answer.refuse(row, code_pb2.INVALID_ARGUMENT, "transaction_id", message)
        return answer.message()
    valid = validate_columns(request, limits=limits)
    for row, exc in valid.errors.items():
        answer.refuse(row, code_pb2.INVALID_ARGUMENT, exc.field, str(exc))
    pending: list[tuple[np.ndarray, asyncio.Future[BatchOutcome]]] = []
    replays: list[tuple[int, asyncio.Future[Outcome]]] = []
    # Admitted in chunks that fit the admission limit, each chunk's budget starting at its admission (as each
    # event's does on ScoreBatchStream).
    async with in_order:  # a stream's requests are admitted in the order sent
        lo = 0
        while lo < len(valid.rows):
            k = max(1, min(max_chunk, int(admission.limit), len(valid.rows) - lo))
            if not admission.try_acquire(k):
                await admission.acquire(k)
            chunk = _part(valid, lo, lo + k)
            rows = valid.rows[lo : lo + k]
            lo += k
            span = tracing.start_event(chunk.transaction_id[0], chunk.customer_id[0], root=True, links=links)
            try:
                submitted = submit_group(batcher, chunk, deadline(), span)
            except Overloaded as exc:
                admission.release(k)
                tracing.end_refused(span, exc)
                for row in rows.tolist():
                    answer.refuse(row, code_pb2.RESOURCE_EXHAUSTED, "", str(exc))
                continue
            # Only the events sent for scoring hold admission until answered; replays and refusals give it back now.
            admission.release(k - len(submitted.rows))
            for local, refusal in submitted.refused.items():
                row = int(rows[local])
                field = f"{refusal.field}[{row}]"
                answer.refuse(row, code_pb2.INVALID_ARGUMENT, field, f"{field}: {refusal.description}")
            replays += [(int(rows[local]), future) for local, future in submitted.replays.items()]
            scored = rows[np.asarray(submitted.rows, dtype=np.int64)] if submitted.rows else rows[:0]
            start = 0
            for future in submitted.futures:
                size = min(max_chunk, len(scored) - start)
                part = scored[start : start + size]
                start += size
                future.add_done_callback(functools.partial(_release, admission, size))
                pending.append((part, future))
            if span.is_recording():
                if submitted.futures:
                    submitted.futures[-1].add_done_callback(functools.partial(_end_span, span))
                else:
                    span.end()
    waiting = [f for _, f in pending] + [f for _, f in replays]
    if waiting:
        await asyncio.wait(waiting)
    for part_rows, group in pending:
        answer.scored(part_rows, group.result())
    for row, replay in replays:
        answer.replayed(row, replay.result())
    return answer.message()
