"""signlab: traffic-sign recognition with neural networks, from the lecture's perceptron to a fast CNN."""

__version__ = "0.1.0"
