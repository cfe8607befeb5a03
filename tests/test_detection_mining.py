"""Hard-negative mining (signlab.detection.mining) and the crops it places (detection.train.sample_crop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_gtsrb_train

from signlab.api import train
from signlab.detection import mining
from signlab.detection.train import sample_crop
from signlab.errors import UserError


class StubFinder:
    """Proposes the boxes it was given, with their scores, whatever the scene."""

    def __init__(self, boxes, scores):
        self.boxes, self.scores = torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores)

    def propose(self, scene, threshold):
        keep = self.scores >= threshold
        return self.boxes[keep], self.scores[keep], torch.zeros(int(keep.sum()), dtype=torch.long)


def test_negatives_are_the_proposals_that_cover_no_sign():
    signs = np.array([[10, 10, 29, 29]], np.float32)
    finder = StubFinder([[11, 10, 30, 29], [100, 50, 119, 69], [200, 5, 215, 20], [300, 5, 320, 25]],
                        [0.9, 0.6, 0.3, 0.1])  # on the sign; two false positives; one below MINE_THRESHOLD
    negatives = mining.scene_negatives(finder, np.zeros((100, 400, 3), np.uint8), signs)
    assert negatives.dtype == np.float32
    assert negatives.tolist() == [[100, 50, 119, 69], [200, 5, 215, 20]]


def test_a_second_proposal_on_a_found_sign_is_a_negative_too():
    """As in the evaluation (metrics.match_any_class): one proposal per sign; the crop's targets still hold the
    sign, so centring a crop there teaches only that the duplicate is wrong."""
    signs = np.array([[10, 10, 29, 29]], np.float32)
    finder = StubFinder([[10, 10, 29, 29], [11, 11, 30, 30]], [0.9, 0.8])
    assert mining.scene_negatives(finder, np.zeros((64, 64, 3), np.uint8), signs).tolist() == [[11, 11, 30, 30]]


def test_remember_puts_new_negatives_first_drops_repeats_and_keeps_at_most_mine_keep():
    old = np.array([[0, 0, 9, 9], [50, 50, 59, 59]], np.float32)
    new = np.array([[1, 0, 10, 9]], np.float32)  # repeats the first old one (IoU 0.82)
    assert mining.remember(old, new).tolist() == [[1, 0, 10, 9], [50, 50, 59, 59]]
    many = np.array([[i * 20, 0, i * 20 + 9, 9] for i in range(mining.MINE_KEEP + 3)], np.float32)
    kept = mining.remember(old, many)
    assert len(kept) == mining.MINE_KEEP and kept.tolist() == many[:mining.MINE_KEEP].tolist()
    assert mining.remember(old, np.zeros((0, 4), np.float32)).tolist() == old.tolist()


def test_mining_starts_a_third_of_the_way_and_visits_every_scene_once_in_mine_shards_epochs():
    assert [e for e in range(35) if mining.mining_epoch(e, 35)][0] == 11  # after 12 of 35 epochs
    assert mining.mining_epoch(0, 1) and mining.mining_epoch(0, 2)
    visited = sorted(i for e in range(7, 7 + mining.MINE_SHARDS) for i in mining.scenes_to_mine(e, 23))
    assert visited == list(range(23))


def test_mine_updates_only_this_epochs_shard():
    images = [np.zeros((64, 64, 3), np.uint8)] * 7
    signs = [np.zeros((0, 4), np.float32)] * 7
    finder = StubFinder([[5, 5, 14, 14]], [0.5])
    negatives, found = mining.mine(finder, images, signs, mining.no_negatives(7), epoch=1)
    assert found == 2  # scenes 1 and 6
    assert [len(n) for n in negatives] == [0, 1, 0, 0, 0, 0, 1]


def test_with_mine_1_every_crop_holds_a_negative_away_from_its_edges():
    """The crop is placed as around a sign: the negative's centre lands anywhere but the crop's outer 8th."""
    image = np.zeros((256, 256, 3), np.uint8)
    sign, cats = np.array([[5, 5, 14, 14]], np.float32), np.zeros(1, np.int64)  # centre (10, 10)
    negative = np.array([[150, 170, 169, 189]], np.float32)  # centre (160, 180)
    for seed in range(20):
        *_, moved = sample_crop(image, sign, cats, 64, np.random.default_rng(seed), negative, 1.0)
        k = (moved[0, 2] - moved[0, 0] + 1) / 10  # crop pixels per scene pixel (the sign is 10 px wide)
        sign_x, sign_y = (moved[0, 0] + moved[0, 2] + 1) / 2, (moved[0, 1] + moved[0, 3] + 1) / 2
        neg_x, neg_y = sign_x + 150 * k, sign_y + 170 * k  # where the negative's centre lands in the crop
        slack = k + 1e-3  # the crop's corner is a whole scene pixel
        assert 64 / 8 - slack <= neg_x <= 64 * 7 / 8 + slack, (seed, neg_x)
        assert 64 / 8 - slack <= neg_y <= 64 * 7 / 8 + slack, (seed, neg_y)


def test_without_negatives_or_at_mine_0_the_crops_are_those_of_before():
    """No random number is drawn for mining then, so runs with --mine 0 and the first third of a mining run
    crop exactly as runs before --mine existed."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    boxes, cats = np.array([[40, 50, 71, 81]], np.float32), np.zeros(1, np.int64)
    negative = np.array([[200, 20, 219, 39]], np.float32)
    for seed in range(5):
        before = sample_crop(image, boxes, cats, 64, np.random.default_rng(seed))
        for negatives, mine in ((None, 1.0), (negative, 0.0), (np.zeros((0, 4), np.float32), 1.0)):
            after = sample_crop(image, boxes, cats, 64, np.random.default_rng(seed), negatives, mine)
            assert torch.equal(before[0], after[0]) and np.array_equal(before[3], after[3])


def test_a_classify_run_takes_no_mine_flag_and_the_share_is_checked(tmp_path):
    root = make_gtsrb_train(tmp_path / "gtsrb", classes=(0, 1), tracks=2, frames=2)
    with pytest.raises(UserError, match="--mine: mines false positives in detection scenes"):
        train(root, mine=0.5, out=str(tmp_path / "run"), epochs=1)
    with pytest.raises(UserError, match="--val-every: a classify run validates every epoch"):
        train(root, val_every=2, out=str(tmp_path / "run"), epochs=1)
    with pytest.raises(UserError, match=r"--mine 2.0: must be in \[0, 1\]"):
        train(root, task="detect", mine=2.0, out=str(tmp_path / "run"))
