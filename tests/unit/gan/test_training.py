import torch

from atelier.gan.training import (
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    finetune_state,
    new_state,
    state_from_checkpoint,
    state_to_checkpoint,
    train,
)

from .conftest import CATEGORIES, tiny_config


def _params(m):
    return [p.detach().clone() for p in m.state_dict().values()]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=False))


def test_one_step_changes_g_and_d_and_losses_are_finite(tiny_dataset):
    for arch in ("atelier", "dcgan"):
        state = new_state(tiny_config(arch), CATEGORIES, seed=1)
        g0, d0 = _params(state.G), _params(state.D)
        reports = []
        train(state, tiny_dataset, steps=2, progress_fn=reports.append, progress_every=1)
        assert state.step == 2
        assert not _same(g0, _params(state.G)) and not _same(d0, _params(state.D))
        assert reports and all(
            torch.isfinite(torch.tensor([r["loss_d"], r["loss_g"]])).all() for r in reports
        )
        assert {"step", "loss_d", "loss_g", "images_per_s"} <= set(reports[-1])


def test_paired_loss_trains_with_r1_and_r2_and_resumes_bit_identical(tiny_dataset):
    # r1_interval=2 in tiny_config: steps 0 and 2 carry R1 on the reals and R2 on the fakes.
    cfg = tiny_config()
    cfg.loss = "rpgan"
    straight = new_state(cfg, CATEGORIES, seed=3)
    reports = []
    train(straight, tiny_dataset, steps=3, progress_fn=reports.append, progress_every=1)
    assert straight.step == 3
    assert all(torch.isfinite(torch.tensor([r["loss_d"], r["loss_g"]])).all() for r in reports)
    first = new_state(cfg, CATEGORIES, seed=3)
    train(first, tiny_dataset, steps=2)
    resumed = state_from_checkpoint(checkpoint_from_bytes(checkpoint_to_bytes(state_to_checkpoint(first))))
    assert resumed.config.loss == "rpgan"
    train(resumed, tiny_dataset, steps=1)
    assert _same(_params(straight.G), _params(resumed.G)) and _same(_params(straight.D), _params(resumed.D))
    # The field reaches the step: the same seed under the seed's loss ends elsewhere.
    plain = new_state(tiny_config(), CATEGORIES, seed=3)
    train(plain, tiny_dataset, steps=3)
    assert not _same(_params(plain.D), _params(straight.D))


def test_a_head_kept_out_of_gs_loss_still_trains_d_and_leaves_g_elsewhere(tiny_dataset):
    # tiny carries the head at 0.3: with aux_g_scale=0 D's first step is the same (the head's loss on
    # the reals is D's), G's is not (no reward for designs the head names).
    ac = new_state(tiny_config(), CATEGORIES, seed=3)
    d_only = new_state(tiny_config(aux_g_scale=0.0), CATEGORIES, seed=3)
    assert d_only.D.aux is not None
    train(ac, tiny_dataset, steps=1)
    train(d_only, tiny_dataset, steps=1)
    assert _same(_params(ac.D), _params(d_only.D))
    assert not _same(_params(ac.G), _params(d_only.G))


def test_a_faded_head_holds_then_falls_to_zero_and_then_steers_nothing(tiny_dataset):
    from atelier.gan.config import aux_weight_at

    cfg = tiny_config(aux_hold_kimg=0.016, aux_fade_kimg=0.016)  # batch 8: steps 0-1 full, 2-3 falling
    assert [aux_weight_at(cfg, n) for n in (0, 16, 24, 32, 800)] == [0.3, 0.3, 0.15, 0.0, 0.0]
    assert aux_weight_at(tiny_config(), 10**9) == 0.3  # no fade: the weight holds
    state = new_state(cfg, CATEGORIES, seed=3)
    train(state, tiny_dataset, steps=4)
    saved = checkpoint_to_bytes(state_to_checkpoint(state))
    a, b = (state_from_checkpoint(checkpoint_from_bytes(saved)) for _ in range(2))
    with torch.no_grad():  # a head that said anything else: at weight 0 nothing hears it
        b.D.aux.weight.normal_()
        b.D.aux.bias.normal_()
    train(a, tiny_dataset, steps=1)
    train(b, tiny_dataset, steps=1)
    assert _same(_params(a.G), _params(b.G))
    shared = [k for k in a.D.state_dict() if not k.startswith("aux.")]
    assert all(torch.equal(a.D.state_dict()[k], b.D.state_dict()[k]) for k in shared)
    # while the head still had weight, the same change moved G
    c, d = (state_from_checkpoint(checkpoint_from_bytes(saved)) for _ in range(2))
    for s in (c, d):
        s.config = tiny_config()
    with torch.no_grad():
        d.D.aux.weight.normal_()
    train(c, tiny_dataset, steps=1)
    train(d, tiny_dataset, steps=1)
    assert not _same(_params(c.G), _params(d.G))


def _with_head_changed(cfg, tiny_dataset):
    """Two states of one seed whose heads differ, after one step each."""
    a, b = new_state(cfg, CATEGORIES, seed=3), new_state(cfg, CATEGORIES, seed=3)
    with torch.no_grad():
        b.D.aux.weight.normal_()
        b.D.aux.bias.normal_()
    train(a, tiny_dataset, steps=1)
    train(b, tiny_dataset, steps=1)
    trunk = [k for k in a.D.state_dict() if not k.startswith("aux.")]
    same_trunk = all(torch.equal(a.D.state_dict()[k], b.D.state_dict()[k]) for k in trunk)
    return same_trunk, _same(_params(a.G), _params(b.G))


def test_a_probe_head_leaves_ds_blocks_alone_and_still_rewards_g(tiny_dataset):
    # aux_probe: the head's cross-entropy reaches only the head, so what the head says cannot move
    # D's blocks; G is still rewarded through it. Without the probe the same change moves D's blocks.
    assert _with_head_changed(tiny_config(aux_probe=True), tiny_dataset) == (True, False)
    assert _with_head_changed(tiny_config(), tiny_dataset)[0] is False


def test_a_late_head_is_silent_before_its_start(tiny_dataset):
    from atelier.gan.config import aux_weight_at

    cfg = tiny_config(aux_start_kimg=0.016)  # batch 8: steps 0-1 without the head, from step 2 with it
    assert [aux_weight_at(cfg, n) for n in (0, 8, 16, 800)] == [0.0, 0.0, 0.3, 0.3]
    assert _with_head_changed(cfg, tiny_dataset) == (True, True)


def test_g_ema_differs_from_g(tiny_dataset):
    state = new_state(tiny_config(), CATEGORIES, seed=1)
    train(state, tiny_dataset, steps=3)
    ema = dict(state.G_ema.named_parameters())
    assert any(not torch.equal(p, ema[n]) for n, p in state.G.named_parameters())


def test_abort_fn_and_seconds_stop_training(tiny_dataset):
    state = new_state(tiny_config(), CATEGORIES)
    train(state, tiny_dataset, steps=100, abort_fn=lambda: state.step >= 2)
    assert state.step == 2
    train(state, tiny_dataset, seconds=0.0)
    assert state.step == 2


def test_resume_is_bit_identical(tiny_dataset):
    # r1_interval=2 in tiny_config, so both segments contain R1 steps; 3 + 2 splits across them.
    straight = new_state(tiny_config(), CATEGORIES, seed=3)
    train(straight, tiny_dataset, steps=5)

    first = new_state(tiny_config(), CATEGORIES, seed=3)
    train(first, tiny_dataset, steps=3)
    blob = checkpoint_to_bytes(state_to_checkpoint(first))
    del first
    torch.manual_seed(12345)  # a different process would have a different global RNG
    resumed = state_from_checkpoint(checkpoint_from_bytes(blob))
    train(resumed, tiny_dataset, steps=2)

    assert resumed.step == straight.step == 5
    for name in ("G", "D", "G_ema"):
        assert _same(_params(getattr(straight, name)), _params(getattr(resumed, name))), name
    a, b = state_to_checkpoint(straight), state_to_checkpoint(resumed)
    assert torch.equal(a["rng"]["train_gen"], b["rng"]["train_gen"])
    assert torch.equal(a["history"], b["history"])


def test_checkpoint_holds_only_plain_data(tiny_dataset):
    state = new_state(tiny_config("dcgan"), CATEGORIES)
    train(state, tiny_dataset, steps=1)
    ckpt = checkpoint_from_bytes(checkpoint_to_bytes(state_to_checkpoint(state)))  # weights_only=True inside
    assert {
        "G",
        "D",
        "G_ema",
        "opt_G",
        "opt_D",
        "augment",
        "step",
        "rng",
        "config",
        "class_names",
        "history",
    } <= set(ckpt)
    assert ckpt["class_names"] == CATEGORIES and ckpt["config"]["arch"] == "dcgan"


def test_finetune_with_new_category_keeps_old_rows(tiny_dataset):
    state = new_state(tiny_config(), CATEGORIES, seed=0)
    train(state, tiny_dataset, steps=2)
    ckpt = state_to_checkpoint(state)
    new_names = ["hat", "skirt", "dress", "pants"]  # reordered, plus one new category
    ft = finetune_state(ckpt, new_names)
    assert ft.config.num_classes == 4 and ft.class_names == new_names
    for net, key in ((ft.G, "G"), (ft.D, "D")):
        sd = net.state_dict()
        for name in ("mapping_net.embed.weight", "embed.weight"):
            if name in sd:
                for new_i, cat in enumerate(new_names):
                    if cat in CATEGORIES:
                        assert torch.equal(sd[name][new_i], ckpt[key][name][CATEGORIES.index(cat)])
    # Shared (non per-class) weights are carried over unchanged.
    assert torch.equal(ft.G.state_dict()["to_rgb.weight"], ckpt["G"]["to_rgb.weight"])
    relabelled = dict(tiny_dataset, labels=tiny_dataset["labels"] + 1)  # labels 1..3 of 4 classes
    train(ft, relabelled, steps=1)
    assert ft.step == 1
