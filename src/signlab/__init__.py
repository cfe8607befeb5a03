"""signlab: traffic-sign recognition with neural networks, from the lecture's perceptron to a fast CNN.

The library API (signlab.api) loads lazily, so `import signlab` and the NumPy lab (signlab.lab) do not load
torch:

    import signlab
    model = signlab.load("runs/demo")
    print(model.predict("sign.png")[0].name)
"""

__version__ = "0.1.0"

_API = ("load", "train", "evaluate", "Classifier", "Detector", "Prediction", "ClassScore")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from signlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'signlab' has no attribute {name!r}")
