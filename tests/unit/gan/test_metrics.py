import torch

from workers.gan.judge import judge_from_bytes, judge_to_bytes, train_judge
from workers.gan.metrics import evaluate, gan_test_accuracy, kid, novelty, precision_recall
from workers.gan.training import new_state, train

from .conftest import CATEGORIES, tiny_config


def _features(n, shift=0.0, seed=0):
    return torch.randn(n, 16, generator=torch.Generator().manual_seed(seed)) + shift


def test_kid_is_near_zero_on_one_distribution_and_grows_with_a_shift():
    a, b = _features(300, seed=1), _features(300, seed=2)
    same = kid(a, b)
    small, large = kid(a, _features(300, 0.5, seed=2)), kid(a, _features(300, 2.0, seed=2))
    assert abs(same) < 0.01
    assert small > same + 0.01 and large > small


def test_precision_recall_one_on_identical_sets_and_drop_under_shift():
    a = _features(200, seed=1)
    pr = precision_recall(a, a.clone(), k=3)
    assert pr == {"precision": 1.0, "recall": 1.0}
    shifted = precision_recall(a, _features(200, 3.0, seed=2), k=3)
    assert shifted["precision"] < 0.3 and shifted["recall"] < 0.3


def test_novelty_flags_copies_and_passes_new_points():
    train_f = _features(100, seed=1)
    copies = novelty(train_f[:10] + 1e-6, train_f)
    assert copies["near_copy_fraction"] == 1.0 and copies["novelty_median_ratio"] < 0.01
    fresh = novelty(_features(50, 5.0, seed=2), train_f)
    assert fresh["near_copy_fraction"] == 0.0


def test_judge_round_trip_and_evaluate(tiny_dataset):
    judge, info = train_judge(tiny_dataset, seed=0, epochs=2, width=8, heldout_fraction=0.25)
    assert 0.0 <= info["heldout_accuracy"] <= 1.0 and info["heldout_index"].numel() == 6
    again = judge_from_bytes(judge_to_bytes(judge))
    x = tiny_dataset["images"]
    assert torch.equal(judge.features(x), again.features(x))
    assert again.info["heldout_accuracy"] == info["heldout_accuracy"]
    assert gan_test_accuracy(judge, x, tiny_dataset["labels"]) == info[
        "train_accuracy"
    ] * 0 + gan_test_accuracy(again, x, tiny_dataset["labels"])
    state = new_state(tiny_config(), CATEGORIES)
    train(state, tiny_dataset, steps=1)
    m = evaluate(state.G_ema, judge, tiny_dataset, n_per_class=4, seed=0)
    for key in ("gan_test_accuracy", "kid", "precision", "recall", "near_copy_fraction", "kid_heldout"):
        assert key in m
    assert len(m["gan_test_per_class"]) == 3
