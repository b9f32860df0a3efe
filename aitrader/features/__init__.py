"""Feature registry, batch and streaming evaluators, and targets (see docs/architecture.md).

``FeaturePipeline`` (numpy/pandas) is imported on first use, so reading the registry (``aitrader
features list``) stays free of pandas."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aitrader.features.registry import GROUPS, FeatureRegistry, FeatureSpec

if TYPE_CHECKING:
    from aitrader.features.pipeline import FeaturePipeline

__all__ = ["GROUPS", "FeaturePipeline", "FeatureRegistry", "FeatureSpec"]


def __getattr__(name: str) -> Any:
    if name == "FeaturePipeline":
        from aitrader.features.pipeline import FeaturePipeline

        return FeaturePipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
