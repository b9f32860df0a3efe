"""The ``bus:`` section of ml_trading_config.yaml (validated with the rest of the trading config).

Only pydantic is imported here: :mod:`aitrader.config` includes :class:`BusSection` in
``TradingConfig``, and ``aitrader --help`` must stay light.
"""

from __future__ import annotations

import os
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from aitrader.errors import ConfigError


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {value!r}")
    return value


_Int = Annotated[int, BeforeValidator(_not_a_bool)]
_Float = Annotated[float, BeforeValidator(_not_a_bool)]

DEFAULT_URL = "redis://127.0.0.1:6379/0"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class BreakerSection(_Strict):
    """Circuit breaker of one connection: opens after ``failures`` failed calls in a row, half-opens
    after ``reset_seconds``; while it is open, published events wait in a buffer of ``buffer_max``."""

    failures: _Int = Field(5, ge=1, le=1000)
    reset_seconds: _Float = Field(30.0, gt=0, le=3600)
    buffer_max: _Int = Field(10_000, ge=1, le=10_000_000)


class BusSection(_Strict):
    """Where the bus is and how its consumers read (docs/bus.md)."""

    url: str = DEFAULT_URL  # redis://host:port/db or unix:///path/redis.sock; loopback by default
    password_env: str | None = "AITRADER_BUS_PASSWORD"  # noqa: S105 - the NAME of the variable holding the password
    username_env: str | None = "AITRADER_BUS_USERNAME"  # ACL user, likewise from the environment
    db: _Int | None = Field(None, ge=0, le=15)  # overrides the url's database
    prefix: str = Field("aitrader", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    shards: _Int = Field(4, ge=1, le=1024)  # bar streams; a symbol's bars always go to one shard
    maxlen: _Int = Field(1_000_000, ge=100, le=1_000_000_000)  # approximate cap of every stream
    block_ms: _Int = Field(200, ge=1, le=60_000)
    batch_size: _Int = Field(256, ge=1, le=100_000)
    # the trader commits its ledger once its input stayed empty this long (or after batch_size steps,
    # or block_ms after the oldest step not committed): back-to-back bars share one commit
    commit_idle_ms: _Int = Field(2, ge=0, le=60_000)
    consumer_group: str = Field("ml-pipeline", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    max_deliveries: _Int = Field(3, ge=1, le=1000)
    claim_idle_ms: _Int = Field(5_000, ge=10, le=3_600_000)
    lease_ms: _Int = Field(5_000, ge=100, le=3_600_000)  # a worker's shard lease; renewed every lease_ms/3
    max_event_bytes: _Int = Field(65_536, ge=256, le=16_777_216)
    performance_every: _Int = Field(100, ge=1, le=10_000_000)  # performance.update every N bars (and at the end)
    breaker: BreakerSection = Field(default_factory=BreakerSection)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        scheme = urlsplit(v).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"must start with redis://, rediss:// or unix://, got {v!r}")
        return v


def connection_kwargs(bus: BusSection, url: str | None = None) -> dict[str, Any]:
    """redis-py ``from_url`` arguments: the url (``--bus`` wins over the config), the db, and the
    password/user read from the environment variables the config names (never from the file)."""
    kwargs: dict[str, Any] = {"url": url or bus.url}
    scheme = urlsplit(kwargs["url"]).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"--bus {kwargs['url']!r}: use redis://HOST:PORT/DB, rediss://... or unix:///PATH")
    if bus.db is not None:
        kwargs["db"] = bus.db
    for key, env in (("password", bus.password_env), ("username", bus.username_env)):
        if env and os.environ.get(env):
            kwargs[key] = os.environ[env]
    return kwargs


def redacted(url: str) -> str:
    """``url`` without a password, for logs and status output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username + ':' if parts.username else ':'}***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()
