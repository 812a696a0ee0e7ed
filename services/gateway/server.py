"""gRPC servicer of the gateway, the graph's only public API: validate, submit to the batcher, answer.

Every event gets exactly one answer: a score, or an error naming the field (bad input), RESOURCE_EXHAUSTED
(overload) or UNAVAILABLE (no stage could score it). Unary calls answer errors with a gRPC status; streams
answer them in the event's response and go on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.trace import Link, Span

from scoring.common import telemetry
from scoring.scenarios.fraud.validation import DEFAULT_LIMITS, Event, FieldError, Limits, validate
from scoring.v1 import features_pb2, gateway_pb2, gateway_pb2_grpc, types_pb2
from services.gateway import metrics as M
from services.gateway import tracing
from services.gateway.admission import AdmissionLimit
from services.gateway.batcher import Outcome, Overloaded
from services.gateway.budget import event_deadline, requested_budget_s
from services.gateway.class_cascade import INVALID
from services.gateway.columns import PUBLIC_STAGES, score_columns
from services.gateway.dedup import Submitter
from services.gateway.stages import FeatureClient, StageError

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Response = TypeVar("Response")
# Labels have a budget of their own: seconds, not the events' milliseconds (they queue behind event folds). More
# than the feature service's own label budget (FEATURES_LABELS_TIMEOUT_S, 10 s), so that its answer arrives.
LABELS_TIMEOUT_S = 15.0


def _response(transaction_id: str, outcome: Outcome) -> types_pb2.ScoreResponse:
    response = types_pb2.ScoreResponse(
        transaction_id=transaction_id,
        score=outcome.score,
        stage=PUBLIC_STAGES[outcome.stage],
        degraded=bool(outcome.degraded_reason) or bool(outcome.error),
        # An error names the whole chain of stage failures ("features_timeout+filter_timeout"); the partial
        # reasons of the stages that did answer would hide why nothing could score the event.
        degraded_reason=outcome.error or outcome.degraded_reason,
        model_version=outcome.model_version,
        filter_score=outcome.filter_score,
        release=outcome.release,
    )
    if outcome.error:
        response.error.CopyFrom(
            types_pb2.EventError(
                code=code_pb2.UNAVAILABLE, field="", message=f"no stage could score the event: {outcome.error}"
            )
        )
    return response


def _error_response(transaction_id: str, code: int, field: str, message: str) -> types_pb2.ScoreResponse:
    M.ERRORS.labels(code_pb2.Code.Name(code)).inc()
    return types_pb2.ScoreResponse(
        transaction_id=transaction_id,
        stage=types_pb2.STAGE_NONE,
        degraded=True,
        degraded_reason="invalid_argument" if code == code_pb2.INVALID_ARGUMENT else "rejected",
        error=types_pb2.EventError(code=code, field=field, message=message),
    )


async def _abort_invalid(context: grpc.aio.ServicerContext, exc: FieldError) -> None:
    M.ERRORS.labels("INVALID_ARGUMENT").inc()
    violation = error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=exc.description)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    status = rpc_status.to_status(
        status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(exc), details=[detail])
    )
    await context.abort(status.code, status.details, status.trailing_metadata)


@dataclass(frozen=True)
class Route:
    """How the servicer handles the events of one other scenario (a field of `ScoreRequest.event` besides the
    transaction): its validation, its submitter (micro-batcher, behind its recent-answer cache) and its answers.
    Built from the scenario's serving module (`scoring.scenarios.registry`)."""

    validate: Callable[[Any, str], Any]  # message, field prefix -> plain event, or FieldError
    event_id: Callable[[Any], str]  # message -> its id, for an answer to a message that did not validate
    plain_id: Callable[[Any], str]  # plain event -> its id
    entity: Callable[[Any], str]  # plain event -> the entity it folds into (for the trace)
    respond: Callable[[str, Outcome], types_pb2.ScoreResponse]  # (id, outcome) -> the answer
    error: Callable[[str, int, str, str], types_pb2.ScoreResponse]  # (id, code, field, message) -> an error answer
    submitter: Submitter


def _refused(outcome: Outcome) -> tuple[str, str] | None:
    """(field, message) when the outcome refuses the event as the client's error (a fold status, not a stage)."""
    if not outcome.error.startswith(INVALID + ":"):
        return None
    message = outcome.error[len(INVALID) + 1 :]
    return message.split(":", 1)[0], message


def other_response(route: Route, event_id: str, outcome: Outcome) -> types_pb2.ScoreResponse:
    refused = _refused(outcome)
    if refused is not None:
        M.ERRORS.labels("INVALID_ARGUMENT").inc()
        return route.error(event_id, code_pb2.INVALID_ARGUMENT, *refused)
    return route.respond(event_id, outcome)


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(
        self,
        batcher: Submitter,  # the MicroBatcher, or the recent-answer cache in front of it
        features: FeatureClient,
        *,
        budget_s: float,
        max_inflight_per_stream: int,
        max_request_batch: int,
        admission: AdmissionLimit,
        max_budget_s: float = 1.0,
        limits: Limits = DEFAULT_LIMITS,
        max_group_events: int = 256,
        routes: dict[str, Route] | None = None,
    ) -> None:
        self.batcher = batcher
        # The other scenarios' events, by their field of ScoreRequest.event.
        self.routes = routes or {}
        self.features = features
        self.budget_s = budget_s
        self.max_budget_s = max(max_budget_s, budget_s)
        self.max_inflight_per_stream = max_inflight_per_stream
        self.max_request_batch = max_request_batch
        self.admission = admission
        self.limits = limits
        # A columnar request is handed to the micro-batcher in groups of at most this many events (its max_batch).
        self.max_group_events = max_group_events

    async def _call_budget(self, context: grpc.aio.ServicerContext) -> float:
        try:
            return requested_budget_s(context.invocation_metadata(), self.budget_s, self.max_budget_s)
        except FieldError as exc:
            await _abort_invalid(context, exc)
            raise  # not reached: abort raises

    def _submit_admitted(self, event: Event, deadline: float, span: Span) -> asyncio.Future[Outcome]:
        """Submits an event that holds one unit of admission; the unit is given back when the event is answered,
        or at once when the submit fails (FieldError, Overloaded: raised on)."""
        try:
            future = tracing.submit(self.batcher, event, deadline, span)
        except (FieldError, Overloaded):
            self.admission.release()
            raise
        future.add_done_callback(self._answered)
        return future

    def _answered(self, future: asyncio.Future[Outcome]) -> None:
        self.admission.release()

    @telemetry.traced_unary("/scoring.v1.Gateway/Score")
    async def Score(
        self, request: gateway_pb2.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> types_pb2.ScoreResponse:
        budget_s = await self._call_budget(context)
        kind = request.WhichOneof("event")
        if kind is not None and kind != "transaction":
            return await self._score_other(kind, getattr(request, kind), budget_s, context)
        if not request.HasField("transaction"):
            await _abort_invalid(context, FieldError("transaction", "is required (or another kind of event)"))
        try:
            event = validate(request.transaction, limits=self.limits)
        except FieldError as exc:
            await _abort_invalid(context, exc)
        if not self.admission.try_acquire():
            self.admission.refuse()
            M.ERRORS.labels("RESOURCE_EXHAUSTED").inc()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"gateway at its admission limit ({self.admission.inside} events inside); retry with back-off",
            )
        # The caller's trace goes on (its traceparent came in the metadata).
        span = tracing.start_event(event.transaction_id, event.customer_id, root=False)
        try:
            future = self._submit_admitted(event, event_deadline(budget_s, context.time_remaining()), span)
        except Overloaded as exc:
            M.ERRORS.labels("RESOURCE_EXHAUSTED").inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"gateway overloaded: {exc}")
        except FieldError as exc:  # the id was used for another event (recent-answer cache)
            await _abort_invalid(context, exc)
        outcome = await future
        if outcome.error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"no stage could score the event: {outcome.error}")
        return _response(event.transaction_id, outcome)

    def _route(self, kind: str) -> Route:
        route = self.routes.get(kind)
        if route is None:
            raise FieldError(kind, "this gateway serves no scenario for this kind of event")
        return route

    def _submit_other(
        self, route: Route, event: Any, deadline: float, links: Sequence[Link] | None
    ) -> asyncio.Future[Outcome]:
        """Submits an event of another scenario that holds one unit of admission (given back as for transactions)."""
        span = tracing.start_event(route.plain_id(event), route.entity(event), root=links is not None,
                                   links=links or ())
        try:
            future = tracing.submit(route.submitter, event, deadline, span)
        except (FieldError, Overloaded):
            self.admission.release()
            raise
        future.add_done_callback(self._answered)
        return future

    async def _score_other(
        self, kind: str, message: Any, budget_s: float, context: grpc.aio.ServicerContext
    ) -> types_pb2.ScoreResponse:
        try:
            route = self._route(kind)
            event = route.validate(message, kind)
        except FieldError as exc:
            await _abort_invalid(context, exc)
        if not self.admission.try_acquire():
            self.admission.refuse()
            M.ERRORS.labels("RESOURCE_EXHAUSTED").inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"gateway at its admission limit ({self.admission.inside} events inside)")
        try:
            future = self._submit_other(route, event, event_deadline(budget_s, context.time_remaining()), None)
        except Overloaded as exc:
            M.ERRORS.labels("RESOURCE_EXHAUSTED").inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"gateway overloaded: {exc}")
        outcome = await future
        refused = _refused(outcome)
        if refused is not None:
            await _abort_invalid(context, FieldError(refused[0], refused[1].split(": ", 1)[-1]))
        if outcome.error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"no stage could score the event: {outcome.error}")
        return route.respond(route.event_id(message), outcome)

    def _admit_other(
        self, kind: str, message: Any, prefix: str, deadline: float, links: Sequence[Link]
    ) -> types_pb2.ScoreResponse | asyncio.Future[types_pb2.ScoreResponse]:
        """An event of another scenario inside a stream that has one unit of admission: its answer's future, or an
        error answer at once (the unit then given back)."""
        route = self.routes.get(kind)
        if route is None:
            self.admission.release()
            return _error_response("", code_pb2.INVALID_ARGUMENT, prefix,
                                   "this gateway serves no scenario for this kind of event")
        event_id = route.event_id(message)
        try:
            event = route.validate(message, prefix)
        except FieldError as exc:
            self.admission.release()
            M.ERRORS.labels("INVALID_ARGUMENT").inc()
            return route.error(event_id, code_pb2.INVALID_ARGUMENT, exc.field, str(exc))
        try:
            future = self._submit_other(route, event, deadline, links)
        except FieldError as exc:
            return route.error(event_id, code_pb2.INVALID_ARGUMENT, exc.field, str(exc))
        except Overloaded as exc:
            M.ERRORS.labels("RESOURCE_EXHAUSTED").inc()
            return route.error(event_id, code_pb2.RESOURCE_EXHAUSTED, "", str(exc))
        answer: asyncio.Future[types_pb2.ScoreResponse] = asyncio.get_running_loop().create_future()

        def settle(f: asyncio.Future[Outcome]) -> None:
            if f.cancelled():
                answer.cancel()
            elif not answer.done():
                answer.set_result(other_response(route, event_id, f.result()))

        future.add_done_callback(settle)
        return answer

    @telemetry.traced_stream("/scoring.v1.Gateway/ScoreStream")
    async def ScoreStream(
        self, request_iterator: AsyncIterator[gateway_pb2.ScoreRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[types_pb2.ScoreResponse]:
        budget_s = await self._call_budget(context)
        out: asyncio.Queue[types_pb2.ScoreResponse | None] = asyncio.Queue()
        # Unanswered events of this stream; when full the reader stops reading and gRPC flow control pushes
        # back on the client. The gateway-wide admission limit does the same when the gateway is full.
        window = asyncio.Semaphore(self.max_inflight_per_stream)
        admission = self.admission

        def answer(txid: str, future: asyncio.Future[Outcome]) -> None:
            if not future.cancelled():  # cancelled only at shutdown
                out.put_nowait(_response(txid, future.result()))

        links = tracing.stream_links()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await window.acquire()
                    kind = request.WhichOneof("event")
                    if kind is not None and kind != "transaction":
                        if not admission.try_acquire():
                            await admission.acquire()
                        slot = self._admit_other(
                            kind, getattr(request, kind), kind, event_deadline(budget_s, context.time_remaining()),
                            links)
                        if isinstance(slot, asyncio.Future):
                            slot.add_done_callback(
                                lambda f: None if f.cancelled() else out.put_nowait(f.result()))
                        else:
                            out.put_nowait(slot)
                        continue
                    txid = request.transaction.transaction_id
                    try:
                        event = validate(request.transaction, limits=self.limits)
                    except FieldError as exc:
                        out.put_nowait(_error_response(txid, code_pb2.INVALID_ARGUMENT, exc.field, str(exc)))
                        continue
                    if not admission.try_acquire():
                        await admission.acquire()  # not reading meanwhile: the client's events wait in its buffer
                    try:
                        span = tracing.start_event(txid, event.customer_id, root=True, links=links)
                        future = self._submit_admitted(event, event_deadline(budget_s, context.time_remaining()), span)
                    except FieldError as exc:
                        out.put_nowait(_error_response(txid, code_pb2.INVALID_ARGUMENT, exc.field, str(exc)))
                        continue
                    except Overloaded as exc:
                        out.put_nowait(_error_response(txid, code_pb2.RESOURCE_EXHAUSTED, "", str(exc)))
                        continue
                    future.add_done_callback(functools.partial(answer, txid))
            finally:
                # Wait for every accepted event's answer, then end the stream.
                for _ in range(self.max_inflight_per_stream):
                    await window.acquire()
                out.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                response = await out.get()
                if response is None:
                    break
                yield response
                window.release()
            await reader
        finally:
            reader.cancel()

    @telemetry.traced_stream("/scoring.v1.Gateway/ScoreBatchStream")
    async def ScoreBatchStream(
        self, request_iterator: AsyncIterator[gateway_pb2.ScoreBatchRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.ScoreBatchResponse]:
        budget_s = await self._call_budget(context)
        links = tracing.stream_links()
        # The events of one stream are admitted in the order they were sent (asyncio.Lock is FIFO): a later message
        # must not overtake an earlier one that waits for room, or a customer's later event would be folded first.
        in_order = asyncio.Lock()
        async for response in self._in_order(
            request_iterator,
            lambda request: len(request.transactions) + len(request.events),
            lambda request: self._score_batch(request, links, budget_s, context, in_order),
        ):
            yield response

    @telemetry.traced_stream("/scoring.v1.Gateway/ScoreColumnsStream")
    async def ScoreColumnsStream(
        self, request_iterator: AsyncIterator[gateway_pb2.ColumnarScoreRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.ColumnarScoreResponse]:
        budget_s = await self._call_budget(context)
        links = tracing.stream_links()
        in_order = asyncio.Lock()

        def score(request: gateway_pb2.ColumnarScoreRequest) -> Awaitable[gateway_pb2.ColumnarScoreResponse]:
            return score_columns(
                request,
                batcher=self.batcher,
                admission=self.admission,
                limits=self.limits,
                max_request_batch=self.max_request_batch,
                max_chunk=self.max_group_events,
                deadline=lambda: event_deadline(budget_s, context.time_remaining()),
                links=links,
                in_order=in_order,
            )

        async for response in self._in_order(request_iterator, lambda request: len(request.transaction_id), score):
            yield response

    async def _in_order(
        self,
        request_iterator: AsyncIterator[Request],
        size: Callable[[Request], int],
        score: Callable[[Request], Awaitable[Response]],
    ) -> AsyncIterator[Response]:
        """A stream of batches answered in order. As many are in flight as max_inflight_per_stream events allow (at
        least one batch), so a client sending small batches at a high rate is pipelined, not serialised; past the
        bound the reader stops reading and gRPC flow control pushes back on the client."""
        pending: asyncio.Queue[tuple[asyncio.Task[Response], int] | None] = asyncio.Queue()
        room = asyncio.Condition()
        inflight = 0

        async def read() -> None:
            nonlocal inflight
            try:
                async for request in request_iterator:
                    n = max(1, size(request))
                    async with room:
                        while inflight and inflight + n > self.max_inflight_per_stream:
                            await room.wait()
                        inflight += n
                    pending.put_nowait((asyncio.create_task(score(request)), n))  # type: ignore[arg-type]
            finally:
                pending.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await pending.get()
                if item is None:
                    break
                task, n = item
                response = await task
                async with room:
                    inflight -= n
                    room.notify_all()
                yield response
            await reader
        finally:
            reader.cancel()

    async def _score_batch(
        self,
        request: gateway_pb2.ScoreBatchRequest,
        links: Sequence[Link],
        budget_s: float,
        context: grpc.aio.ServicerContext,
        in_order: asyncio.Lock,
    ) -> gateway_pb2.ScoreBatchResponse:
        if len(request.events):
            return await self._score_events(request, links, budget_s, context, in_order)
        n = len(request.transactions)
        if n == 0:
            return gateway_pb2.ScoreBatchResponse(
                responses=[_error_response("", code_pb2.INVALID_ARGUMENT, "transactions", "batch is empty")]
            )
        if n > self.max_request_batch:
            message = f"transactions: batch of {n} exceeds the maximum of {self.max_request_batch}"
            return gateway_pb2.ScoreBatchResponse(
                responses=[
                    _error_response(tx.transaction_id, code_pb2.INVALID_ARGUMENT, "transactions", message)
                    for tx in request.transactions
                ]
            )
        async with in_order:
            slots = await self._admit_batch(request, links, budget_s, context)
        # One wake-up for the whole batch, not one per event: awaiting 500 futures in turn resumes this coroutine
        # once for each (measured: ~30% of the gateway's CPU at saturation).
        futures = [slot for slot in slots if isinstance(slot, asyncio.Future)]
        if futures:
            await asyncio.wait(futures)
        responses = [
            _response(tx.transaction_id, slot.result()) if isinstance(slot, asyncio.Future) else slot
            for tx, slot in zip(request.transactions, slots, strict=True)
        ]
        return gateway_pb2.ScoreBatchResponse(responses=responses)

    async def _score_events(
        self,
        request: gateway_pb2.ScoreBatchRequest,
        links: Sequence[Link],
        budget_s: float,
        context: grpc.aio.ServicerContext,
        in_order: asyncio.Lock,
    ) -> gateway_pb2.ScoreBatchResponse:
        """A batch of events of any kinds: each to its scenario's batcher, the answers in the request's order."""
        n = len(request.events)
        if len(request.transactions):
            message = "a batch holds transactions or events, not both"
            return gateway_pb2.ScoreBatchResponse(
                responses=[_error_response("", code_pb2.INVALID_ARGUMENT, "events", message)] * n)
        if n > self.max_request_batch:
            message = f"events: batch of {n} exceeds the maximum of {self.max_request_batch}"
            return gateway_pb2.ScoreBatchResponse(
                responses=[_error_response("", code_pb2.INVALID_ARGUMENT, "events", message)] * n)
        slots: list[Any] = []
        admission = self.admission
        async with in_order:
            for i, event in enumerate(request.events):
                kind = event.WhichOneof("event")
                prefix = f"events[{i}]"
                if kind is None:
                    slots.append(_error_response("", code_pb2.INVALID_ARGUMENT, prefix, "has no event"))
                    continue
                if not admission.try_acquire():
                    await admission.acquire()
                deadline = event_deadline(budget_s, context.time_remaining())
                if kind == "transaction":
                    slots.append(self._admit_transaction(event.transaction, f"{prefix}.transaction", deadline, links))
                else:
                    slots.append(self._admit_other(kind, getattr(event, kind), f"{prefix}.{kind}", deadline, links))
        futures = [slot for slot in slots if isinstance(slot, asyncio.Future)]
        if futures:
            await asyncio.wait(futures)
        return gateway_pb2.ScoreBatchResponse(
            responses=[slot.result() if isinstance(slot, asyncio.Future) else slot for slot in slots])

    def _admit_transaction(
        self, tx: types_pb2.Transaction, prefix: str, deadline: float, links: Sequence[Link]
    ) -> types_pb2.ScoreResponse | asyncio.Future[types_pb2.ScoreResponse]:
        """A transaction of a mixed batch that holds one unit of admission: its answer's future, or an error."""
        try:
            event = validate(tx, prefix, limits=self.limits)
        except FieldError as exc:
            self.admission.release()
            return _error_response(tx.transaction_id, code_pb2.INVALID_ARGUMENT, exc.field, str(exc))
        try:
            span = tracing.start_event(event.transaction_id, event.customer_id, root=True, links=links)
            future = self._submit_admitted(event, deadline, span)
        except FieldError as exc:
            return _error_response(tx.transaction_id, code_pb2.INVALID_ARGUMENT, exc.field, str(exc))
        except Overloaded as exc:
            return _error_response(tx.transaction_id, code_pb2.RESOURCE_EXHAUSTED, "", str(exc))
        answer: asyncio.Future[types_pb2.ScoreResponse] = asyncio.get_running_loop().create_future()

        def settle(f: asyncio.Future[Outcome]) -> None:
            if f.cancelled():
                answer.cancel()
            elif not answer.done():
                answer.set_result(_response(tx.transaction_id, f.result()))

        future.add_done_callback(settle)
        return answer

    async def _admit_batch(
        self,
        request: gateway_pb2.ScoreBatchRequest,
        links: Sequence[Link],
        budget_s: float,
        context: grpc.aio.ServicerContext,
    ) -> list[types_pb2.ScoreResponse | asyncio.Future[Outcome]]:
        admission = self.admission
        slots: list[types_pb2.ScoreResponse | asyncio.Future[Outcome]] = []
        for i, tx in enumerate(request.transactions):
            try:
                event = validate(tx, f"transactions[{i}]", limits=self.limits)
            except FieldError as exc:
                slots.append(_error_response(tx.transaction_id, code_pb2.INVALID_ARGUMENT, exc.field, str(exc)))
                continue
            # Each event's budget starts when it is admitted: a large batch enters as room frees up.
            if not admission.try_acquire():
                await admission.acquire()
            try:
                span = tracing.start_event(event.transaction_id, event.customer_id, root=True, links=links)
                slots.append(self._submit_admitted(event, event_deadline(budget_s, context.time_remaining()), span))
            except FieldError as exc:
                slots.append(_error_response(tx.transaction_id, code_pb2.INVALID_ARGUMENT, exc.field, str(exc)))
            except Overloaded as exc:
                slots.append(_error_response(tx.transaction_id, code_pb2.RESOURCE_EXHAUSTED, "", str(exc)))
        return slots

    @telemetry.traced_unary("/scoring.v1.Gateway/ReportLabels")
    async def ReportLabels(
        self, request: gateway_pb2.ReportLabelsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ReportLabelsResponse:
        for i, label in enumerate(request.labels):
            if not label.transaction_id:
                await _abort_invalid(context, FieldError(f"labels[{i}].transaction_id", "must not be empty"))
        remaining = context.time_remaining()
        timeout = LABELS_TIMEOUT_S if remaining is None else min(remaining, LABELS_TIMEOUT_S)
        try:
            ack = await self.features.report_labels(features_pb2.LabelBatch(labels=request.labels), timeout)
        except StageError as exc:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"labels not recorded ({exc}); retrying the same request is safe: label folds are idempotent",
            )
        return gateway_pb2.ReportLabelsResponse(accepted=ack.accepted, unknown=ack.unknown)
