"""Metrics of explanations: per-image values, batched and jit-compiled (the caller averages)."""

from xaijax.metrics.adversarial import bound_violation
from xaijax.metrics.adversarial import violation_summary
from xaijax.metrics.faithfulness import CausalCurve
from xaijax.metrics.faithfulness import DropIncrease
from xaijax.metrics.faithfulness import average_drop
from xaijax.metrics.faithfulness import deletion
from xaijax.metrics.faithfulness import drop_increase
from xaijax.metrics.faithfulness import insertion
from xaijax.metrics.localisation import bbox_score
from xaijax.metrics.localisation import boxes_to_masks
from xaijax.metrics.localisation import energy_pointing_game
from xaijax.metrics.localisation import miou
from xaijax.metrics.localisation import pointing_game
from xaijax.metrics.robustness import RandomisationCheck
from xaijax.metrics.robustness import max_sensitivity
from xaijax.metrics.robustness import randomisation_check
from xaijax.metrics.robustness import randomise_layers
