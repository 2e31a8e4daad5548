"""GAN configuration: one flat dataclass, presets, and validation.

A config travels inside every checkpoint as a plain dict (``to_dict``), so it must hold only JSON-able
values; ``from_dict`` ignores unknown keys so old checkpoints keep loading after a field is added.

    preset_config("tiny")                    -> 32 px, CPU-sized widths
    preset_config("small")                   -> 64 px, the StyleGAN2-style generator, CPU-sized
    preset_config("small", resolution=128)   -> the small widths, grown or shrunk to 128 px
    preset_config("tiny", arch="dcgan")      -> the seed's DCGAN baseline at the same size
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

ARCHS = ("atelier", "dcgan")
# The generator of the "atelier" arch: "film" (per-channel scale and shift after pixel norm, networks.py)
# or "style" (StyleGAN2: modulated and demodulated convs, noise inputs, skip toRGB; stylegan.py). The
# "dcgan" arch is the seed's baseline, G and D together.
GENERATORS = ("film", "style")
# The adversarial loss (losses.py): "ns" the seed's non-saturating loss, "rpgan" relativistic pairing,
# which adds R2 (the gradient penalty on fakes) beside R1 at the same gamma and interval.
LOSSES = ("ns", "rpgan")
# How the style generator's noise inputs are drawn when sampling (stylegan.py): "seeded" from each image's
# own seed, "const" one fixed map per layer shared by every design (checkpoints before the field).
SAMPLE_NOISE = ("const", "seeded")
MIN_RESOLUTION, MAX_RESOLUTION = 16, 256


@dataclass
class GanConfig:
    arch: str = "atelier"
    # "film" is the default so that checkpoints saved before the field existed load as what they are.
    generator: str = "film"
    # "const" is the default so that checkpoints saved before the field keep their designs; the style
    # presets sample "seeded" (GAN_NOTES.md round 12).
    sample_noise: str = "const"
    preset: str = "tiny"
    resolution: int = 32
    num_classes: int = 1
    z_dim: int = 64
    w_dim: int = 128
    # Width of G's class embedding in the mapping input; 0 means w_dim (the original layout, which old
    # checkpoints have). Both halves are pixel-normed, so their widths set z's share of the input energy.
    embed_dim: int = 0
    mapping_layers: int = 2
    # Channels at resolution r are clamp(channel_base // r, channel_min, channel_max), as in StyleGAN:
    # cheap wide layers at low resolution, narrow ones where the pixels are many.
    channel_base: int = 2048
    channel_max: int = 128
    channel_min: int = 16
    g_convs: int = 2  # 3x3 convs per generator block
    d_convs: int = 2  # 3x3 convs per discriminator block
    batch_size: int = 32
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    loss: str = "ns"  # the seed's; checkpoints saved before the field load with it
    # Lazy R1 (StyleGAN2): the penalty is computed every r1_interval D steps and scaled by the interval.
    r1_gamma: float = 0.1
    r1_interval: int = 16
    # EMA of G: half-life in thousands of images, ramped up early (StyleGAN2-ADA's ema_kimg/ema_rampup).
    ema_kimg: float = 10.0
    ema_rampup: float = 0.05
    w_avg_beta: float = 0.995
    # DiffAugment policy applied to real and fake images in both the D and the G pass, each image with
    # probability p. ada_target > 0: p adapts (StyleGAN2-ADA's overfitting heuristic): every ada_interval
    # steps, r_t = E[sign(D(real))] is compared with ada_target and p moves so that it could go 0 -> 1 in
    # ada_kimg thousand images. ada_target = 0: p stays at augment_p.
    augment: str = "color,translation,cutout"
    augment_p: float = 1.0
    ada_target: float = 0.0
    ada_interval: int = 4
    ada_kimg: float = 100.0
    xflip: bool = True
    mbstd_group: int = 4
    # Minibatch-stddev over the samples that share a label (conditional D): a G that collapses within a
    # category but varies across categories is invisible to mbstd over mixed-label groups.
    mbstd_by_class: bool = False
    he_init: bool = True
    g_norm: str = "pixel"  # "pixel" (per-sample) or "batch" (conditional BN, running stats at sampling)
    d_norm: bool = False  # batch norm in D's blocks, as DCGAN's D
    conditional: bool = True
    # Auxiliary classifier head on D's features beside the projection (AC-GAN): D learns to name the
    # category of real photos (cross-entropy), G is rewarded when D names the asked-for category.
    aux_weight: float = 0.0
    # The share of aux_weight in G's loss: 1 is AC-GAN's (G rewarded when D names the asked-for category),
    # 0 lets the head shape D's features (and through them the projection's class signal) without
    # rewarding G for designs the head finds easy, the typical ones.
    aux_g_scale: float = 1.0
    # aux_fade_kimg > 0: the head's weight holds at aux_weight for aux_hold_kimg thousand images, then
    # falls linearly to 0 over aux_fade_kimg thousand more (on while the categories are learned, off
    # while variety is). Counted in the run's images (cur_nimg), which a fine-tune continues.
    # Neither is in a preset: on small (GAN_NOTES.md round 25, two seeds each, one machine) the G share
    # at 0 kept the head's recall (0.76 / 0.78 over 8 draws against 0.75 / 0.80) and a fade from 100 to
    # 150 kimg bought none (0.75 / 0.81) for 0.1x of recognition (0.81x / 0.88x against 0.93x / 0.98x).
    aux_hold_kimg: float = 0.0
    aux_fade_kimg: float = 0.0
    # aux_start_kimg > 0: the head's weight is 0 for the run's first aux_start_kimg thousand images, then
    # aux_weight (variety first, the categories after).
    aux_start_kimg: float = 0.0
    # aux_probe: D's cross-entropy trains the head only, as a linear probe on D's features (detached from
    # D's blocks), so the head no longer teaches D the categories; G is still rewarded through it.
    # Neither is in a preset (GAN_NOTES.md round 26, small, seed 2): the probe scored as no head (recall
    # 0.81 over 8 draws at 0.89x of recognition), a head from 100 kimg as the preset (0.77 at 0.92x).
    aux_probe: bool = False
    # Mode-seeking term in G's loss (losses.mode_seeking, MSGAN): designs of one category drawn from
    # distant z are pushed apart, against typical designs. 0 = off (the loss of checkpoints before it,
    # and of every preset but small, which takes 0.3): at 1 (small at Adam 2e-4, ~4,100 steps, two seeds)
    # recall_ratio rose 0.33-0.39 -> 0.49-0.52 but GAN-test fell 0.81-0.86x -> 0.69x of the judge
    # (GAN_NOTES.md round 10).
    mode_seeking: float = 0.0
    # Real batches sample category c with weight count(c) ** -class_balance: 0 = the catalogue's mix,
    # 1 = every category equally often (rare categories are otherwise learned last, or never).
    class_balance: float = 0.0

    def channels(self, res: int) -> int:
        return max(self.channel_min, min(self.channel_base // res, self.channel_max))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GanConfig:
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        cfg.betas = list(cfg.betas)
        validate(cfg)
        return cfg


# The fields that fix the shapes of the weights: a fine-tune must keep them from its parent; every other
# field (learning rates, R1, EMA, augmentation, losses) comes from the current preset, so that what is
# learned about training reaches descendants instead of the parent's config being frozen into them.
ARCH_FIELDS = (
    "arch",
    "generator",
    "preset",
    "resolution",
    "z_dim",
    "w_dim",
    "embed_dim",
    "mapping_layers",
    "channel_base",
    "channel_max",
    "channel_min",
    "g_convs",
    "d_convs",
    "g_norm",
    "d_norm",
    "conditional",
)


def r1_gamma_for(resolution: int, batch_size: int) -> float:
    """StyleGAN2-ADA's heuristic: gamma = 0.0002 * R^2 / batch (0.0064 at 32 px / 32, 0.05 at 128 / 64)."""
    return 0.0002 * resolution**2 / batch_size


# Widths and batch per preset; the resolution can be overridden (widths follow channel_base / r).
# GPU presets train long enough for D to memorise a catalogue of a few thousand photos: DiffAugment with
# an adaptive probability, starting at 0 (no augmentation until D shows overfitting).
_ADA = dict(augment="color,translation,cutout", augment_p=0.0, ada_target=0.6)
# Class signal (GAN_NOTES.md, rounds 4 and 5): every category equally often in the batches (real and
# fake; count ** -1) and the classifier head at 0.3. At full length (tiny, 15 CPU-minutes, ~6,000
# steps, six runs, truncation from the sweep) 117 of 120 per-category GAN-tests reach 0.336 (the judge:
# 0.84 on held-out photos; skirt and longsleeve at 0.27-0.31 miss); with balance 0.5 skirt (112 photos)
# stayed at 0.33 on seed 0 and longsleeve at 0.14 on seed 1; with the head at 0.1 skirt stayed at
# 0.11-0.27 (round 4); with the head at 1.0 (seed 0) skirt stayed at 0.29-0.31 and recall fell to 0.29.
# Early in a run they cost (round 3: at 230-400 steps the head at 0.2 worsened KID). At 64 px (small, 30
# CPU-minutes, ~8,000 steps, seed 0) the head at 0 / 0.1 / 0.3 gave GAN-test 0.84x / 0.94x / 0.97x of
# the judge and recall_ratio 0.71 / 0.67 / 0.67, within its noise (GAN_NOTES.md round 15); over 8
# draws, with R3GAN's betas and R1, the head at 0 is worth 0.05-0.08 of recall at ~7,300 steps and none
# at ~3,400, where recognition falls below 0.75x without it (rounds 23-24); small drops it (round 27);
# base and large carry it unmeasured.
_CLASS_SIGNAL = dict(class_balance=1.0, aux_weight=0.3)

PRESETS: dict[str, dict] = {
    # 32 px, sized so that one CPU thread runs a few steps per second (see GAN_NOTES.md): narrow, one
    # conv per block, light R1.
    "tiny": dict(
        resolution=32,
        z_dim=64,
        w_dim=128,
        channel_base=512,
        channel_max=128,
        g_convs=1,
        d_convs=1,
        batch_size=32,
        # DiffAugment off: in a CPU-minutes budget (hundreds of steps) it slowed learning (KID 0.52 with,
        # 0.29 without, at 300 steps); it pays off in long runs, where D starts to memorise the catalogue.
        augment="",
        # Against within-category collapse (GAN_NOTES.md): z keeps half of the mapping's input (a 64-d
        # embedding beside the 64-d z, not 128-d), and D's minibatch-stddev compares samples of one
        # category. 15 CPU-minutes: KID 0.333 -> 0.104, recall 0.01 -> 0.28.
        embed_dim=64,
        mbstd_by_class=True,
        **_CLASS_SIGNAL,
    ),
    # 64 px on a CPU: the StyleGAN2-style generator (stylegan.py) at tiny's widths per resolution plus
    # one 64 px block (16 channels). channel_base 1024 (twice tiny's widths) ran 1.0 step per
    # CPU-second, 512 runs 2.1: in 30 minutes a thread reaches about the step count at which tiny met
    # its targets (GAN_NOTES.md, rounds 8 and 9). What tiny learned carries over: the class embedding
    # as wide as z, per-category minibatch-stddev, the class signal, no augmentation (a CPU run is too
    # short for D to memorise the catalogue), one conv per block. Adam at twice the default rate: at the
    # same 4,096-4,177 steps (two seeds) GAN-test 0.81-0.86x -> 0.98-0.99x of the judge, recall_ratio
    # 0.33-0.39 -> 0.43-0.49, diversity 0.90 kept (GAN_NOTES.md round 11). Fine-tunes take it too. As
    # `--minutes 30` at one thread (5,006-5,033 steps, two seeds): 0.89-1.00x, every category 0.57x or
    # more, diversity 0.90-0.91, recall_ratio 0.53-0.60 (round 12). The mode-seeking term at 0.3, with a
    # sweep that keeps recall within its noise, as `--minutes 30` (5,017-5,019 steps): 0.84-0.94x, every
    # category 0.60x or more, diversity 0.91-0.97, recall_ratio 0.58-0.71 (round 13). The paired loss
    # (round 20, bf16 on a Xeon with AMX, two seeds, 6,700-7,400 steps): KID 0.034 / 0.034 against the
    # non-saturating loss's 0.073 (seed 0), recognition 1.02x / 0.98x, recall_ratio over 8 draws 0.71 /
    # 0.73 against 0.68, at the same steps/s. R3GAN's optimiser and penalty whole (rounds 22-23): Adam at
    # betas (0, 0.99) and R1/R2 at gamma 0.2 (7.8x StyleGAN2-ADA's heuristic at 64 px and batch 32), on
    # four seeds over two hosts: recall_ratio over 8 draws 0.75-0.81 (mean 0.78) against the preset's
    # 0.71-0.76 before (mean 0.73), recognition 0.99-1.04x, diversity 0.94-0.97; either change alone
    # gave none (0.72 / 0.72 and 0.75).
    "small": dict(
        resolution=64,
        generator="style",
        sample_noise="seeded",
        lr_g=4e-4,
        lr_d=4e-4,
        z_dim=64,
        w_dim=128,
        embed_dim=64,
        mbstd_by_class=True,
        channel_base=512,
        channel_max=128,
        g_convs=1,
        d_convs=1,
        batch_size=32,
        augment="",
        mode_seeking=0.3,
        loss="rpgan",
        betas=[0.0, 0.99],
        r1_gamma=0.2,  # at 64 px and batch 32; another resolution or batch scales it as the heuristic does
        # Balanced categories, no classifier head: the head makes the designs typical. With it (0.3) a
        # run alone on both cores (10,840 steps, bf16) held recall at 0.79 over 8 draws; without it
        # (11,700-16,200 steps, seeds 0-3 in bf16, seed 2 in fp32) recall 0.85-0.90 at 0.90-0.94x of
        # recognition, every category 0.61x or more (GAN_NOTES.md rounds 26-27). The head is worth its
        # recognition only in short runs: at 3,400 steps (one fp32 thread) recognition fell to 0.63 /
        # 0.66x without it (round 24), at 5,500 (fp32, both cores) it holds at 0.80x (round 27).
        # `--set aux_weight=0.3` brings it back; a fine-tune of a parent trained with it drops it and
        # keeps the rest of D.
        class_balance=1.0,
    ),
    # 128 px for a GPU: the same family at StyleGAN2's widths, two convs per block, ADA. Not measured
    # on a GPU yet.
    "base": dict(
        resolution=128,
        generator="style",
        sample_noise="seeded",
        z_dim=128,
        w_dim=256,
        embed_dim=128,
        mbstd_by_class=True,
        channel_base=16384,
        channel_max=512,
        batch_size=64,
        **_ADA,
        **_CLASS_SIGNAL,
    ),
    # 256 px for a GPU with room: as base, one more block, a smaller batch.
    "large": dict(
        resolution=256,
        generator="style",
        sample_noise="seeded",
        z_dim=128,
        w_dim=256,
        embed_dim=128,
        mbstd_by_class=True,
        channel_base=32768,
        channel_max=512,
        batch_size=32,
        **_ADA,
        **_CLASS_SIGNAL,
    ),
}

# What the seed's DCGAN baseline turns off: no EMA (G_ema is a copy of G), no augmentation, no R1,
# no conditioning, the seed's loss. Everything else (widths, batch, Adam 2e-4 / 0.5, 0.999) is shared.
_DCGAN_OVERRIDES = dict(
    loss="ns",
    ema_kimg=0.0,
    augment="",
    xflip=False,
    r1_gamma=0.0,
    conditional=False,
    ada_target=0.0,
    aux_weight=0.0,
    class_balance=0.0,
    mode_seeking=0.0,
)


def validate(cfg: GanConfig) -> None:
    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown arch {cfg.arch!r}; expected one of {', '.join(ARCHS)}")
    if cfg.sample_noise not in SAMPLE_NOISE:
        expected = ", ".join(SAMPLE_NOISE)
        raise ValueError(f"unknown sample_noise {cfg.sample_noise!r}; expected one of {expected}")
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; expected one of {', '.join(LOSSES)}")
    if cfg.generator not in GENERATORS:
        raise ValueError(f"unknown generator {cfg.generator!r}; expected one of {', '.join(GENERATORS)}")
    r = cfg.resolution
    if not isinstance(r, int) or r < MIN_RESOLUTION or r > MAX_RESOLUTION or r & (r - 1):
        raise ValueError(
            f"resolution must be a power of two between {MIN_RESOLUTION} and {MAX_RESOLUTION}, got {r!r}"
        )
    if cfg.num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {cfg.num_classes}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {cfg.batch_size}")
    if not 0.0 <= cfg.augment_p <= 1.0:
        raise ValueError(f"augment_p must be in [0, 1], got {cfg.augment_p}")
    if not 0.0 <= cfg.ada_target < 1.0:
        raise ValueError(f"ada_target must be in [0, 1), got {cfg.ada_target}")
    if len(cfg.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.betas):
        raise ValueError(f"betas must be two numbers in [0, 1) (Adam's beta1, beta2), got {cfg.betas!r}")
    signal = (
        "aux_weight",
        "aux_g_scale",
        "aux_hold_kimg",
        "aux_fade_kimg",
        "aux_start_kimg",
        "class_balance",
        "mode_seeking",
    )
    negative = [name for name in signal if getattr(cfg, name) < 0]
    if negative:
        raise ValueError(f"{', '.join(negative)} must not be negative")


def aux_weight_at(cfg: GanConfig, cur_nimg: int) -> float:
    """The classifier head's weight after ``cur_nimg`` training images (see ``aux_fade_kimg`` and
    ``aux_start_kimg``)."""
    if cur_nimg < cfg.aux_start_kimg * 1000:
        return 0.0
    if cfg.aux_fade_kimg <= 0:
        return cfg.aux_weight
    past = cur_nimg / 1000 - cfg.aux_hold_kimg
    return cfg.aux_weight * min(1.0, max(0.0, 1.0 - past / cfg.aux_fade_kimg))


def preset_config(
    preset: str, resolution: int | None = None, arch: str = "atelier", **overrides
) -> GanConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    values = dict(PRESETS[preset], preset=preset, arch=arch)
    if resolution is not None:
        values["resolution"] = resolution
    # R1 follows the final resolution and batch unless given explicitly: StyleGAN2-ADA's heuristic, or a
    # preset's own gamma, which holds at the preset's resolution and batch and scales as the heuristic.
    batch = overrides.get("batch_size", values["batch_size"])
    gamma = r1_gamma_for(values["resolution"], batch)
    own = PRESETS[preset]
    if "r1_gamma" in own:
        gamma *= own["r1_gamma"] / r1_gamma_for(own["resolution"], own["batch_size"])
    values["r1_gamma"] = gamma
    if arch == "dcgan":
        values.update(_DCGAN_OVERRIDES)
        # The paper's widths, ngf = ndf = 64 at the layer next to the image: 32px -> 256, 128, 64.
        values.update(channel_base=32 * values["resolution"], channel_max=512)
    values.update(overrides)
    cfg = GanConfig(**values)
    cfg.betas = list(cfg.betas)  # the config's own, never the preset table's list
    validate(cfg)
    return cfg
