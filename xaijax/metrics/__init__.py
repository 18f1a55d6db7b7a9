"""Metrics of explanations: per-image values, batched and jit-compiled (the caller averages)."""

from xaijax.metrics.adversarial import bound_violation
from xaijax.metrics.adversarial import violation_summary
