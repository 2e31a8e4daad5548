"""Variety: within-category diversity, recall against held-out photos, and how the truncation sweep and
the promotion gate guard them."""

import pytest
import torch

from atelier.core.config import Settings
from atelier.gan import metrics
from atelier.gan.figures import category_chart_png
from atelier.gan.metrics import (
    diversity_per_class,
    evaluate,
    mean_diversity,
    recall_vs_heldout,
    reference_split,
    spread,
)
from atelier.training.evaluation import promotion_gate, variety_refusal

from .conftest import CATEGORIES


def _clusters(n_per: int = 40, classes: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per)
    feats = torch.randn(labels.numel(), 8, generator=gen) + 5 * labels[:, None].double()
    return feats.double(), labels


def test_spread_and_diversity_per_class():
    real, labels = _clusters()
    assert spread(real[:1]) is None
    # The same photos as "generated": exactly as varied as the catalogue.
    assert diversity_per_class(real, labels, real, labels, 3) == pytest.approx([1.0, 1.0, 1.0])
    # Collapsed: every design of a category the same (its mean) -> 0; half as spread -> 0.5.
    means = torch.stack([real[labels == c].mean(dim=0) for c in range(3)])
    collapsed = means[labels]
    assert diversity_per_class(real, labels, collapsed, labels, 3) == pytest.approx([0.0, 0.0, 0.0])
    half = means[labels] + 0.5 * (real - means[labels])
    per_class = diversity_per_class(real, labels, half, labels, 3)
    assert per_class == pytest.approx([0.5, 0.5, 0.5])
    # A category with a single generated image has no spread to compare; the mean skips it.
    one = diversity_per_class(real, labels, real[:41], labels[:41], 3)
    assert one[0] == pytest.approx(1.0) and one[1] is None and one[2] is None
    assert mean_diversity([0.5, None, 1.0]) == pytest.approx(0.75) and mean_diversity([None]) is None


def test_recall_against_heldout_photos_as_a_ratio_to_real_vs_real():
    real, labels = _clusters(n_per=60)
    held, match = reference_split(labels, None, seed=0)
    assert held.numel() == 90 and torch.equal(labels[held], labels[match])
    assert not set(held.tolist()) & set(match.tolist())  # the baseline photos are other photos
    # Fresh draws from the same distribution cover the held-out photos about as real photos do.
    fresh, _ = _clusters(n_per=60, seed=1)
    good = recall_vs_heldout(real, fresh, labels, None)
    assert 0.7 < good["recall_ratio"] < 1.3 and good["n_recall"] == 90
    assert good["recall_heldout"] == pytest.approx(good["recall_ratio"] * good["recall_real_baseline"])
    # A generator that draws the typical design of each category covers almost nothing.
    means = torch.stack([real[labels == c].mean(dim=0) for c in range(3)])
    typical = means[labels] + 0.01 * fresh
    assert recall_vs_heldout(real, typical, labels, None)["recall_ratio"] < 0.3
    # Per category: fresh draws cover each category about as real photos do; a generator that draws only
    # the typical design of category 0 (and fresh ones elsewhere) misses category 0 alone.
    per = recall_vs_heldout(real, fresh, labels, None, num_classes=4)["recall_ratio_per_class"]
    assert all(0.6 < v < 1.4 for v in per[:3]) and per[3] is None  # no photo of category 3
    one_typical = torch.where((labels == 0)[:, None], typical, fresh)
    per = recall_vs_heldout(real, one_typical, labels, None, num_classes=3)["recall_ratio_per_class"]
    assert per[0] < 0.3 and per[1] > 0.6 and per[2] > 0.6
    assert recall_vs_heldout(real, fresh, labels, None)["recall_ratio_per_class"] is None
    # With the judge's own held-out positions.
    given = torch.tensor([0, 1, 60, 61, 120, 121])
    h, m = reference_split(labels, given)
    assert sorted(h.tolist()) == given.tolist() and torch.equal(labels[h], labels[m])


def test_evaluate_reports_diversity_per_category_and_recall_ratio(tiny_dataset):
    from atelier.gan.judge import train_judge
    from atelier.gan.sampling import load_generator
    from atelier.gan.training import new_state, state_to_checkpoint

    from .conftest import tiny_config

    judge, _ = train_judge(tiny_dataset, seed=0, epochs=1)
    state = new_state(tiny_config(generator="style"), CATEGORIES, seed=0)
    G, _, _ = load_generator(state_to_checkpoint(state), "cpu")
    m = evaluate(G, judge, tiny_dataset, n_per_class=4, kid_subsets=2)
    assert len(m["diversity_per_class"]) == len(CATEGORIES)
    assert all(v is None or v >= 0 for v in m["diversity_per_class"])
    assert m["diversity"] == pytest.approx(mean_diversity(m["diversity_per_class"]))
    assert m["recall_ratio"] is None or m["recall_ratio"] >= 0
    assert {"recall_heldout", "recall_real_baseline", "n_recall", "diversity_min"} <= set(m)
    assert len(m["recall_ratio_per_class"]) == len(CATEGORIES)
    # Truncation 0 draws each category's centre: no spread left at all.
    flat = evaluate(G, judge, tiny_dataset, n_per_class=4, kid_subsets=2, truncation=0.0)
    assert flat["diversity"] == pytest.approx(0.0, abs=1e-6)
    png = category_chart_png(m, CATEGORIES, 0.9)
    assert png.startswith(b"\x89PNG")


def test_recall_over_draws_gives_each_draws_ratio_their_mean_and_spread(tiny_dataset):
    from atelier.gan.judge import train_judge
    from atelier.gan.sampling import load_generator
    from atelier.gan.training import new_state, state_to_checkpoint

    from .conftest import tiny_config

    judge, _ = train_judge(tiny_dataset, seed=0, epochs=1, heldout_fraction=0.5)  # 4 held out per category
    G, _, _ = load_generator(state_to_checkpoint(new_state(tiny_config(), CATEGORIES, seed=0)), "cpu")
    r = metrics.recall_over_draws(G, judge, tiny_dataset, 3, seed=5)
    assert r["n_recall_draws"] == 3 and len(r["recall_ratio_draws"]) == len(r["recall_heldout_draws"]) == 3
    assert r["recall_ratio_mean"] == pytest.approx(sum(r["recall_ratio_draws"]) / 3)
    assert r["recall_ratio_sd"] == pytest.approx(torch.tensor(r["recall_ratio_draws"]).std().item())
    assert all(0 <= v <= 1 for v in r["recall_heldout_draws"])
    # A function of the seed: the same call gives the same draws; another seed, other designs.
    assert metrics.recall_over_draws(G, judge, tiny_dataset, 3, seed=5) == r
    assert metrics.recall_over_draws(G, judge, tiny_dataset, 1, seed=6)["recall_ratio_sd"] is None
    with pytest.raises(ValueError, match="draws must be at least 1"):
        metrics.recall_over_draws(G, judge, tiny_dataset, 0)
    judge.info = {}  # a judge that does not know which photos it held out
    with pytest.raises(ValueError, match="held-out photos"):
        metrics.recall_over_draws(G, judge, tiny_dataset, 2)


def _rows(diversity: dict):
    """What evaluate gives at each truncation: GAN-test rises as truncation strengthens, diversity falls."""

    def fake_evaluate(G, judge, dataset, *, truncation, keep_samples=False, real_features=None, **kw):
        return {
            "gan_test_accuracy": 1.5 - truncation,
            "kid": 0.01,
            "kid_std": 0.001,
            "recall": 0.4,
            "n_real": 1000,
            "diversity": diversity[truncation],
            "diversity_per_class": [diversity[truncation]],
            "samples": None,
        }

    return fake_evaluate


def test_the_sweep_takes_the_strongest_truncation_that_keeps_diversity(monkeypatch):
    values = (1.0, 0.9, 0.8, 0.7)
    monkeypatch.setattr(metrics, "evaluate", _rows({1.0: 0.97, 0.9: 0.93, 0.8: 0.88, 0.7: 0.80}))
    result = metrics.truncation_sweep(None, None, None, values)
    assert result["default_truncation"] == 0.9  # 0.8 and 0.7 are stronger but typical
    assert metrics.truncation_sweep(None, None, None, values, min_diversity=0.85)["default_truncation"] == 0.8
    # Nothing keeps it (not even 1.0): no truncation at all.
    monkeypatch.setattr(metrics, "evaluate", _rows({1.0: 0.8, 0.9: 0.7, 0.8: 0.6, 0.7: 0.5}))
    assert metrics.truncation_sweep(None, None, None, values)["default_truncation"] == 1.0


def _metrics(**kw):
    base = dict(
        kid=0.02,
        kid_std=0.002,
        gan_test_accuracy=0.7,
        n_gan_test=500,
        recall=0.4,
        n_real=2000,
        diversity=0.95,
        diversity_per_class=[0.9, 1.0],
        recall_ratio=0.9,
    )
    base.update(kw)
    return base


def test_the_gate_refuses_typical_designs_naming_the_settings():
    prod = _metrics()
    ok, why = promotion_gate(_metrics(), prod, "v1", min_diversity=0.85, min_recall=0.85)
    assert ok, why
    typical = _metrics(diversity=0.80, diversity_per_class=[0.7, 0.9])
    ok, why = promotion_gate(typical, prod, "v1", min_diversity=0.85, min_recall=0.85)
    assert not ok
    assert "ATELIER_PROMOTION_MIN_DIVERSITY 0.85" in why and "0.800" in why and "0.70, 0.90" in why
    missed = _metrics(recall_ratio=0.6, recall_ratio_per_class=[0.45, None])
    ok, why = promotion_gate(missed, prod, "v1", min_diversity=0.85, min_recall=0.85)
    assert not ok and "ATELIER_PROMOTION_MIN_RECALL 0.85" in why and "DIVERSITY" not in why
    assert "recall per category: 0.45, -" in why and "diversity per category: 0.90, 1.00" in why
    # Refused even when production is worse still: variety is a floor, not a comparison.
    worse_prod = _metrics(kid=0.2, diversity=0.5, recall_ratio=0.3)
    assert promotion_gate(_metrics(diversity=0.8), worse_prod, "v1", min_diversity=0.85)[0] is False
    # 0 turns a limit off; an evaluation without the metric (an old version) is not held against it.
    assert promotion_gate(_metrics(diversity=0.5), prod, "v1", min_diversity=0.0)[0] is True
    assert variety_refusal({"kid": 0.1}, min_diversity=0.85, min_recall=0.85) is None


def test_the_limits_are_settings():
    s = Settings()
    limits = (
        s.truncation_min_diversity,
        s.truncation_recall_keep,
        s.promotion_min_diversity,
        s.promotion_min_recall,
    )
    assert limits == (0.9, 1.0, 0.85, 0.2)
    with pytest.raises(ValueError, match="promotion_min_recall"):
        Settings(promotion_min_recall=-1)
    with pytest.raises(ValueError, match="truncation_recall_keep"):
        Settings(truncation_recall_keep=1.5)


def test_a_model_versions_sweep_takes_its_limits_from_the_settings(monkeypatch):
    from atelier.core.config import get_settings
    from atelier.training.evaluation import evaluate_version

    seen = {}

    def fake_swept(G, judge, dataset, values, *, min_diversity, recall_keep, **kwargs):
        seen.update(values=sorted(values), min_diversity=min_diversity, recall_keep=recall_keep)
        return {"gan_test_accuracy": 0.5, "default_truncation": 0.9}

    monkeypatch.setattr(metrics, "swept_metrics", fake_swept)
    monkeypatch.setenv("ATELIER_TRUNCATION_RECALL_KEEP", "0.8")
    monkeypatch.setenv("ATELIER_TRUNCATION_MIN_DIVERSITY", "0.85")
    get_settings.cache_clear()
    try:
        assert evaluate_version(None, None, {}, sweep=True)["default_truncation"] == 0.9
    finally:
        get_settings.cache_clear()
    assert seen == {"values": [0.7, 0.8, 0.9, 1.0], "min_diversity": 0.85, "recall_keep": 0.8}
