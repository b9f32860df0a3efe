"""aitrader: a command-line model lifecycle toolkit for algorithmic trading.

Importing the package is cheap: heavy libraries (pandas, numpy, lightgbm, xgboost,
onnxruntime, scikit-learn) are imported only by the modules that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
