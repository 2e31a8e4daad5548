"""The code paths a CUDA worker takes (bf16 autocast, channels_last), run on the CPU.

No GPU is lent to CI, so dtype and memory-layout bugs would otherwise hide until one is: every test
here runs the real function under ``torch.autocast("cpu", dtype=torch.bfloat16)`` and with
channels_last weights, exactly as ``precision="bf16", channels_last=True`` does on CUDA.
"""

import pytest
import torch

from atelier.gan import training
from atelier.gan.judge import train_judge
from atelier.gan.metrics import evaluate
from atelier.gan.networks import Discriminator, Generator, minibatch_stddev, minibatch_stddev_by_label
from atelier.gan.sampling import generate, interpolate, load_generator, variations
from atelier.gan.training import new_state, state_from_checkpoint, state_to_checkpoint, train, train_step

from .conftest import CATEGORIES, tiny_config

BF16 = dict(precision="bf16", channels_last=True)


def _cfg(**kw):
    # Every optional piece on: R1 at step 0, EMA, DiffAugment with ADA, the classifier head, balancing,
    # the mode-seeking term.
    base = dict(
        augment="color,translation,cutout",
        augment_p=0.5,
        ada_target=0.6,
        ada_interval=2,
        aux_weight=0.5,
        mode_seeking=1.0,
        class_balance=1.0,
        embed_dim=16,
        mbstd_by_class=True,
    )
    base.update(kw)
    return tiny_config(**base)


@pytest.fixture(scope="module")
def bf16_state(tiny_dataset):
    state = new_state(_cfg(), CATEGORIES, seed=0, **BF16)
    train(state, tiny_dataset, steps=4)
    return state


def test_truncation_below_one_under_bf16_autocast():
    # The reported bug: lerp of the fp32 w_avg with a bf16 w raised under autocast.
    torch.manual_seed(0)
    G = Generator(_cfg()).eval()
    z, y = torch.randn(4, 16), torch.tensor([0, 1, 2, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = G(z, y, truncation=0.7)
        G(z, y, update_w_avg=True)  # the w_avg tracking path (index_add of bf16 w into fp32 sums)
    assert out.shape == (4, 3, 16, 16) and torch.isfinite(out.float()).all()
    ref = G(z, y, truncation=0.7)
    assert (out.float() - ref).abs().mean() < 0.05  # the same images, at bf16 precision


def test_train_step_with_r1_ema_ada_aux_under_bf16_channels_last(bf16_state, tiny_dataset):
    s = bf16_state
    assert s.step == 4 and s.precision == "bf16" and s.channels_last
    assert s.G.const.weight.dtype == torch.float32  # autocast: the weights stay fp32
    conv = s.D.conv.weight  # 3x3: a 1x1 kernel is contiguous in both layouts
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    for net in (s.G, s.D, s.G_ema):
        assert all(torch.isfinite(p).all() for p in net.parameters())
    assert s.D.aux is not None and s.D.aux.weight.grad is not None
    # EMA moved towards G, and G_ema is not G.
    assert not torch.equal(s.G_ema.const.weight, s.G.const.weight)
    ckpt = state_to_checkpoint(s)
    assert len(ckpt["history"]) == 0 or torch.isfinite(ckpt["history"]).all()
    assert 0.0 <= ckpt["augment"]["p"] <= 1.0
    # The step stays usable one call at a time (bench uses it without weights).
    images, labels = tiny_dataset["images"], tiny_dataset["labels"]
    out = train_step(s, images, labels)
    assert torch.isfinite(out["loss_d"]) and torch.isfinite(out["loss_g"])


def test_bf16_losses_track_fp32(tiny_dataset):
    # Same seed, same data: the first losses agree to bf16 precision, so the two paths train alike.
    a = new_state(_cfg(augment=""), CATEGORIES, seed=3)
    b = new_state(_cfg(augment=""), CATEGORIES, seed=3, **BF16)
    images, labels = tiny_dataset["images"], tiny_dataset["labels"]
    la, lb = train_step(a, images, labels), train_step(b, images, labels)
    assert abs(float(la["loss_d"]) - float(lb["loss_d"])) < 0.05 * float(la["loss_d"]) + 0.02
    assert abs(float(la["loss_g"]) - float(lb["loss_g"])) < 0.05 * float(la["loss_g"]) + 0.02


@pytest.fixture(scope="module")
def generators(bf16_state):
    ckpt = state_to_checkpoint(bf16_state)
    return load_generator(ckpt, "cpu", **BF16)[0], load_generator(ckpt, "cpu")[0]


@pytest.mark.parametrize("truncation", [1.0, 0.6])
def test_sampling_bf16_matches_fp32(generators, truncation):
    g16, g32 = generators
    assert g16.precision == "bf16" and g32.precision == "fp32"
    a = generate(g16, seeds=list(range(6)), labels=[0, 1, 2, 0, 1, 2], truncation=truncation)
    b = generate(g32, seeds=list(range(6)), labels=[0, 1, 2, 0, 1, 2], truncation=truncation)
    assert a.dtype == torch.uint8 and a.shape == (6, 3, 16, 16)
    assert (a.float() - b.float()).abs().mean() < 6  # out of 255: bf16 rounding, not another image
    assert torch.equal(
        a, generate(g16, seeds=list(range(6)), labels=[0, 1, 2, 0, 1, 2], truncation=truncation)
    )


def test_per_category_truncation_under_bf16(generators):
    g16, g32 = generators
    try:
        g16.class_truncation = g32.class_truncation = [0.6, 1.0, 0.8]
        a = generate(g16, seeds=list(range(6)), labels=[0, 1, 2, 0, 1, 2])
        b = generate(g32, seeds=list(range(6)), labels=[0, 1, 2, 0, 1, 2])
        assert (a.float() - b.float()).abs().mean() < 6
        assert torch.equal(a[3], generate(g16, seeds=[3], labels=[0])[0])
        assert interpolate(g16, 5, 6, label=0, steps=3).shape == (3, 3, 16, 16)
    finally:
        g16.class_truncation = g32.class_truncation = None


def test_variations_and_interpolation_under_bf16(generators):
    g16, _ = generators
    v = variations(g16, seed=3, label=1, n=3, strength=0.2, truncation=0.7)
    assert v.shape == (3, 3, 16, 16)
    path = interpolate(g16, 5, 6, label=2, steps=4, truncation=0.7)
    assert path.shape == (4, 3, 16, 16)
    assert torch.equal(path[0], generate(g16, seeds=[5], labels=[2], truncation=0.7)[0])


def test_evaluate_under_bf16_keeps_the_generator_where_it_is(generators, tiny_dataset):
    g16, _ = generators
    judge, _ = train_judge(tiny_dataset, seed=0, epochs=1)
    m = evaluate(g16, judge, tiny_dataset, n_per_class=4, kid_subsets=2, truncation=0.8)
    assert 0.0 <= m["gan_test_accuracy"] <= 1.0 and m["kid"] == m["kid"] and m["kid_std"] >= 0
    assert m["truncation"] == 0.8
    assert next(g16.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="lives on cpu"):
        generate(g16, seeds=[0], labels=[0], device="meta")  # never moved in place


def test_minibatch_stddev_same_in_channels_last_and_bf16():
    torch.manual_seed(0)
    x = torch.randn(8, 5, 4, 4)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0])
    xc = x.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(minibatch_stddev(x, 4), minibatch_stddev(xc, 4))
    assert torch.allclose(minibatch_stddev_by_label(x, labels, 3), minibatch_stddev_by_label(xc, labels, 3))
    y16 = minibatch_stddev_by_label(x.bfloat16(), labels, 3)
    assert y16.dtype == torch.bfloat16
    assert torch.allclose(y16[:, -1].float(), minibatch_stddev_by_label(x, labels, 3)[:, -1], rtol=0.02)


def test_discriminator_channels_last_matches_contiguous():
    torch.manual_seed(0)
    D = Discriminator(_cfg()).eval()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    ref, ref_cls = D(x, y, with_aux=True)
    D2 = D.to(memory_format=torch.channels_last)
    out, cls = D2(x.contiguous(memory_format=torch.channels_last), y, with_aux=True)
    assert (
        torch.allclose(ref, out, atol=1e-5)
        and cls.shape == (4, 3)
        and torch.allclose(ref_cls, cls, atol=1e-5)
    )


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        new_state(_cfg(), CATEGORIES, precision="fp16")


def test_ada_raises_p_when_d_is_sure_of_the_reals_and_lowers_it_otherwise():
    from atelier.gan.training import _ada_update

    state = new_state(_cfg(ada_interval=2, ada_kimg=1.0), CATEGORIES, seed=0)
    p0 = float(state.aug_p)
    step = 8 * 2 / 1000  # batch * interval / (ada_kimg * 1000)
    for state.step in (0, 1):  # r_t = 1 > 0.6 over one interval
        _ada_update(state, torch.ones(8))
    assert float(state.aug_p) == pytest.approx(p0 + step)
    for state.step in (2, 3):  # r_t = -1 < 0.6
        _ada_update(state, -torch.ones(8))
    assert float(state.aug_p) == pytest.approx(p0)
    state.aug_p = torch.tensor(0.0)
    for state.step in (4, 5):
        _ada_update(state, -torch.ones(8))
    assert float(state.aug_p) == 0.0  # clamped to [0, 1]


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"),
    [
        (True, True, True),
        (True, False, True),
        (False, True, True),
        (False, False, False),
        (None, None, False),
    ],
)
def test_bf16_units_are_amx_or_avx512_bf16_and_a_missing_probe_means_fp32(
    monkeypatch, amx, avx512_bf16, expected
):
    def probe(value):  # None: a torch without the probe
        def answer() -> bool:
            if value is None:
                raise AttributeError("no such probe in this torch")
            return value

        return answer

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", probe(amx), raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", probe(avx512_bf16), raising=False)
    assert training.cpu_has_bf16_units() is expected
    assert training.default_train_precision("cpu") == ("bf16" if expected else "fp32")


@pytest.mark.parametrize(("amx", "expected"), [(True, "bf16"), (False, "fp32")])
def test_cpu_training_takes_bf16_where_the_cpu_has_bf16_units_and_sampling_stays_fp32(
    monkeypatch, tiny_dataset, amx, expected
):
    monkeypatch.setattr(training, "cpu_has_bf16_units", lambda: amx)
    state = new_state(_cfg(), CATEGORIES, seed=0)
    assert state.precision == expected
    train(state, tiny_dataset, steps=2)
    # a checkpoint resumed on such a CPU trains as a new one would; a design's pixels never depend on it
    assert state_from_checkpoint(state_to_checkpoint(state)).precision == expected
    assert load_generator(state_to_checkpoint(state), "cpu")[0].precision == "fp32"
    # asked for explicitly, either precision is kept whatever the CPU
    assert new_state(_cfg(), CATEGORIES, seed=0, precision="fp32").precision == "fp32"
