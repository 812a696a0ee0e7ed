"""Settings of the feature service (environment prefix FEATURES_)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from scoring.common.settings import ServiceSettings


class FeatureSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FEATURES_", extra="ignore")

    port: int = 50052
    metrics_port: int = 9465
    # REDIS_URL is honoured too: it is the one name the launcher, compose and Kubernetes share for Redis.
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", validation_alias=AliasChoices("FEATURES_REDIS_URL", "REDIS_URL")
    )
    # A Redis Cluster rather than one Redis (a redis+cluster:// URL says the same): the URL names any one node.
    redis_cluster: bool = False
    # Hash-tag shards per entity kind on a cluster: a fold is one script call per shard its batch touches, and a
    # label batch one call per shard. More shards spread the state over more masters (at most one master per
    # shard is used); changing it orphans the state kept under the old tags.
    redis_shards: int = Field(default=16, ge=1, le=1024)
    redis_timeout_s: float = 0.5
    # Labels have a budget of their own (seconds, not an event's milliseconds): a label fold waits its turn between
    # event folds on a connection of its own, and a Redis timeout is retried within this budget (label folds are
    # idempotent). Less than the gateway's 15 s, so the answer says what happened.
    labels_timeout_s: float = 10.0
    redis_max_connections: int = 32
    # How long per-entity state and label routing survive without traffic (wall clock): longer than the realistic
    # label tail (60 days, scoring/scenarios/fraud/label_delay.py), so a late label still finds its transaction.
    state_ttl_s: int = 65 * 86_400
