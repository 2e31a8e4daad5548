import math

import pytest
import torch

from atelier.gan.config import PRESETS, GanConfig, preset_config, r1_gamma_for
from atelier.gan.losses import d_loss, g_loss, mode_seeking, rp_d_loss, rp_g_loss
from atelier.gan.networks import build_networks

from .conftest import tiny_config


def test_seed_losses_equal_hand_computation():
    real = torch.tensor([2.0, -1.0, 0.5, 0.0])
    fake = torch.tensor([-3.0, 1.5, 0.25, -0.5])
    sig = torch.sigmoid
    # The seed's formulas, written literally with D = sigmoid(logit).
    expected_d = -torch.log(sig(real)).mean() - torch.log(1 - sig(fake)).mean()
    expected_g = -torch.log(sig(fake)).mean()
    assert d_loss(real, fake).item() == pytest.approx(expected_d.item(), rel=1e-6)
    assert g_loss(fake).item() == pytest.approx(expected_g.item(), rel=1e-6)
    # At D = 1/2 everywhere both are the textbook values 2 log 2 and log 2.
    zeros = torch.zeros(5)
    assert d_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2))
    assert g_loss(zeros).item() == pytest.approx(math.log(2))


def test_paired_losses_equal_hand_computation_and_compare_rows_not_batches():
    real = torch.tensor([2.0, -1.0, 0.5])
    fake = torch.tensor([-3.0, 1.5, 0.25])
    sig = torch.sigmoid
    # D's probability that real i is more real than its fake partner i, and G's of the opposite.
    assert rp_d_loss(real, fake).item() == pytest.approx(-torch.log(sig(real - fake)).mean().item(), rel=1e-6)
    assert rp_g_loss(real, fake).item() == pytest.approx(-torch.log(sig(fake - real)).mean().item(), rel=1e-6)
    # Only the difference within a pair counts: shifting both logits of a pair leaves both losses.
    shift = torch.tensor([5.0, -7.0, 0.3])
    assert rp_d_loss(real + shift, fake + shift).item() == pytest.approx(rp_d_loss(real, fake).item())
    assert torch.isfinite(rp_d_loss(torch.tensor([-300.0]), torch.tensor([300.0])))


def test_unknown_loss_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown loss 'wgan'; expected one of ns, rpgan"):
        preset_config("tiny", loss="wgan")
    # 64 px on a CPU takes the paired loss (GAN_NOTES.md round 20); tiny and the DCGAN baseline the seed's.
    assert preset_config("small").loss == "rpgan"
    assert preset_config("tiny").loss == preset_config("small", arch="dcgan").loss == "ns"


def test_mode_seeking_equals_hand_computation_over_same_label_pairs():
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [1.0, 1.0]])
    img = torch.tensor([0.0, 0.5, 3.0, 9.0]).reshape(4, 1, 1, 1).expand(4, 3, 2, 2)
    labels = torch.tensor([0, 0, 1, 1])
    # Pairs (0, 1) and (2, 3): mean|dz| / mean|dimg| = 1 / 0.5 and 2 / 6 (up to eps).
    assert mode_seeking(img, z, labels).item() == pytest.approx((2.0 + 1 / 3) / 2, rel=1e-4)
    # No two rows share a label: no pair, no term (and no NaN from an empty mean).
    assert mode_seeking(img, z, torch.arange(4)).item() == 0.0


def test_mode_seeking_gradient_pushes_same_label_designs_apart():
    torch.manual_seed(0)
    z = torch.randn(6, 8)
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    img = (0.01 * torch.randn(6, 3, 4, 4)).requires_grad_(True)
    before = torch.cdist(img.detach().flatten(1), img.detach().flatten(1))
    mode_seeking(img, z, labels).backward()
    with torch.no_grad():
        moved = img - 1e-4 * img.grad
    after = torch.cdist(moved.flatten(1), moved.flatten(1))
    same = torch.triu(labels[:, None] == labels[None, :], diagonal=1)
    assert (after[same] > before[same]).all()
    # The lone category-2 row has no partner: the term leaves it where it is.
    assert img.grad[5].abs().sum().item() == 0.0


def test_losses_stay_finite_on_extreme_logits():
    big = torch.tensor([200.0, -200.0])
    assert torch.isfinite(d_loss(big, -big)) and torch.isfinite(g_loss(-big))


@pytest.mark.parametrize(
    "arch,norms", [("atelier", ("pixel", False)), ("atelier", ("batch", True)), ("dcgan", None)]
)
@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_networks_shapes_per_category(arch, norms, resolution):
    extra = dict(g_norm=norms[0], d_norm=norms[1]) if norms else {}
    cfg = tiny_config(arch, num_classes=4, resolution=resolution, **extra)
    G, D = build_networks(cfg)
    z = torch.randn(8, cfg.z_dim)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    img = G(z, labels)
    assert img.shape == (8, 3, resolution, resolution)
    assert D(img, labels).shape == (8,)


def test_r1_gamma_follows_resolution_and_batch_from_a_presets_own_value():
    # StyleGAN2-ADA's heuristic where a preset names none; small's own 0.2 (R3GAN's recipe, GAN_NOTES.md
    # round 23) at its 64 px and batch 32, scaled as the heuristic scales elsewhere.
    assert preset_config("tiny").r1_gamma == pytest.approx(r1_gamma_for(32, 32))
    small = preset_config("small")
    assert small.r1_gamma == pytest.approx(0.2) and small.betas == [0.0, 0.99]
    assert preset_config("small", resolution=128).r1_gamma == pytest.approx(0.8)
    assert preset_config("small", batch_size=64).r1_gamma == pytest.approx(0.1)
    assert preset_config("small", r1_gamma=0.05).r1_gamma == 0.05
    assert preset_config("small", arch="dcgan").r1_gamma == 0.0
    small.betas[0] = 0.5  # a config's list is its own
    assert preset_config("small").betas == [0.0, 0.99]


def test_preset_config_validates():
    assert set(PRESETS) == {"tiny", "small", "base", "large"}
    assert preset_config("tiny").resolution == 32
    assert preset_config("small", resolution=256).resolution == 256
    assert preset_config("base", arch="dcgan").ema_kimg == 0
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")
    with pytest.raises(ValueError, match="unknown arch"):
        preset_config("tiny", arch="stylegan9")
    for bad in (8, 48, 512):
        with pytest.raises(ValueError, match="power of two"):
            preset_config("tiny", resolution=bad)
    with pytest.raises(ValueError, match="mode_seeking must not be negative"):
        preset_config("tiny", mode_seeking=-1.0)
    with pytest.raises(ValueError, match="aux_g_scale"):
        preset_config("tiny", aux_g_scale=-0.5)
    with pytest.raises(ValueError, match="aux_start_kimg"):
        preset_config("tiny", aux_start_kimg=-1.0)
    cfg = preset_config("tiny", num_classes=7)
    assert GanConfig.from_dict({**cfg.to_dict(), "future_field": 1}) == cfg
    # A checkpoint saved before the field loads without the term.
    assert (
        GanConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "mode_seeking"}).mode_seeking == 0
    )


def test_mbstd_by_label_sees_collapse_within_a_label():
    from atelier.gan.networks import minibatch_stddev_by_label

    labels = torch.tensor([0, 0, 1, 1, 2])
    x = torch.randn(5, 3, 4, 4)
    collapsed = x.clone()
    collapsed[1], collapsed[3] = collapsed[0], collapsed[2]  # same image within each label
    y = minibatch_stddev_by_label(x, labels, 3)
    yc = minibatch_stddev_by_label(collapsed, labels, 3)
    assert y.shape == (5, 4, 4, 4) and torch.equal(y[:, :3], x)
    assert (y[:4, 3] > 0.1).all() and (yc[:4, 3] < 1e-3).all()
    assert yc[4, 3].max() < 1e-3  # a lone sample has no spread, for reals and fakes alike


def test_embed_dim_and_mbstd_by_class_build_and_old_configs_keep_their_shapes():
    cfg = tiny_config("atelier", num_classes=4, embed_dim=16, mbstd_by_class=True)
    G, D = build_networks(cfg)
    assert G.mapping_net.embed.weight.shape == (4, 16)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    img = G(torch.randn(8, cfg.z_dim), labels)
    assert D(img, labels).shape == (8,)
    # A config saved before these fields existed: embedding as wide as w, mbstd over mixed groups.
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("embed_dim", "mbstd_by_class")}
    G_old, D_old = build_networks(GanConfig.from_dict(old))
    assert G_old.mapping_net.embed.weight.shape == (4, cfg.w_dim) and not D_old.mbstd_by_class


def test_tiny_preset_guards_against_within_category_collapse():
    cfg = preset_config("tiny")
    assert cfg.embed_dim == cfg.z_dim and cfg.mbstd_by_class
    assert preset_config("tiny", arch="dcgan").conditional is False  # per-label mbstd needs labels
