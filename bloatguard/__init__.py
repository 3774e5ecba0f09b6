"""bloatguard: a linter that keeps machine-learning model files within their budgets."""

__version__ = "0.1.0"
