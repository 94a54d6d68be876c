"""cbloop: contextual-bandit personalization service (shared core)."""

__version__ = "0.1.0"
