"""Nightly retraining: a fine-tune continues its parent, and the gate tells noise from a real loss."""

import pytest
import torch

from atelier.gan.config import preset_config
from atelier.gan.training import finetune_state, new_state, state_to_checkpoint, train
from atelier.training.evaluation import promotion_gate

from .conftest import CATEGORIES, tiny_config


def _parent(tiny_dataset, **kw):
    state = new_state(tiny_config(**kw), CATEGORIES, seed=0)
    train(state, tiny_dataset, steps=3)
    return state_to_checkpoint(state)


def test_finetune_keeps_ema_adam_moments_and_takes_the_current_presets_settings(tiny_dataset):
    # The parent was trained with settings the preset does not have (another lr, balancing).
    ckpt = _parent(tiny_dataset, lr_g=1e-3, class_balance=1.0)
    ckpt["cur_nimg"] = 200_000  # as a production model that trained long enough for the full EMA horizon
    ft = finetune_state(ckpt, CATEGORIES)
    assert ft.step == 0 and ft.cur_nimg == ckpt["cur_nimg"] > 0  # the EMA ramp does not restart
    for name, value in ckpt["G_ema"].items():
        assert torch.equal(ft.G_ema.state_dict()[name], value), name
    kept = [p for p in ft.G.parameters() if p in ft.opt_G.state]
    assert len(kept) == len(list(ft.G.parameters()))  # same categories: every moment kept
    old = ckpt["opt_G"]["state"][0]["exp_avg"]
    assert torch.equal(ft.opt_G.state[next(iter(ft.G.parameters()))]["exp_avg"], old)
    preset = preset_config("tiny")
    assert ft.config.lr_g == preset.lr_g and ft.config.class_balance == preset.class_balance
    assert ft.config.channel_base == 256 and ft.config.resolution == 16  # the parent's weight shapes stay
    # One more step of the fine-tune moves G_ema only a little from the parent's: the EMA carries over.
    before = ft.G_ema.const.weight.clone()
    train(ft, tiny_dataset, steps=1)
    g_move = (ft.G.const.weight - before).abs().mean()
    assert (ft.G_ema.const.weight - before).abs().mean() < 0.01 * g_move


def test_finetune_with_a_new_category_keeps_matching_moments_only(tiny_dataset):
    ckpt = _parent(tiny_dataset)
    ft = finetune_state(ckpt, [*CATEGORIES, "skirt"])
    embed = ft.G.mapping_net.embed.weight
    assert embed.shape[0] == 4 and embed not in ft.opt_G.state  # its shape changed: fresh moments
    assert ft.G.const.weight in ft.opt_G.state


@pytest.mark.parametrize("why", ["--set aux_weight=0", "the preset dropped it"])
def test_a_finetune_drops_a_head_it_is_asked_to_train_without(tiny_dataset, why):
    # A model trained with D's classifier head, fine-tuned with `--set aux_weight=0`, or a `small` model
    # trained while that preset had the head (before GAN_NOTES.md round 27) fine-tuned under today's
    # `small`: it trains without the head and keeps every other weight of D with its Adam moments.
    ckpt = _parent(tiny_dataset, aux_weight=0.3)
    assert any(k.startswith("aux.") for k in ckpt["D"])
    overrides = {"aux_weight": 0.0} if why.startswith("--set") else None
    if overrides is None:
        ckpt["config"]["preset"] = "small"  # tiny's shapes, trained as small was
    ft = finetune_state(ckpt, CATEGORIES, overrides=overrides)
    assert ft.config.aux_weight == 0 and ft.D.aux is None
    for name, value in ft.D.state_dict().items():
        assert torch.equal(value, ckpt["D"][name]), name
    assert all(p in ft.opt_D.state for p in ft.D.parameters())
    train(ft, tiny_dataset, steps=2)
    assert ft.step == 2 and all(torch.isfinite(p).all() for p in ft.D.parameters())


def test_a_finetune_gains_the_head_its_preset_has(tiny_dataset):
    # A model trained without the head (`--set aux_weight=0`) under a preset that has one (tiny): its
    # nightly fine-tune takes the preset's head, freshly initialised, and keeps every other weight of D
    # with its Adam moments.
    ckpt = _parent(tiny_dataset, aux_weight=0.0)
    assert ckpt["config"]["preset"] == "tiny"
    assert not any(k.startswith("aux.") for k in ckpt["D"])
    ft = finetune_state(ckpt, CATEGORIES)
    assert ft.config.aux_weight == preset_config("tiny").aux_weight > 0 and ft.D.aux is not None
    for name, value in ckpt["D"].items():
        assert torch.equal(ft.D.state_dict()[name], value), name
    kept = [p for p in ft.D.parameters() if p in ft.opt_D.state]
    assert len(kept) == len(ckpt["opt_D"]["state"])
    assert all(p not in ft.opt_D.state for p in ft.D.aux.parameters())
    train(ft, tiny_dataset, steps=2)
    assert ft.step == 2 and all(torch.isfinite(p).all() for p in ft.D.parameters())


def _m(kid, kid_std=0.01, gan_test=0.5, recall=0.3, n=1000):
    return {
        "kid": kid,
        "kid_std": kid_std,
        "gan_test_accuracy": gan_test,
        "recall": recall,
        "n_gan_test": n,
        "n_real": n,
    }


def test_gate_promotes_within_the_noise_and_refuses_beyond_it():
    prod = _m(0.100)
    ok, why = promotion_gate(_m(0.110), prod, "v1")  # 0.01 worse, margin 2 * sqrt(2) * 0.01 = 0.028
    assert ok and "within the noise" in why
    ok, why = promotion_gate(_m(0.140), prod, "v1")
    assert not ok and "KID 0.1400 vs 0.1000" in why
    ok, why = promotion_gate(_m(0.090, gan_test=0.40), prod, "v1")  # better KID, but GAN-test lost 0.1
    assert not ok and "GAN-test" in why
    ok, why = promotion_gate(_m(0.090, recall=0.20), prod, "v1")
    assert not ok and "recall 0.2000 vs" in why and "KID 0.0900 vs 0.1000" in why  # all that was weighed
    assert promotion_gate(_m(0.125), prod, "v1", tolerance=0.0)[0] is True
    assert promotion_gate(_m(0.125), prod, "v1", sigmas=0.0)[0] is False  # no margin: any loss refuses
