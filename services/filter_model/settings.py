"""Settings of the filter model service (environment prefix FILTER_)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from scoring.common.settings import ServiceSettings


class FilterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FILTER_", extra="ignore")

    port: int = 50053
    metrics_port: int = 9466
    # Folder written by `scoring train`: model.onnx, fallback.onnx and filter.json.
    model_dir: Path = Path("artifacts/models/filter")
    # The other scenarios' filters, by scenario name (JSON: {"market": "artifacts/models/market/filter"}); a request
    # names its scenario. Empty: this filter serves the default scenario only.
    scenario_model_dirs: dict[str, Path] = {}
    # Per-scenario threshold overrides (JSON, as `threshold` for the default scenario).
    scenario_thresholds: dict[str, float] = {}
    # Events scoring below the threshold are cleared by the filter. Unset: the threshold chosen in training.
    # 0 sends every event on to the ensemble (tests and benchmarks use it).
    threshold: float | None = None
    # The release store (scoring.releases.store): a request naming a release is scored by that release's filter,
    # loaded from here on its first request (the gateway warms a release before routing events to it).
    release_dir: Path = Path("artifacts/releases")
    # Batches larger than this run in a worker thread, so a big batch never stalls the event loop.
    inline_max_rows: int = 512
