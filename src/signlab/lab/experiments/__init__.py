"""The lab's experiments: one per claim of the lecture, each regenerating its evidence in minutes on a CPU.

Every experiment is `run_NAME(data=None, out=Path("runs/lab"), budget="full") -> dict`: data is None
(signlab's drawn-sign default set), a folder or an ImageSet; it prints a table, writes out/NAME.png and returns its
numbers, with "table" (the printed text), "png" (the plot's path) and "finite" (whether all numbers are).
budget "smoke" runs the same code on a few hundred images for a moment, for tests.
"""

from collections.abc import Callable

from signlab.lab.experiments.approximation import run_approximation
from signlab.lab.experiments.basics import run_descent, run_init, run_loss, run_standardise
from signlab.lab.experiments.depth import run_depth
from signlab.lab.experiments.nets import run_filters, run_mlp_vs_cnn, run_vanishing_gradient
from signlab.lab.experiments.pooling import run_pooling
from signlab.lab.experiments.regions import run_regions
from signlab.lab.experiments.transfer import run_synthetic_to_real

# name -> (one-line description, function), in the lecture's order
EXPERIMENTS: dict[str, tuple[str, Callable[..., dict]]] = {
    "approximation": ("the perceptron vs polynomials vs Fourier series on 1-D functions, at equal parameter counts",
                      run_approximation),
    "regions": ("how H = 2…32 hidden ReLU units cut the plane into regions, on XOR, moons and spirals",
                run_regions),
    "standardise": ("raw pixels vs pixels standardised by the training set's mean and std", run_standardise),
    "descent": ("gradient descent vs SGD vs mini-batch: loss per example seen and per second", run_descent),
    "loss": ("squared error vs cross-entropy: learning curves of the perceptron", run_loss),
    "init": ("N(0, 0.1) vs He/Glorot initialisation, per hidden activation", run_init),
    "vanishing-gradient": ("gradient norm per layer of a 6-layer sigmoid vs ReLU net, at init and trained",
                           run_vanishing_gradient),
    "depth": ("ReLU MLPs with 1-8 hidden layers and CNNs with 2-8 conv layers at equal parameters; ablations",
              run_depth),
    "mlp-vs-cnn": ("the perceptron vs a CNN with the same number of parameters", run_mlp_vs_cnn),
    "filters": ("a CNN's first-layer filters as images, and their feature maps of one sign", run_filters),
    "pooling": ("max-pool vs strided convs vs no downsampling: accuracy on shifted and zoomed signs", run_pooling),
    "synthetic-to-real": ("rendered signs only vs a few real tracks vs both, tested on real photos (needs --data)",
                          run_synthetic_to_real),
}

__all__ = ["EXPERIMENTS", "run_approximation", "run_depth", "run_descent", "run_filters", "run_init", "run_loss",
           "run_mlp_vs_cnn", "run_pooling", "run_regions", "run_standardise", "run_synthetic_to_real",
           "run_vanishing_gradient"]
