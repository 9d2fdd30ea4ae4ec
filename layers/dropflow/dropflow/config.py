"""Typed configuration, read once from the environment and validated.

Adapters are chosen by URL scheme, never by `if local:` branches in domain code:
  DROPFLOW_STORE_URL     file:///abs/dir | s3://bucket[/prefix]
  DROPFLOW_REGISTRY_URL  sqlite:///abs/file.db | dynamodb://table
  DROPFLOW_COMPUTE_URL   process:///abs/dir | ec2://<launch-template-id>
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from dropflow.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DROPFLOW_", extra="ignore")

    store_url: str = Field(pattern=r"^(file|s3)://.+")
    registry_url: str = Field(pattern=r"^(sqlite|dynamodb)://.+")
    compute_url: str = Field(default="", pattern=r"^((process|ec2)://.+)?$")
    # How long the predict function trusts its cached champion pointer.
    champion_ttl_seconds: float = Field(default=5.0, ge=0, le=3600)
    # Attempts per job before it is failed (a spec may lower it).
    max_attempts: int = Field(default=3, ge=1, le=20)
    # How long an idempotency claim on (model, data version) is kept.
    claim_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)


def load_settings() -> Settings:
    """Settings from the environment; a ConfigError names each missing or wrong variable."""
    try:
        return Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            var = "DROPFLOW_" + str(err["loc"][0]).upper() if err["loc"] else "DROPFLOW_*"
            problems.append(f"{var}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, read once (at cold start in a Lambda)."""
    return load_settings()
