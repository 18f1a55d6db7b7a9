"""Explanation by interpretation (Oramas et al. 2019): relevant filters by μ-Lasso, their visual
feedback, average images and ablation."""

from xaijax.interpretation.lasso import mu_lasso
from xaijax.interpretation.relevant import FEEDBACKS
from xaijax.interpretation.relevant import Interpretation
from xaijax.interpretation.relevant import RelevantFilters
from xaijax.interpretation.relevant import ablate_filters
from xaijax.interpretation.relevant import average_images
from xaijax.interpretation.relevant import descriptor_layers
from xaijax.interpretation.relevant import descriptors
from xaijax.interpretation.relevant import explain_by_interpretation
from xaijax.interpretation.relevant import fit_relevant_filters
from xaijax.interpretation.relevant import random_filters
from xaijax.interpretation.relevant import receptive_fields
