"""The lab: the lecture's perceptron from scratch in NumPy, and its formulas checked.

NumPy only: importing signlab.lab never loads torch (signlab.lab.slides imports it lazily, inside
its functions, for the slides' PyTorch examples). The rest of the lab lives beside it:
signlab.lab.experiments (one experiment per claim of the lecture; torch and matplotlib, so nothing here
imports it) and signlab.lab.cli (the `signlab lab` command).
"""

from signlab.lab.perceptron import ACTIVATIONS, INITS, LOSSES, TwoLayerPerceptron
from signlab.lab.training import (
    RULES,
    History,
    PerceptronResult,
    Standardiser,
    accuracy,
    batches,
    fit,
    flatten_images,
    one_hot,
    step,
    train_perceptron,
)

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "LOSSES",
    "RULES",
    "History",
    "PerceptronResult",
    "Standardiser",
    "TwoLayerPerceptron",
    "accuracy",
    "batches",
    "fit",
    "flatten_images",
    "one_hot",
    "step",
    "train_perceptron",
]
