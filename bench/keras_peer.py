"""The peer: the reference recipe in Keras 3 on the TensorFlow CPU backend. Run by bench/records.py in its own
virtual environment (it never imports signlab or torch).

    python bench/keras_peer.py DATA.npz --epochs 8 --out peer.json

DATA.npz holds x_train, y_train, x_val, y_val (NHWC uint8) as signlab decoded and split them, so both
frameworks see the same pixels. Network: six 3x3 conv-BN-ReLU of widths 32-32-64-64-128-128 with 2x2
max-pooling after each pair but the last, global average pooling, dense 43 (293k parameters). SGD with
Nesterov momentum 0.9, one-cycle learning rate (peak 0.1), label smoothing 0.1, batch 128, random affine
augmentation and contrast jitter with Keras layers.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np


def build(keras, mean, std):
    layers = keras.layers
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    # Augment on the 0..255 scale: Keras 3's RandomContrast clips to its value_range (0, 255), which would
    # wipe out every negative value of standardised inputs (the first run here did that: 35 % accuracy).
    x = layers.Rescaling(1.0)(inputs)  # uint8 -> float
    x = layers.RandomRotation(10 / 360, fill_mode="constant", fill_value=float(mean.mean() * 255))(x)
    x = layers.RandomZoom(0.1, fill_mode="constant", fill_value=float(mean.mean() * 255))(x)
    x = layers.RandomTranslation(0.1, 0.1, fill_mode="constant", fill_value=float(mean.mean() * 255))(x)
    x = layers.RandomContrast(0.2, value_range=(0, 255))(x)
    x = layers.Rescaling(1 / 255.0)(x)
    x = layers.Normalization(mean=mean, variance=std**2)(x)
    for i, width in enumerate((32, 64, 128)):
        for _ in range(2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        if i < 2:
            x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(43, dtype="float32")(x)
    return keras.Model(inputs, outputs)


def one_cycle(keras, peak: float, total: int):
    ops = keras.ops

    class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = ops.cast(step, "float32")
            warm = max(1.0, 0.2 * total)
            rise = peak * (0.05 + 0.95 * step / warm)
            progress = ops.clip((step - warm) / max(1.0, total - warm), 0.0, 1.0)
            fall = peak * (0.001 + 0.999 * 0.5 * (1 + ops.cos(math.pi * progress)))
            return ops.where(step < warm, rise, fall)

    return OneCycle()


def compile_model(keras, policy: str, mean, std, total_steps: int):
    keras.mixed_precision.set_global_policy(policy)
    model = build(keras, mean, std)
    opt = keras.optimizers.SGD(one_cycle(keras, 0.1, total_steps), momentum=0.9, nesterov=True)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
    return model


def images_per_second(keras, policy, data, mean, std) -> float:
    """A short timing to choose between float32 and mixed_bfloat16, as a Keras user tuning speed would."""
    model = compile_model(keras, policy, mean, std, 100)
    x, y = data["x_train"][:128 * 12], keras.utils.to_categorical(data["y_train"][:128 * 12], 43)
    model.fit(x[:256], y[:256], batch_size=128, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=1, verbose=0)
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import keras
    import tensorflow as tf

    data = dict(np.load(args.data))
    x_train = data["x_train"]
    mean = (x_train.reshape(-1, 3) / 255.0).mean(0)
    std = (x_train.reshape(-1, 3) / 255.0).std(0)
    speeds = {p: images_per_second(keras, p, data, mean, std) for p in ("float32", "mixed_bfloat16")}
    policy = max(speeds, key=speeds.get)
    steps = len(x_train) // args.batch_size
    model = compile_model(keras, policy, mean, std, steps * args.epochs)
    y_train = keras.utils.to_categorical(data["y_train"], 43)
    y_val = keras.utils.to_categorical(data["y_val"], 43)
    rng = np.random.default_rng(0)
    curve, train_seconds = [], 0.0
    for epoch in range(args.epochs):
        order = rng.permutation(len(x_train))[: steps * args.batch_size]
        start = time.perf_counter()
        model.fit(x_train[order], y_train[order], batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
        seconds = time.perf_counter() - start
        train_seconds += seconds
        _, val_acc = model.evaluate(data["x_val"], y_val, batch_size=512, verbose=0)
        curve.append({"epoch": epoch + 1, "val_accuracy": float(val_acc), "train_seconds": train_seconds,
                      "images_per_second": len(order) / seconds})
        print(json.dumps(curve[-1]), flush=True)
    result = {"framework": f"keras {keras.__version__} / tensorflow {tf.__version__}", "policy": policy,
              "policy_speeds": speeds, "parameters": model.count_params(), "curve": curve}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
