import numpy as np
import torch
from conftest import make_gtsrb_train
from PIL import Image

from signlab.layouts import list_entries
from signlab.preprocess import Preprocessing


def test_to_tensor_standardises_each_channel_and_keeps_nhwc_memory():
    images = np.zeros((2, 4, 4, 3), np.uint8)
    images[..., 0], images[..., 1], images[..., 2] = 255, 51, 0
    pre = Preprocessing(image_size=4, mean=(0.5, 0.2, 0.0), std=(0.5, 0.1, 1.0))
    x = pre.to_tensor(images, torch.device("cpu"))  # (2, 3, 4, 4)
    assert x.shape == (2, 3, 4, 4) and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x[:, 0], torch.ones(2, 4, 4))  # (1.0 - 0.5) / 0.5
    assert torch.allclose(x[:, 1], torch.zeros(2, 4, 4), atol=1e-6)  # (0.2 - 0.2) / 0.1
    assert torch.allclose(x[:, 2], torch.zeros(2, 4, 4))


def test_round_trip_through_a_dict():
    pre = Preprocessing(48, "full", "none", (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), 1000)
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def test_decode_crops_to_the_roi_unless_told_to_keep_the_frame(tmp_path):
    root = make_gtsrb_train(tmp_path / "g", classes=(0,), tracks=1, frames=1)
    _, _, entries, _, _ = list_entries(root)
    e = entries[0]
    roi_crop, _ = Preprocessing(crop="roi").decode(e.path, e.roi, e.csv_size)
    full, _ = Preprocessing(crop="full").decode(e.path, e.roi, e.csv_size)
    # The sign (class 0: red) fills the ROI crop; the whole frame has a grey border around it.
    assert roi_crop[..., 0].mean() > 150 and full[..., 0].mean() < roi_crop[..., 0].mean() - 20
    assert np.array_equal(full, np.asarray(Image.open(e.path).convert("RGB").resize((32, 32),
                                                                                    Image.Resampling.BILINEAR)))


def test_call_is_normalize_then_to_tensor():
    images = np.random.default_rng(0).integers(0, 120, (3, 8, 8, 3), dtype=np.uint8)  # dark: equalising changes it
    pre = Preprocessing(image_size=8, contrast="equalize")
    cpu = torch.device("cpu")
    assert torch.equal(pre(images, cpu), pre.to_tensor(pre.normalize(images), cpu))
    assert not torch.equal(pre(images, cpu), pre.to_tensor(images, cpu))
