"""The ``long_scaled`` strategy: long only, the position scaled by the model's confidence.

Below ``min_confidence``, or for a prediction of a fall, it holds nothing; otherwise it holds
``position_size * confidence`` of equity (a fully confident prediction gets the whole size).
"""

from __future__ import annotations

import math

from aitrader.trading.strategy import ConfidenceModel, Decision


class LongScaledStrategy:
    """prediction -> Decision (direction 0 or 1, confidence, target fraction of equity)."""

    def __init__(self, confidence: ConfidenceModel, *, min_confidence: float, position_size: float) -> None:
        self.confidence = confidence
        self.min_confidence = min_confidence
        self.position_size = position_size

    def decide(self, raw_prediction: float) -> Decision:
        score, conf = self.confidence.score(raw_prediction)
        if math.isnan(score) or score <= 0.0 or conf < self.min_confidence:
            return Decision(0, conf, 0.0)
        return Decision(1, conf, self.position_size * conf)
