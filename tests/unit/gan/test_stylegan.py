"""The StyleGAN2-style generator: its convolution's arithmetic, its noise, and every training and sampling
path it shares with the FiLM one, on the CPU under bf16 autocast and channels_last (the CUDA path)."""

import io

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from atelier.gan.config import GanConfig, preset_config
from atelier.gan.networks import build_networks
from atelier.gan.sampling import encode_png, generate, interpolate, load_generator, variations
from atelier.gan.stylegan import ModulatedConv2d, StyleGenerator
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

BF16 = dict(precision="bf16", channels_last=True)


def _style_cfg(**kw):
    # Every optional piece on: R1 at step 0, EMA, DiffAugment with ADA, the classifier head, balancing.
    base = dict(
        generator="style",
        augment="color,translation,cutout",
        augment_p=0.5,
        ada_target=0.6,
        ada_interval=2,
        aux_weight=0.5,
        class_balance=1.0,
        embed_dim=16,
        mbstd_by_class=True,
    )
    base.update(kw)
    return tiny_config(**base)


def test_modulated_conv_equals_the_fused_per_sample_convolution():
    # The non-fused form (scale inputs, one conv, scale outputs) must equal StyleGAN2's definition:
    # per sample, weights W * s, demodulated by their norm per output channel.
    torch.manual_seed(0)
    conv = ModulatedConv2d(6, 5, 3, w_dim=8)
    with torch.no_grad():
        conv.bias.normal_()
    x, w = torch.randn(3, 6, 7, 7), torch.randn(3, 8)
    out = conv(x, w)
    s = conv.affine(w)
    expected = []
    for i in range(3):
        wi = conv.weight * conv.scale * s[i][None, :, None, None]
        wi = wi / wi.square().sum(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
        expected.append(F.conv2d(x[i : i + 1], wi, padding=1) + conv.bias[None, :, None, None])
    assert torch.allclose(out, torch.cat(expected), atol=1e-5)
    # Demodulated: unit-variance inputs give outputs of about unit variance, whatever the style's scale.
    big = conv(torch.randn(64, 6, 9, 9), 10 * torch.randn(64, 8)) - conv.bias[None, :, None, None]
    assert 0.5 < float(big.detach().std()) < 2.0


@pytest.mark.parametrize("resolution", [16, 64])
def test_style_generator_shapes_and_the_discriminator_follows(resolution):
    cfg = tiny_config(generator="style", resolution=resolution)
    G, D = build_networks(cfg)
    assert isinstance(G, StyleGenerator)
    z, y = torch.randn(4, cfg.z_dim), torch.tensor([0, 1, 2, 0])
    img = G(z, y)
    assert img.shape == (4, 3, resolution, resolution) and torch.isfinite(img).all()
    assert D(img, y).shape == (4,)
    # One toRGB per resolution from 4 px: the skip architecture.
    assert len(G.blocks) == resolution.bit_length() - 3


def test_noise_is_fresh_in_training_and_fixed_when_sampling():
    torch.manual_seed(0)
    G = StyleGenerator(tiny_config(generator="style"))
    with torch.no_grad():
        for m in G.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(0.5)
    z, y = torch.randn(4, 16), torch.tensor([0, 1, 2, 0])
    G.train()
    assert not torch.equal(G(z, y), G(z, y))  # per-pixel noise: stochastic detail while training
    G.eval()
    one = G(z[:1], y[:1])
    # Batch size moves floats by kernel blocking only (sampling pads batches for exact equality).
    assert torch.allclose(G(z, y)[:1], one, atol=1e-3)
    assert torch.equal(G(z, y), G(z, y))  # a sampled image depends on its seed only


def _noisy(G):
    with torch.no_grad():
        for m in G.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(0.5)
    return G.eval()


def test_each_sampled_design_draws_its_own_noise_inputs_from_its_seed():
    from atelier.gan.sampling import image_noise, seed_noise, to_uint8

    torch.manual_seed(0)
    G = _noisy(StyleGenerator(tiny_config(generator="style", sample_noise="seeded")))
    assert G.noise_size == 4 * 4 + 8 * 8 + 16 * 16  # tiny: one conv per resolution
    seeds, y = [3, 4], torch.tensor([0, 0])
    z, n = seed_noise(seeds, 16), image_noise(seeds, 16, G.noise_size)
    assert not torch.equal(n[0], n[1])
    # The design is G's output for the seed's z and the seed's noise inputs (padding moves a level at most).
    expected = to_uint8(G(z, y, noise=n))
    assert (generate(G, seeds=seeds, labels=[0, 0]).int() - expected.int()).abs().max() <= 1
    # The noise inputs show: the same z with another seed's noise is another texture.
    assert not torch.equal(to_uint8(G(z[:1], y[:1], noise=n[1:])), expected[:1])
    # A checkpoint from before the field samples the fixed maps, as it always did: its designs stay.
    old = _noisy(StyleGenerator(tiny_config(generator="style")))
    old.load_state_dict(G.state_dict())
    assert old.noise_size == 0
    assert (generate(old, seeds=seeds, labels=[0, 0]).int() - to_uint8(old(z, y)).int()).abs().max() <= 1
    with pytest.raises(ValueError, match=r"noise must be \[N, 336\]"):
        G(z, y, noise=n[:, :10])


def test_presets_small_base_large():
    small, base, large = (preset_config(p) for p in ("small", "base", "large"))
    assert (small.resolution, base.resolution, large.resolution) == (64, 128, 256)
    assert small.generator == base.generator == large.generator == "style"
    assert preset_config("tiny").generator == "film"  # the 32 px preset keeps the measured FiLM G
    assert small.sample_noise == base.sample_noise == large.sample_noise == "seeded"
    # 64 px on a CPU pushes one category's designs apart (GAN_NOTES.md round 13); the baseline does not
    assert (small.mode_seeking, preset_config("tiny").mode_seeking) == (0.3, 0.0)
    assert preset_config("small", arch="dcgan").mode_seeking == 0.0
    with pytest.raises(ValueError, match="sample_noise"):
        preset_config("small", sample_noise="random")
    G, D = build_networks(GanConfig.from_dict({**small.to_dict(), "num_classes": 10}))
    # Sized for a 2-core CPU (GAN_NOTES.md round 8): about a million parameters in all.
    params = sum(p.numel() for p in G.parameters()) + sum(p.numel() for p in D.parameters())
    assert params < 2_000_000
    assert G(torch.randn(2, small.z_dim), torch.tensor([0, 9])).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="generator"):
        preset_config("small", generator="stylegan3")
    # The DCGAN baseline stays selectable at every size.
    assert type(build_networks(preset_config("small", arch="dcgan"))[0]).__name__ == "DCGANGenerator"


@pytest.fixture(scope="module")
def style_bf16_state(tiny_dataset):
    state = new_state(_style_cfg(), CATEGORIES, seed=0, **BF16)
    train(state, tiny_dataset, steps=4)
    return state


def test_train_steps_with_r1_ema_ada_aux_under_bf16_channels_last(style_bf16_state, tiny_dataset):
    s = style_bf16_state
    assert s.step == 4 and s.precision == "bf16" and s.channels_last
    assert s.G.const.dtype == torch.float32  # autocast: the weights stay fp32
    for net in (s.G, s.D, s.G_ema):
        assert all(torch.isfinite(p).all() for p in net.parameters())
    losses = state_to_checkpoint(s)["history"].flatten()
    assert torch.isfinite(losses).all()
    # G learned: its weights moved, the noise strengths too (they start at 0), and EMA lags behind G.
    strengths = [m.noise_strength for m in s.G.modules() if hasattr(m, "noise_strength")]
    assert any(float(p.detach().abs()) > 0 for p in strengths)
    assert not torch.equal(s.G_ema.const, s.G.const)
    assert s.G.mapping_net.w_avg.abs().sum() > 0  # w_avg tracked: truncation has a centre
    assert s.D.aux is not None and s.D.aux.weight.grad is not None


def test_losses_stay_sane_over_a_few_steps(tiny_dataset):
    # fp32, every piece on: nothing diverges (D's loss stays near 2 log 2, neither 0 nor exploding).
    state = new_state(_style_cfg(), CATEGORIES, seed=1)
    seen = []
    train(state, tiny_dataset, steps=20, progress_fn=lambda p: seen.append(p), progress_every=5)
    for p in seen:
        assert 0.05 < p["loss_d"] < 10 and 0.01 < p["loss_g"] < 20


def test_checkpoint_round_trip_resumes_bit_identically(tiny_dataset):
    cfg = _style_cfg(augment="", ada_target=0.0)
    straight = new_state(cfg, CATEGORIES, seed=2)
    train(straight, tiny_dataset, steps=4)
    first = new_state(cfg, CATEGORIES, seed=2)
    train(first, tiny_dataset, steps=2)
    resumed = state_from_checkpoint(checkpoint_from_bytes(checkpoint_to_bytes(state_to_checkpoint(first))))
    assert resumed.config.generator == "style"
    train(resumed, tiny_dataset, steps=2)  # per-pixel noise comes from the saved torch RNG
    for a, b in ((straight.G, resumed.G), (straight.D, resumed.D), (straight.G_ema, resumed.G_ema)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), name


def test_sampling_at_64_px_gives_decodable_images_under_bf16(tiny_dataset):
    cfg = _style_cfg(resolution=64, sample_noise="seeded")
    data = dict(tiny_dataset)
    data["images"] = F.interpolate(tiny_dataset["images"].float(), size=64).round().to(torch.uint8)
    state = new_state(cfg, CATEGORIES, seed=0, **BF16)
    train(state, data, steps=2)
    ckpt = checkpoint_from_bytes(checkpoint_to_bytes(state_to_checkpoint(state)))
    for precision in ("bf16", "fp32"):
        G, loaded_cfg, names = load_generator(ckpt, "cpu", precision)
        assert loaded_cfg.generator == "style" and names == CATEGORIES
        images = generate(G, seeds=[0, 1, 2], labels=[0, 1, 2])
        assert images.shape == (3, 3, 64, 64) and images.dtype == torch.uint8
        png = encode_png(images[0], text={"seed": 0})
        assert Image.open(io.BytesIO(png)).size == (64, 64)
        truncated = generate(G, seeds=[0, 1, 2], labels=[0, 1, 2], truncation=0.5)
        assert truncated.shape == images.shape and not torch.equal(truncated, images)
        assert interpolate(G, 0, 1, label=1, steps=3).shape == (3, 3, 64, 64)
        assert variations(G, 0, label=2, n=2).shape == (2, 3, 64, 64)
    # Image i is the same alone and within a batch.
    G, _, _ = load_generator(ckpt, "cpu")
    assert torch.equal(generate(G, seeds=[5], labels=[1]), generate(G, seeds=[4, 5], labels=[0, 1])[1:])


def test_a_checkpoint_from_before_sample_noise_keeps_the_fixed_maps_and_its_fine_tune_does_not():
    parent = new_state(_style_cfg(sample_noise="seeded"), CATEGORIES, seed=0)
    ckpt = state_to_checkpoint(parent)
    ckpt["config"].pop("sample_noise")
    G, cfg, _ = load_generator(ckpt, "cpu")
    assert cfg.sample_noise == "const" and G.noise_size == 0  # its designs are what they always were
    ckpt["config"]["preset"] = "small"
    # How sampling draws the noise is a preset setting, not part of the weights: the child takes it.
    assert finetune_state(ckpt, CATEGORIES, seed=1).config.sample_noise == "seeded"


def test_a_film_parent_fine_tunes_as_film_under_the_style_preset(tiny_dataset):
    # A checkpoint saved before `generator` existed is a FiLM model; a fine-tune keeps its shapes.
    film = tiny_config()
    film.preset = "small"  # as an old `small` checkpoint: FiLM weights under the name of a style preset
    parent = new_state(film, CATEGORIES, seed=0)
    ckpt = state_to_checkpoint(parent)
    ckpt["config"].pop("generator")
    child = finetune_state(ckpt, CATEGORIES, seed=1)
    assert child.config.generator == "film"
    assert type(child.G).__name__ == "Generator"
    with pytest.raises(ValueError, match="generator"):
        finetune_state(state_to_checkpoint(parent), CATEGORIES, overrides={"generator": "style"})
