"""Text of the Triton model configs (`config.pbtxt`) that `repository.py` writes (and the market scenario's
container target, `scoring/scenarios/market/container.py`), and the fraud contract's names.

Small pure functions from values to protobuf text format, so the writer reads as what it writes; the test of the
repository parses their output with Triton's own `model_config.proto`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ENSEMBLE_MODEL = "fraud_ensemble"
# On the local target `fraud_ensemble` is the fused Python model; the scheduled graph stays beside it under this
# name, so that `make bench` measures the one against the other in the same run.
SCHEDULED_ENSEMBLE_MODEL = "fraud_ensemble_scheduled"
GBT_MODEL = "fraud_gbt"
SEQ_MODEL = "fraud_seq"
COMBINER_MODEL = "fraud_combiner"

FEATURES_INPUT = "FEATURES"
SEQUENCE_INPUT = "SEQUENCE"
P_GBT_OUTPUT = "P_GBT"
P_SEQ_OUTPUT = "P_SEQ"
SCORE_OUTPUT = "SCORE"


@dataclass(frozen=True)
class Tensor:
    name: str
    dims: tuple[int, ...]


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _tensors(key: str, tensors: Sequence[Tensor]) -> str:
    entries = []
    for tensor in tensors:
        dims = ", ".join(str(d) for d in tensor.dims)
        entries.append(
            f"  {{\n    name: {_quote(tensor.name)}\n    data_type: TYPE_FP32\n    dims: [ {dims} ]\n  }}"
        )
    return f"{key} [\n" + ",\n".join(entries) + "\n]\n"


def _parameters(params: dict[str, str]) -> str:
    return "".join(
        f"parameters {{\n  key: {_quote(k)}\n  value: {{ string_value: {_quote(v)} }}\n}}\n"
        for k, v in params.items()
    )


def _dynamic_batching(max_queue_delay_us: int, default_timeout_us: int, queue_policy: bool) -> str:
    text = f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n"
    if queue_policy:
        # REJECT + allow_timeout_override: a request whose remaining budget (sent per request by the client;
        # Triton only lets it shorten the default) runs out while queued is dropped by Triton instead of
        # being computed for nobody.
        text += (
            "  default_queue_policy {\n"
            "    timeout_action: REJECT\n"
            f"    default_timeout_microseconds: {default_timeout_us}\n"
            "    allow_timeout_override: true\n"
            "  }\n"
        )
    return text + "}\n"


def _instance_group(kind: str, count: int | None) -> str:
    count_line = f"\n    count: {count}" if count is not None else ""
    return f"instance_group [\n  {{\n    kind: {kind}{count_line}\n  }}\n]\n"


def model_config(
    *,
    name: str,
    backend: str | None,
    platform: str | None,
    max_batch_size: int,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    instance_kind: str,
    instance_count: int | None,
    max_queue_delay_us: int,
    default_timeout_us: int,
    queue_policy: bool,
    params: dict[str, str],
) -> str:
    text = f"name: {_quote(name)}\n"
    if platform is not None:
        text += f"platform: {_quote(platform)}\n"
    if backend is not None:
        text += f"backend: {_quote(backend)}\n"
    text += f"max_batch_size: {max_batch_size}\n"
    text += _tensors("input", inputs) + _tensors("output", outputs)
    text += _instance_group(instance_kind, instance_count)
    text += _dynamic_batching(max_queue_delay_us, default_timeout_us, queue_policy)
    text += _parameters(params)
    return text


@dataclass(frozen=True)
class Step:
    """One step of a scheduled ensemble: a model and the tensors it reads and writes, by their ensemble names."""

    model: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def scheduled_ensemble_config(
    *, name: str, max_batch_size: int, version: int, inputs: Sequence[Tensor], outputs: Sequence[Tensor],
    steps: Sequence[Step],
) -> str:
    """An `ensemble_scheduling` model over `steps`, each composing model pinned to `version`."""

    def step(s: Step) -> str:
        # Step-local and ensemble tensor names are identical on purpose: one name per tensor end to end.
        maps = "".join(f"      input_map {{ key: {_quote(t)} value: {_quote(t)} }}\n" for t in s.inputs)
        maps += "".join(f"      output_map {{ key: {_quote(t)} value: {_quote(t)} }}\n" for t in s.outputs)
        # Pinned version: the ensemble must run the composing models written together with it.
        return f"    {{\n      model_name: {_quote(s.model)}\n      model_version: {version}\n{maps}    }}"

    text = f'name: {_quote(name)}\nplatform: "ensemble"\nmax_batch_size: {max_batch_size}\n'
    text += _tensors("input", inputs) + _tensors("output", outputs)
    text += "ensemble_scheduling {\n  step [\n" + ",\n".join(step(s) for s in steps) + "\n  ]\n}\n"
    text += _parameters({"version": str(version)})
    return text


def ensemble_config(
    *, max_batch_size: int, version: int, n_features: int, seq_len: int, seq_features: int,
    name: str = ENSEMBLE_MODEL,
) -> str:
    """The fraud graph: fraud_gbt and fraud_seq side by side, fraud_combiner after them."""
    return scheduled_ensemble_config(
        name=name,
        max_batch_size=max_batch_size,
        version=version,
        inputs=[Tensor(FEATURES_INPUT, (n_features,)), Tensor(SEQUENCE_INPUT, (seq_len, seq_features))],
        outputs=[Tensor(n, (1,)) for n in (SCORE_OUTPUT, P_GBT_OUTPUT, P_SEQ_OUTPUT)],
        steps=[
            Step(GBT_MODEL, (FEATURES_INPUT,), (P_GBT_OUTPUT,)),
            Step(SEQ_MODEL, (FEATURES_INPUT, SEQUENCE_INPUT), (P_SEQ_OUTPUT,)),
            Step(COMBINER_MODEL, (P_GBT_OUTPUT, P_SEQ_OUTPUT), (SCORE_OUTPUT,)),
        ],
    )
