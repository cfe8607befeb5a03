"""The lecture's two-layer perceptron ỹ = σ(U σ(Wx)) on flattened standardised pixels."""

from __future__ import annotations

from torch import nn

from signlab.errors import UserError
from signlab.models import register_model

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


class MLP(nn.Module):
    """The two-layer perceptron in torch, with biases (signlab.lab.TwoLayerPerceptron is the NumPy one):
    x (B, 3, H, W) -> flatten -> W -> σ -> U -> logits (B, classes).

    The output σ of the slides is left to the loss: softmax inside cross-entropy, or a sigmoid before the
    squared error (train applies it), so the same module serves both losses.
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, activation: str) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise UserError(f"activation {activation}: unknown; use one of {', '.join(ACTIVATIONS)}")
        self.flatten = nn.Flatten()
        self.W = nn.Linear(in_features, hidden)
        self.act = ACTIVATIONS[activation]()
        self.U = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.U(self.act(self.W(self.flatten(x))))  # (B, classes)


@register_model
def mlp(num_classes: int = 43, image_size: int = 32, hidden: int = 512, activation: str = "relu",
        in_channels: int = 3) -> nn.Module:
    return MLP(in_channels * image_size * image_size, hidden, num_classes, activation)


# Without BatchNorm the perceptron diverges at the CNNs' peak learning rate of 0.1 (measured on GTSRB: the loss
# reached 1e31 in epoch 2); 0.02 trains stably.
mlp.train_defaults = {"lr": 0.02}
