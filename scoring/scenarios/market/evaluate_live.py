"""Live evaluation of the market scenario: the test part's ticks through a running gateway, against the offline
cascade over the same ticks (`scoring evaluate --scenario market --live`).

The ticks go on ScoreBatchStream with a long per-event budget (`x-scoring-budget-ms`), so every stage answers in
full; their symbols get a prefix of their own, so that the stack's rings start empty as the offline computation
does. Offline, the features of the same replayed ticks come from `features.compute_offline` and the scores from
the exported graphs (`evaluate.Served`) and the stacker: what differs is the serving path alone.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from scoring.replay import budget_metadata
from scoring.scenarios.market import features as MF
from scoring.scenarios.market import labels as ML
from scoring.scenarios.market import models as MM
from scoring.scenarios.market.evaluate import Served, cascade, classification
from scoring.scenarios.market.pipeline import REPORT, MarketTrainConfig, build_dataset, model_dirs
from scoring.scenarios.market.replay import frame_ticks
from scoring.v1 import gateway_pb2, gateway_pb2_grpc


async def _live(address: str, requests: list[gateway_pb2.ScoreRequest], batch: int,
                budget_ms: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    probs = np.zeros((len(requests), 3))
    signal = np.zeros(len(requests), np.int8)
    problems: list[str] = []

    # One batch in flight at a time, as a feed replayed message by message: this measures what the models answer,
    # and a pipelined flood at a long budget would teach the gateway's admission limit a load it then keeps.
    answered = asyncio.Event()

    async def messages():  # type: ignore[no-untyped-def]
        for lo in range(0, len(requests), batch):
            answered.clear()
            yield gateway_pb2.ScoreBatchRequest(events=requests[lo : lo + batch])
            await answered.wait()

    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        i = 0
        async for reply in stub.ScoreBatchStream(messages(), timeout=600, metadata=budget_metadata(budget_ms)):
            for response in reply.responses:
                if response.HasField("error") or response.degraded:
                    problems.append(f"{response.tick_id}: {response.degraded_reason} {response.error.message}")
                probs[i] = (response.p_down, response.p_flat, response.p_up)
                signal[i] = response.signal - 1  # scoring.v1.Signal -> class index
                i += 1
            answered.set()
    return probs, signal, problems


async def evaluate_live(artifacts: Path, address: str, *, max_ticks: int | None = None, batch: int = 200,
                        budget_ms: float = 1000.0) -> dict[str, Any]:
    report = json.loads((artifacts / REPORT).read_text())
    config = MarketTrainConfig(**report["config"])
    data = build_dataset(config)
    frame = data.frame.loc[_test_part(data)].reset_index(drop=True)
    if max_ticks is not None:
        frame = frame.iloc[:max_ticks]
    y = ML.labels(frame, config.horizon, data.alpha)
    features, sequences, _ = MF.compute_offline(frame)
    filter_dir, ensemble_dir = model_dirs(artifacts)
    meta = json.loads((filter_dir / "filter.json").read_text())
    ens = json.loads((ensemble_dir / "ensemble.json").read_text())
    served = Served.from_files(filter_dir / "model.onnx", ensemble_dir / "gbt.onnx", ensemble_dir / "seq.onnx")
    p_ens = MM.Linear.from_json(ens["stacker"]).predict(MM.stack_inputs(served.gbt(features),
                                                                        served.seq(features, sequences)))
    p_off, s_off, passed = cascade(served.filter(features), p_ens, meta["threshold"], ens["tau"])

    started = time.perf_counter()
    p_live, s_live, problems = await _live(address, frame_ticks(frame, f"live{int(time.time())}-"), batch,
                                           budget_ms)
    elapsed = time.perf_counter() - started
    labelled = y != ML.NO_LABEL
    offline = classification(y[labelled], s_off[labelled])
    live = classification(y[labelled], s_live[labelled])
    return {
        "ticks": len(frame), "labelled": int(labelled.sum()), "seconds": elapsed,
        "ensemble_share": float(passed.mean()),
        "max_probability_difference": float(np.abs(p_live - p_off).max()),
        "signals_differing": int((s_live != s_off).sum()),
        "degraded_or_errors": len(problems), "problems": problems[:5],
        "offline": offline, "live": live,
        "live_minus_offline": {k: live[k] - offline[k] for k in offline},
    }


def _test_part(data: Any) -> np.ndarray:
    """The test part's ticks, with each symbol's last unlabelled ones (a feed has them too)."""
    position = data.frame.groupby("symbol", sort=False).cumcount().to_numpy()
    count = data.frame.groupby("symbol", sort=False)["sequence"].transform("size").to_numpy()
    return position / np.maximum(count - 1, 1) >= 0.79


def format_live(result: dict[str, Any]) -> str:
    d = result["live_minus_offline"]
    return (f"market live: {result['ticks']:,} ticks through the gateway in {result['seconds']:.1f} s; max |live - "
            f"offline| class probability {result['max_probability_difference']:.2e}, signals differing "
            f"{result['signals_differing']}, degraded or errors {result['degraded_or_errors']}; macro-F1 live "
            f"{result['live']['macro_f1']:.4f} offline {result['offline']['macro_f1']:.4f} (diff {d['macro_f1']:+.4f}),"
            f" MCC diff {d['mcc']:+.4f}; ensemble share {result['ensemble_share']:.1%}")
