"""Feature registry, batch and streaming evaluators, and targets (see docs/architecture.md)."""

from __future__ import annotations

from aitrader.features.pipeline import FeaturePipeline
from aitrader.features.registry import GROUPS, FeatureRegistry, FeatureSpec

__all__ = ["GROUPS", "FeaturePipeline", "FeatureRegistry", "FeatureSpec"]
