"""What the services run of the market scenario: the tick's validation at the edge, the filter's model, and the
gateway's last resort.

Validation refuses, with INVALID_ARGUMENT naming the field: an empty or unprintable id or symbol, a sequence of 0
or past 2^53 (the rings keep it as a double), a missing or absurd timestamp, a non-finite number, a non-positive
price or size at the touch, a crossed book (bid above ask; a locked book, bid equal to ask, is accepted), a trade
side out of the enum, and a trade (side buy or sell) without a positive price and size. What needs the symbol's
state (duplicates, gaps, stale sequences) is decided by the feature service's fold, not here.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scoring.common.errors import FieldError, check_id
from scoring.scenarios.market import features as MF
from scoring.scenarios.market.labels import CLASS_NAMES, FLAT
from scoring.scenarios.market.models import Linear
from scoring.scenarios.market.online import TickBatch

MAX_SEQUENCE = 2**53
MAX_VALUE = 1e12  # prices and sizes: past this the float arithmetic of the features loses meaning
MAX_FUTURE_S = 86_400


@dataclass(frozen=True, slots=True)
class Tick:
    tick_id: str
    symbol: str
    raw: tuple[float, ...]  # features.RAW_FIELDS order

    @property
    def sequence(self) -> int:
        return int(self.raw[MF.RAW["sequence"]])


_check_id = check_id


def validate_tick(tick: object, prefix: str = "tick", now_s: float | None = None, min_event_time_s: int = 0) -> Tick:
    """A `scoring.v1.MarketTick` -> a plain `Tick`, or FieldError naming the field."""
    t = tick
    _check_id(t.tick_id, f"{prefix}.tick_id")  # type: ignore[attr-defined]
    _check_id(t.symbol, f"{prefix}.symbol")  # type: ignore[attr-defined]
    seq = int(t.sequence)  # type: ignore[attr-defined]
    if seq < 1:
        raise FieldError(f"{prefix}.sequence", "must be >= 1")
    if seq > MAX_SEQUENCE:
        raise FieldError(f"{prefix}.sequence", f"above 2^53 ({MAX_SEQUENCE})")
    if not t.HasField("timestamp"):  # type: ignore[attr-defined]
        raise FieldError(f"{prefix}.timestamp", "is required (exchange event time)")
    ts = t.timestamp  # type: ignore[attr-defined]
    if ts.seconds < min_event_time_s:
        raise FieldError(f"{prefix}.timestamp", f"is before {min_event_time_s} s since the epoch")
    if not 0 <= ts.nanos < 1_000_000_000:
        raise FieldError(f"{prefix}.timestamp", "nanos out of range")
    now_s = time.time() if now_s is None else now_s
    if ts.seconds > now_s + MAX_FUTURE_S:
        raise FieldError(f"{prefix}.timestamp", f"is more than {MAX_FUTURE_S} s in the future")
    values = {}
    for name in ("bid_price", "bid_size", "ask_price", "ask_size", "last_price", "last_size"):
        v = float(getattr(t, name)) + 0.0
        if not math.isfinite(v):
            raise FieldError(f"{prefix}.{name}", "must be finite")
        if v > MAX_VALUE:
            raise FieldError(f"{prefix}.{name}", f"above the maximum of {MAX_VALUE:g}")
        values[name] = v
    for name in ("bid_price", "bid_size", "ask_price", "ask_size"):
        if values[name] <= 0:
            raise FieldError(f"{prefix}.{name}", "must be positive")
    if values["bid_price"] > values["ask_price"]:
        raise FieldError(f"{prefix}.bid_price", f"crossed book: bid_price {values['bid_price']:g} > ask_price "
                                                 f"{values['ask_price']:g}")
    side = int(t.last_side)  # type: ignore[attr-defined]
    if side not in (0, MF.SIDE_BUY, MF.SIDE_SELL):
        raise FieldError(f"{prefix}.last_side", f"unknown value {side}")
    for name in ("last_price", "last_size"):
        if values[name] < 0 or (side != 0 and values[name] <= 0):
            raise FieldError(f"{prefix}.{name}", "must be positive for a trade" if side else "must not be negative")
    time_us = ts.seconds * 1_000_000 + ts.nanos // 1000
    raw = (float(time_us), float(seq), values["bid_price"], values["bid_size"], values["ask_price"],
           values["ask_size"], values["last_price"], values["last_size"], float(side))
    return Tick(t.tick_id, t.symbol, raw)  # type: ignore[attr-defined]


def batch_of(ticks: list[Tick]) -> TickBatch:
    raw = np.array([t.raw for t in ticks], dtype=np.float64).T.reshape(len(MF.RAW_FIELDS), len(ticks))
    return TickBatch([t.tick_id for t in ticks], [t.symbol for t in ticks], raw)


class MarketFilter:
    """The filter's model for ticks: shallow trees (ONNX) on the aggregates; a logistic regression on the tick's own
    fields when the feature service is down. Both answer class probabilities [n, 3] (down, flat, up)."""

    def __init__(self, model_dir: Path) -> None:
        import onnxruntime as ort

        meta = json.loads((model_dir / "filter.json").read_text())
        if meta.get("scenario") != "market":
            raise ValueError(f"{model_dir}: not a market filter")
        self.meta = meta
        self.threshold = float(meta["threshold"])
        self.n_features = len(meta["feature_names"])
        self.fallback_features = list(meta["fallback_features"])
        self.fallback = Linear.from_json(meta["fallback"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])

    @property
    def version(self) -> str:
        return f"market_filter:{self.meta['version']}"

    @staticmethod
    def pass_score(probs: np.ndarray) -> np.ndarray:
        """The figure the threshold applies to: the probability of a move."""
        return move_probability(probs)

    def predict(self, features: np.ndarray, *, self_contained_only: bool = False) -> np.ndarray:
        from scoring.scenarios.market.models import onnx_probabilities

        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(f"features: expected [rows, {self.n_features}], got {list(features.shape)}")
        if self_contained_only:
            return self.fallback.predict(features[:, self.fallback_features]).astype(np.float32)
        feeds = {self.session.get_inputs()[0].name: np.ascontiguousarray(features, dtype=np.float32)}
        return onnx_probabilities(self.session, feeds).astype(np.float32)


def move_probability(probs: np.ndarray) -> np.ndarray:
    """What the filter's threshold applies to: 1 - p_flat."""
    return 1.0 - probs[:, FLAT]


class MarketLastResort:
    """The gateway's in-process answer for ticks when no stage answered in time: the filter's fallback regression
    on the tick's own fields (queue imbalance, microprice, spread)."""

    def __init__(self, model_dir: Path) -> None:
        meta = json.loads((model_dir / "filter.json").read_text())
        self.model = Linear.from_json(meta["fallback"])
        self.columns = list(meta["fallback_features"])
        self.version = f"market_last_resort:{meta['version']}"

    def probabilities(self, batch: TickBatch) -> np.ndarray:
        features = MF.self_contained_features(batch.raw.T)
        return self.model.predict(features[:, self.columns])


# Class index (labels.DOWN, FLAT, UP) -> scoring.v1.Signal value.
SIGNALS: tuple[int, ...] = (1, 2, 3)


class MarketServing:
    """The gateway's view of the market scenario (`services.gateway.class_cascade.Serving`)."""

    name = "market"
    classes = len(CLASS_NAMES)
    n_features = len(MF.FEATURE_NAMES)
    seq_shape = (MF.SEQ_LEN, len(MF.SEQ_FEATURE_NAMES))
    idle_class = FLAT

    def __init__(self, filter_dir: Path) -> None:
        self._last_resort = MarketLastResort(filter_dir)
        self.last_resort_version = self._last_resort.version

    @staticmethod
    def feature_request(batch: TickBatch) -> object:
        from scoring.v1 import features_pb2

        r = batch.raw
        return features_pb2.FeatureRequest(ticks=features_pb2.TickColumns(
            tick_id=batch.tick_id, symbol=batch.symbol, sequence=r[MF.RAW["sequence"]].astype(np.int64).tolist(),
            event_time_us=r[MF.RAW["time_us"]].astype(np.int64).tolist(),
            **{name: r[MF.RAW[name]].tolist() for name in (
                "bid_price", "bid_size", "ask_price", "ask_size", "last_price", "last_size")},
            last_side=r[MF.RAW["last_side"]].astype(np.int32).tolist(),
        ))

    @staticmethod
    def self_contained(batch: TickBatch) -> np.ndarray:
        return MF.self_contained_features(batch.raw.T)

    def last_resort(self, batch: TickBatch) -> np.ndarray:
        return self._last_resort.probabilities(batch)

    @staticmethod
    def pass_score(probs: np.ndarray) -> np.ndarray:
        return move_probability(probs)

    @staticmethod
    def fold_verdicts(batch: TickBatch, status: np.ndarray) -> tuple[dict[int, str], dict[int, str]]:
        refused = {
            int(i): f"tick.sequence: {int(batch.raw[MF.RAW['sequence'], i])} is older than the last tick folded for "
                    f"symbol {batch.symbol[i]!r}"
            for i in np.flatnonzero(status == MF.STALE)
        }
        flagged = {int(i): "sequence_gap" for i in np.flatnonzero(status == MF.GAP)}
        return refused, flagged

    @staticmethod
    def empty() -> TickBatch:
        return TickBatch.empty()

    # The edge: validation, ids, answers.
    validate = staticmethod(validate_tick)

    @staticmethod
    def event_id(message: object) -> str:
        return str(message.tick_id)  # type: ignore[attr-defined]

    @staticmethod
    def plain_id(tick: Tick) -> str:
        return tick.tick_id

    @staticmethod
    def entity(tick: Tick) -> str:
        return tick.symbol

    @staticmethod
    def respond(tick_id: str, outcome: object) -> object:
        from google.rpc import code_pb2

        from scoring.v1 import types_pb2

        o = outcome
        probs = o.probs or (0.0, 0.0, 0.0)  # type: ignore[attr-defined]
        response = types_pb2.ScoreResponse(
            tick_id=tick_id,
            score=o.score,  # type: ignore[attr-defined]
            stage=int(o.stage),  # type: ignore[attr-defined]  # the cascade's stage codes are the enum's values
            degraded=bool(o.degraded_reason) or bool(o.error),  # type: ignore[attr-defined]
            degraded_reason=o.error or o.degraded_reason,  # type: ignore[attr-defined]
            model_version=o.model_version,  # type: ignore[attr-defined]
            filter_score=o.filter_score,  # type: ignore[attr-defined]
            signal=SIGNALS[o.signal] if o.signal >= 0 else 0,  # type: ignore[attr-defined]
            p_down=probs[0], p_flat=probs[1], p_up=probs[2],
        )
        if o.error:  # type: ignore[attr-defined]
            response.error.CopyFrom(types_pb2.EventError(
                code=code_pb2.UNAVAILABLE, message=f"no stage could score the event: {o.error}"))  # type: ignore[attr-defined]
        return response

    @staticmethod
    def error(tick_id: str, code: int, field: str, message: str) -> object:
        from google.rpc import code_pb2

        from scoring.v1 import types_pb2

        return types_pb2.ScoreResponse(
            tick_id=tick_id, stage=types_pb2.STAGE_NONE, degraded=True,
            degraded_reason="invalid_argument" if code == code_pb2.INVALID_ARGUMENT else "rejected",
            error=types_pb2.EventError(code=code, field=field, message=message),
        )

    concat_items = staticmethod(lambda items: concat_items(items))
    dedup_key = staticmethod(lambda tick: dedup_key(tick))


def concat_items(items: list[object]) -> TickBatch:
    """A micro-batch of ticks from the batcher's queued items (single ticks, or TickBatch groups)."""
    parts: list[TickBatch] = []
    singles: list[Tick] = []
    for item in items:
        event = getattr(item, "event", None)
        if event is not None:
            singles.append(event)
            continue
        if singles:
            parts.append(batch_of(singles))
            singles = []
        parts.append(item.batch)  # type: ignore[attr-defined]
    if singles:
        parts.append(batch_of(singles))
    return TickBatch.concat(parts)


def dedup_key(tick: Tick) -> str:
    """A tick is named by its symbol and sequence: a re-sent one (same tick_id, or same symbol and sequence) gets
    the first answer."""
    return f"{tick.symbol}\x1f{tick.sequence}"


__all__ = [
    "CLASS_NAMES", "MarketFilter", "MarketLastResort", "MarketServing", "Tick", "batch_of", "concat_items",
    "dedup_key", "move_probability", "validate_tick",
]
