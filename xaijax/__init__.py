"""xaijax: visual explanations of image CNNs in JAX/Flax."""

__version__ = "0.1.0"

from xaijax import models
from xaijax import nn
from xaijax import viz
from xaijax import data
from xaijax import methods
from xaijax import metrics
from xaijax import interpretation
from xaijax import train
from xaijax.methods import Explanation
from xaijax.methods import explain
from xaijax.evaluation import EvaluationTable
from xaijax.evaluation import evaluate
from xaijax import dataset
from xaijax.dataset import run_dataset
