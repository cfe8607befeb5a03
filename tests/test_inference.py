"""Inference in fp32 (bf16 "off" stated): the numbers are compared at fp32 tolerance."""

import numpy as np
import pytest
import torch

from signlab.inference import TTA_VIEWS, predict_logits, tta_probabilities
from signlab.models import create_model
from signlab.preprocess import Preprocessing


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("signnet", num_classes=5, widths=(8, 16), depth=1).eval()


def test_tta_gives_the_mean_of_the_views_probabilities(model):
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    pre = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    cpu = torch.device("cpu")
    plain = predict_logits(model, images, pre, cpu, batch_size=4, bf16="off")
    tta = predict_logits(model, images, pre, cpu, batch_size=4, bf16="off", tta=True)
    probs = torch.softmax(tta, 1)
    assert tta.shape == plain.shape == (6, 5)
    assert torch.allclose(probs.sum(1), torch.ones(6)) and torch.allclose(probs, tta.exp(), atol=1e-6)
    assert not torch.allclose(probs, torch.softmax(plain, 1), atol=1e-4)  # the other views count
    x = (torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        identity_only = tta_probabilities(model, x, views=TTA_VIEWS[:1])
        assert torch.allclose(identity_only, torch.softmax(model(x), 1), atol=1e-5)
        assert torch.allclose(tta_probabilities(model, x), probs, atol=1e-5)


def test_batch_size_does_not_change_the_logits(model):
    images = np.random.default_rng(1).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    pre = Preprocessing()
    cpu = torch.device("cpu")
    one = predict_logits(model, images, pre, cpu, batch_size=10, bf16="off")
    chunks = predict_logits(model, images, pre, cpu, batch_size=3, bf16="off")
    assert torch.allclose(one, chunks, atol=1e-5)
