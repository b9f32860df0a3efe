"""One exception hierarchy for the whole library.

The CLI catches :class:`AitraderError` in one place (``aitrader.cli.main``) and prints
``error: <message>`` on stderr with exit code 1 (or ``exit_code`` when a subclass sets it).
Messages name the bad value, what was expected and the fix.
"""

from __future__ import annotations


class AitraderError(Exception):
    """Root of every error aitrader raises on purpose; anything else is a bug."""

    exit_code: int = 1


class ConfigError(AitraderError):
    """A configuration file or option is missing, malformed or has an invalid value."""


class DataError(AitraderError):
    """Bar data cannot be read, fails validation, or is too short for the request."""


class FeatureError(AitraderError):
    """A feature name is unknown or a feature definition is invalid."""


class FeatureMismatchError(FeatureError):
    """A pipeline cannot produce exactly the feature contract a model was trained with."""


class ModelError(AitraderError):
    """A model cannot be built, fitted, exported or loaded."""


class ModelNotFittedError(ModelError):
    """``predict`` (or anything needing learned state) was called before ``fit``."""


class RegistryError(AitraderError):
    """The model registry cannot complete an operation (bad name, unwritable root, ...)."""


class IntegrityError(RegistryError):
    """A registered file's SHA256 differs from the one recorded at registration."""


class ModelNotFoundError(RegistryError):
    """A model id (``NAME`` or ``NAME:vN``) or alias is not in the registry."""


class TrustError(RegistryError):
    """A pickle-based artifact was asked to load without having been registered as trusted."""


class DeployCheckError(RegistryError):
    """A pre-deploy check failed; nothing was promoted."""


class PluginError(AitraderError):
    """A plug-in a command needs is missing, broken, or installed at another version than a model recorded."""


class RiskLimitError(AitraderError):
    """An order or position would break a configured risk limit."""


class TradingError(AitraderError):
    """The paper-trading loop cannot start or continue (bad run id, ledger mismatch, ...)."""


class BusError(AitraderError):
    """The Redis Streams bus cannot be reached or used (bad url, buffer full while it is down, ...)."""


class LockHeldError(AitraderError):
    """Another process holds the lock for this job (e.g. a retrain already running)."""

    exit_code = 4
