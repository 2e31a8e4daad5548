import io
import math

import pytest
import torch

from atelier.gan.judge import judge_from_bytes, judge_to_bytes, train_judge
from atelier.gan.metrics import evaluate, gan_test_accuracy, kid, novelty, precision_recall
from atelier.gan.training import new_state, train

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


def test_a_64_px_judge_has_a_full_resolution_stem_and_older_judges_still_load():
    gen = torch.Generator().manual_seed(0)
    data = {
        "images": torch.randint(0, 256, (12, 3, 64, 64), dtype=torch.uint8, generator=gen),
        "labels": torch.arange(12) % 3,
        "class_names": ["a", "b", "c"],
    }
    judge, _ = train_judge(data, seed=0, epochs=1, width=8, heldout_fraction=0.25)
    assert judge.input_res == 64 and judge.stem == 4
    # the stem convolves the 64 px image, then the stages run at 32 px and below
    stem = judge.body[0]
    assert stem[0].in_channels == 3 and stem[0].out_channels == 4 and isinstance(stem[-1], torch.nn.MaxPool2d)
    x = torch.rand(2, 3, 64, 64)
    assert judge.body[1](stem(x)).shape[-1] == 16
    again = judge_from_bytes(judge_to_bytes(judge))
    assert again.stem == 4 and torch.equal(judge.features(x), again.features(x))
    # a judge saved before the stem existed (no "stem" in its meta) loads as it was built
    older, _ = train_judge({**data, "images": data["images"][:, :, :32, :32]}, seed=0, epochs=1, width=8)
    buf = io.BytesIO()
    meta = {"num_classes": 3, "width": 8, "input_res": 32}
    torch.save({"meta": meta, "state_dict": older.state_dict(), "info": {}}, buf)
    assert judge_from_bytes(buf.getvalue()).stem == 0


def test_judge_trains_for_its_epochs_and_seconds_only_cap_them(tiny_dataset):
    # Epochs make the ruler: the same judge wherever it trains (bit for bit on one machine).
    a, info = train_judge(tiny_dataset, seed=0, epochs=3, width=8)
    b, _ = train_judge(tiny_dataset, seed=0, epochs=3, width=8)
    assert info["epochs"] == 3
    assert all(
        torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    _, capped = train_judge(tiny_dataset, seed=0, epochs=1000, seconds=1e-6, width=8)
    assert capped["epochs"] == 1


def test_judge_answers_as_if_every_category_were_equally_likely(tiny_dataset):
    # an unbalanced catalogue: every photo of the first category, three of each other
    labels = tiny_dataset["labels"]
    keep = torch.cat(
        [(labels == 0).nonzero().flatten()] + [(labels == c).nonzero().flatten()[:3] for c in (1, 2)]
    )
    data = {**tiny_dataset, "images": tiny_dataset["images"][keep], "labels": labels[keep]}
    judge, info = train_judge(data, seed=0, epochs=1, width=8, heldout_fraction=0.25)
    y = data["labels"][info["train_index"]]
    freq = torch.bincount(y, minlength=3).float() / y.numel()
    assert freq[0] > 2 * freq[1]  # the prior the judge must not carry into GAN-test
    assert torch.allclose(judge.log_prior.exp(), freq)
    x = data["images"][:4]
    with torch.no_grad():
        assert torch.allclose(judge(x), judge.head(judge.features(x)) - freq.log())

    # a judge saved before the correction existed loads with none; anything else missing is refused
    state = {k: v for k, v in judge.state_dict().items() if k != "log_prior"}
    meta = {"num_classes": 3, "width": 8, "input_res": judge.input_res}
    old = io.BytesIO()
    torch.save({"meta": meta, "state_dict": state, "info": {}}, old)
    assert torch.equal(judge_from_bytes(old.getvalue()).log_prior, torch.zeros(3))
    broken = io.BytesIO()
    torch.save({"meta": meta, "state_dict": {k: v for k, v in state.items() if "head" not in k}}, broken)
    with pytest.raises(ValueError, match="head.weight"):
        judge_from_bytes(broken.getvalue())


def test_truncation_sweep_keeps_diversity_and_does_not_refuse_for_noise(monkeypatch):
    from atelier.gan import metrics

    # rows measured on one tiny model (aux 0.3, seed 0; a judge without the prior correction):
    # truncation buys GAN-test and costs recall
    rows = {
        1.0: (0.630, 0.0064, 0.0011, 0.496),
        0.9: (0.644, 0.0067, 0.0011, 0.445),
        0.8: (0.671, 0.0078, 0.0012, 0.389),
        0.7: (0.677, 0.0097, 0.0013, 0.316),
    }

    def fake_evaluate(G, judge, dataset, truncation, **kwargs):
        gan_test, kid_, kid_std, recall = rows[truncation]
        return {
            "gan_test_accuracy": gan_test,
            "kid": kid_,
            "kid_std": kid_std,
            "recall": recall,
            "n_real": 3068,
        }

    monkeypatch.setattr(metrics, "evaluate", fake_evaluate)
    # By default recall may fall only by its noise (two standard errors of the difference, 0.025 over
    # 3,068 photos): 0.9 already loses 0.051 of it, so there is no truncation.
    assert metrics.truncation_sweep(None, None, {})["default_truncation"] == 1.0
    # Allowed to keep 0.8x the recall: 0.7 loses a third of it: refused. 0.8's KID is 1.2x that at 1.0,
    # within two spreads: kept.
    assert metrics.truncation_sweep(None, None, {}, recall_keep=0.8)["default_truncation"] == 0.8
    # with no allowance for noise, 0.8 is refused for a KID difference of one spread
    assert metrics.truncation_sweep(None, None, {}, recall_keep=0.8, sigmas=0.0)["default_truncation"] == 0.9
    # a recall within its noise keeps the truncation
    rows[0.9] = (0.644, 0.0067, 0.0011, 0.480)
    assert metrics.truncation_sweep(None, None, {})["default_truncation"] == 0.9
    # nothing but 1.0 keeps the diversity: 1.0
    rows.update({t: (0.9, 0.05, 0.001, 0.1) for t in (0.9, 0.8, 0.7)})
    assert metrics.truncation_sweep(None, None, {})["default_truncation"] == 1.0


GEN_LABELS = torch.arange(2).repeat_interleave(40)  # GAN-test: 40 images of each of 2 categories
KID_LABELS = torch.arange(200) % 2
REAL_F = torch.randn(200, 8, generator=torch.Generator().manual_seed(0)).double()
NEAR_F = REAL_F + 0.05 * torch.randn(200, 8, generator=torch.Generator().manual_seed(1)).double()


def _sweep(monkeypatch, hits: dict, fake_f: dict, **kwargs) -> dict:
    """truncation_sweep over 1.0 and 0.8 with these per-image verdicts and KID features. 0.8 as one
    value for every category costs too much recall (0.5 against 0.9): the global default stays 1.0."""
    from atelier.gan import metrics

    def fake_evaluate(G, judge, dataset, truncation, keep_samples=False, **kw):
        h = hits[truncation]
        out = {
            "gan_test_accuracy": h.double().mean().item(),
            "gan_test_per_class": [h[GEN_LABELS.eq(c)].double().mean().item() for c in range(2)],
            "kid": 0.01,
            "kid_std": 0.001,
            "recall": {1.0: 0.9, 0.8: 0.5}[truncation],
            "n_real": REAL_F.shape[0],
        }
        if keep_samples:
            out["samples"] = {
                "hits": h,
                "gan_test_labels": GEN_LABELS,
                "real_f": REAL_F,
                "fake_f": fake_f[truncation],
                "kid_labels": KID_LABELS,
                "covered": metrics.covered(REAL_F, fake_f[truncation]),
            }
        return out

    monkeypatch.setattr(metrics, "evaluate", fake_evaluate)
    result = metrics.truncation_sweep(None, None, {}, values=(1.0, 0.8), **kwargs)
    assert result["default_truncation"] == 1.0 and "samples" not in result["sweep"][0.8]
    return result


def test_truncation_sweep_moves_a_category_only_for_a_gain_beyond_its_noise(monkeypatch):
    # At 1.0 category 0 is recognised in 10 of 40 images, category 1 in 30.
    hits_1 = torch.zeros(80, dtype=torch.bool)
    hits_1[:10] = True
    hits_1[40:70] = True
    # At 0.8 category 0 gains 10 images (10 verdicts changed: 10 > sqrt(10)) and category 1 gains 2 and
    # loses 1 (3 changed: 1 < sqrt(3)).
    hits_8 = hits_1.clone()
    hits_8[10:20] = True
    hits_8[70:72] = True
    hits_8[40] = False
    hits, features = {1.0: hits_1, 0.8: hits_8}, {1.0: NEAR_F, 0.8: NEAR_F}
    assert _sweep(monkeypatch, hits, features)["class_truncation"] == [0.8, 1.0]
    # A bar of 4 standard errors: 10 of 10 changed verdicts is not enough, nothing moves.
    assert _sweep(monkeypatch, hits, features, class_sigmas=4.0)["class_truncation"] is None


def test_truncation_sweep_gives_a_category_back_when_the_mix_loses_diversity(monkeypatch):
    hits_1 = torch.zeros(80, dtype=torch.bool)
    hits_8 = hits_1.clone()
    hits_8[:20] = True  # category 0: 20 more of 40 at 0.8
    hits = {1.0: hits_1, 0.8: hits_8}
    # at 0.8 every category-0 design is the same point: the recombined mix covers half the photos
    collapsed = NEAR_F.clone()
    collapsed[KID_LABELS.eq(0)] = REAL_F[0]
    assert _sweep(monkeypatch, hits, {1.0: NEAR_F, 0.8: collapsed})["class_truncation"] is None
    # the same gain with diverse features stays
    assert _sweep(monkeypatch, hits, {1.0: NEAR_F, 0.8: NEAR_F})["class_truncation"] == [0.8, 1.0]


def test_swept_metrics_reports_the_choice_on_seeds_it_never_saw(monkeypatch):
    from atelier.gan import metrics

    calls = []

    def fake_sweep(G, judge, dataset, values, seed, recall_keep, **kwargs):
        calls.append(("sweep", seed, recall_keep))
        return {"default_truncation": 0.9, "class_truncation": [0.9, 0.7], "sweep": {}}

    def fake_evaluate(G, judge, dataset, truncation, seed, n_per_class):  # the sweep's limits stay out
        calls.append(("evaluate", seed, truncation))
        return {"gan_test_accuracy": 0.5, "truncation": truncation}

    monkeypatch.setattr(metrics, "truncation_sweep", fake_sweep)
    monkeypatch.setattr(metrics, "evaluate", fake_evaluate)
    out = metrics.swept_metrics(None, None, {}, seed=20_000, n_per_class=5, recall_keep=0.8)
    assert calls == [("sweep", 20_000 + metrics.SELECTION_SEED_OFFSET, 0.8), ("evaluate", 20_000, [0.9, 0.7])]
    assert out["class_truncation"] == [0.9, 0.7] and out["default_truncation"] == 0.9
    assert metrics.chosen_truncation(out) == [0.9, 0.7]
    assert metrics.chosen_truncation({"default_truncation": 0.8, "class_truncation": None}) == 0.8


def test_evaluate_with_a_judge_trained_on_another_catalogue(tiny_dataset):
    # The same categories, fewer photos: the judge's own split does not index these, so the held-out
    # KID is left out and novelty is measured against every photo instead of failing or misreading.
    judge, info = train_judge(tiny_dataset, seed=0, epochs=1, width=8, heldout_fraction=0.25)
    half = tiny_dataset["labels"].numel() // 2
    smaller = {
        **tiny_dataset,
        "images": tiny_dataset["images"][:half],
        "labels": tiny_dataset["labels"][:half],
    }
    state = new_state(tiny_config(), CATEGORIES)
    for max_real in (1000, 10):  # every photo, and a subsample
        m = evaluate(state.G_ema, judge, smaller, n_per_class=2, seed=0, kid_subsets=2, max_real=max_real)
        assert "kid_heldout" not in m and 0.0 <= m["near_copy_fraction"] <= 1.0
    from atelier.gan import metrics

    full = evaluate(state.G_ema, judge, tiny_dataset, n_per_class=2, kid_subsets=2, keep_samples=True)
    assert "kid_heldout" in full
    # The per-photo coverage a sweep reuses is the recall reported, photo by photo.
    samples = full["samples"]
    assert torch.equal(samples["covered"], metrics.covered(samples["real_f"], samples["fake_f"]))
    assert full["recall"] == samples["covered"].double().mean().item()


def test_truncation_sweep_measures_recall_noise_on_the_photos_whose_coverage_changed(monkeypatch):
    from atelier.gan import metrics

    n = 2000
    gen = torch.Generator().manual_seed(0)
    real_f = torch.randn(n, 4, generator=gen).double()
    designs = torch.randn(n, 4, generator=gen).double()
    # 0.8: the same designs pulled 5 % towards the centre (truncation's pull towards the typical)
    pulled = 0.95 * designs
    fake_f = {1.0: designs, 0.8: pulled}

    def fake_evaluate(G, judge, dataset, truncation, keep_samples=False, **kw):
        pr = metrics.precision_recall(real_f, fake_f[truncation])
        out = {"kid": 0.01, "kid_std": 0.001, "n_real": n, **pr}
        if keep_samples:
            out["samples"] = {
                "hits": torch.ones(10, dtype=torch.bool),
                "gan_test_labels": torch.zeros(10, dtype=torch.int64),
                "real_f": real_f,
                "fake_f": fake_f[truncation],
                "kid_labels": torch.zeros(n, dtype=torch.int64),
                "covered": metrics.covered(real_f, fake_f[truncation]),
            }
        return out

    monkeypatch.setattr(metrics, "evaluate", fake_evaluate)
    r1, r8 = (metrics.precision_recall(real_f, fake_f[t])["recall"] for t in (1.0, 0.8))
    changed = (metrics.covered(real_f, designs) != metrics.covered(real_f, pulled)).sum().item()
    unpaired = 2 * math.hypot(metrics.binomial_se(r1, n), metrics.binomial_se(r8, n))
    # the loss is beyond the paired margin (the photos whose coverage changed) but within two
    # independent binomial errors, which would have let 0.8 through
    assert 0 < r1 - r8 < unpaired and r1 - r8 > 2 * math.sqrt(changed) / n
    assert metrics.truncation_sweep(None, None, {}, values=(1.0, 0.8))["default_truncation"] == 1.0
    assert metrics.paired_margin(metrics.covered(real_f, pulled), metrics.covered(real_f, designs), 2.0) == (
        pytest.approx(2 * math.sqrt(changed) / n)
    )
    # the same designs at both values: nothing changed, 0.8 keeps recall exactly
    fake_f[0.8] = designs
    assert metrics.truncation_sweep(None, None, {}, values=(1.0, 0.8))["default_truncation"] == 0.8
