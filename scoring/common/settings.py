"""Settings base shared by every service: environment variables with one prefix per service.

Each service defines one subclass (`GATEWAY_`, `FILTER_`, `FEATURES_`, ...). The same names drive the local
launcher, docker compose and Kubernetes.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Fields every gRPC service has. Subclasses set `model_config` with their own env prefix."""

    model_config = SettingsConfigDict(extra="ignore")

    host: str = "127.0.0.1"
    port: int = 0
    # Time given to in-flight RPCs on SIGTERM before the server cancels them.
    shutdown_grace_s: float = 5.0
    log_level: str = "INFO"
    # Prometheus /metrics endpoint (0: off).
    metrics_port: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
