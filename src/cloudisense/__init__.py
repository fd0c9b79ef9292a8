"""CloudiSENSE: a modular operations server with a built-in AI operations assistant."""

__version__ = "0.1.0"
