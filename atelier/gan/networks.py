"""The ``atelier`` networks: a class-conditional generator with a mapping MLP, and a projection D.

The generator here is the FiLM one (``generator: "film"``, the 32 px ``tiny`` preset's); the
StyleGAN2-style one (``generator: "style"``) lives in ``stylegan.py`` and shares the mapping
(``mapping.py``) and this D.

    Generator
      z, label -> Mapping (pixel-norm z ++ class embedding -> MLP) -> w      (w_avg per class: truncation)
      w -> Linear -> 4x4 -> [upsample x2 -> conv3x3 -> FiLM(w) -> conv3x3 -> FiLM(w)] * log2(R/4) -> toRGB

    Discriminator
      x -> fromRGB -> [conv3x3 -> conv3x3 -> avgpool, residual] * log2(R/4)
        -> minibatch-stddev (per label if mbstd_by_class) -> conv -> fc -> phi
        logit = fc(phi) + <embed(label), phi>   (projection)

Why: a mapping network gives a w space where truncation towards a per-class mean and linear
interpolation stay on the manifold; FiLM after pixel-norm is the cheap (non-grouped-conv) cousin of
StyleGAN's modulation, fast on CPU; no batch norm anywhere in G, so an image depends only on its
own noise, never on the rest of the batch.

Both nets share one calling convention with the DCGAN baseline (``dcgan.py``):
``G(z, labels, truncation=1.0)``, ``G.mapping(z, labels, truncation)``, ``G.synthesis(w)``,
``D(images, labels) -> logits[N]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import GanConfig
from .dcgan import DCGANDiscriminator, DCGANGenerator
from .mapping import Mapping, he_init, pixel_norm
from .stylegan import StyleGenerator


class FiLM(nn.Module):
    """Per-channel scale and shift from w, applied to pixel-normalised features."""

    def __init__(self, w_dim: int, channels: int, norm: str = "pixel"):
        super().__init__()
        # "batch": conditional batch norm (BigGAN-style, affine from w). Sampling runs in eval mode on the
        # running statistics, so an image still depends only on its own noise.
        self.bn = nn.BatchNorm2d(channels, affine=False) if norm == "batch" else None
        self.affine = nn.Linear(w_dim, 2 * channels)
        self.affine.keep_init = True  # small default weights: modulation starts gentle
        nn.init.zeros_(self.affine.bias)  # start as the identity: scale 1, shift 0

    def forward(self, x, w):
        scale, shift = self.affine(w)[:, :, None, None].chunk(2, dim=1)
        x = self.bn(x) if self.bn is not None else pixel_norm(x)
        return F.leaky_relu(x * (1 + scale) + shift, 0.2)


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int, w_dim: int, n_convs: int = 2, norm: str = "pixel"):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(n_convs)
        )
        self.mods = nn.ModuleList(FiLM(w_dim, cout, norm) for _ in range(n_convs))

    def forward(self, x, w):
        # Nearest upsample + conv instead of transposed conv: no checkerboard artefacts.
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        for conv, mod in zip(self.convs, self.mods, strict=False):
            x = mod(conv(x), w)
        return x


class Generator(nn.Module):
    def __init__(self, cfg: GanConfig):
        super().__init__()
        self.z_dim, self.resolution, self.num_classes = cfg.z_dim, cfg.resolution, cfg.num_classes
        self.w_avg_beta = cfg.w_avg_beta
        self.mapping_net = Mapping(
            cfg.z_dim, cfg.w_dim, cfg.num_classes, cfg.mapping_layers, cfg.conditional, cfg.embed_dim
        )
        c4 = cfg.channels(4)
        self.const = nn.Linear(cfg.w_dim, c4 * 16)
        self.conv4 = nn.Conv2d(c4, c4, 3, padding=1)
        self.mod4 = FiLM(cfg.w_dim, c4, cfg.g_norm)
        blocks, cin = [], c4
        for k in range(3, int(math.log2(cfg.resolution)) + 1):
            cout = cfg.channels(2**k)
            blocks.append(GBlock(cin, cout, cfg.w_dim, cfg.g_convs, cfg.g_norm))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.Conv2d(cin, 3, 1)
        if cfg.he_init:
            he_init(self)

    def mapping(self, z, labels, truncation: float = 1.0, update_w_avg: bool = False):
        return self.mapping_net(z, labels, truncation, update_w_avg, self.w_avg_beta)

    def synthesis(self, w):
        x = self.const(w).view(w.shape[0], -1, 4, 4)
        x = self.mod4(self.conv4(F.leaky_relu(pixel_norm(x), 0.2)), w)
        for block in self.blocks:
            x = block(x, w)
        return self.to_rgb(x)  # linear output in ~[-1, 1]; clamped only when converted to pixels

    def forward(self, z, labels, truncation: float = 1.0, update_w_avg: bool = False):
        return self.synthesis(self.mapping(z, labels, truncation, update_w_avg))


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, n_convs: int = 2, norm: bool = False):
        super().__init__()
        self.norms = nn.ModuleList(
            nn.BatchNorm2d(cout if i == n_convs - 1 else cin) if norm else nn.Identity()
            for i in range(n_convs)
        )
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout if i == n_convs - 1 else cin, 3, padding=1) for i in range(n_convs)
        )
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        y = x
        for conv, norm in zip(self.convs, self.norms, strict=True):
            y = F.leaky_relu(norm(conv(y)), 0.2)
        # Residual D (StyleGAN2): gradients reach the early layers, variance kept by 1/sqrt(2). Pooling is
        # linear, so the two branches share one pool (avg_pool2d was a fifth of a CPU step).
        return downsample2(y + self.skip(x)) * (1 / math.sqrt(2))


def downsample2(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling as a reshape-mean: same numbers, much cheaper backward on CPU than avg_pool2d.

    A channels_last tensor (the GPU layout) cannot be viewed that way; there the pooling kernel is fast.
    """
    if not x.is_contiguous():
        return F.avg_pool2d(x, 2)
    n, c, h, w = x.shape
    return x.view(n, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append the std of features across a small group of samples: lets D notice a collapsed batch."""
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group, n) + 1) if n % d == 0)
    y = x.float().reshape(g, n // g, c, h, w)  # statistics in fp32 under autocast
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # [n/g, c, h, w]
    y = y.mean(dim=(1, 2, 3)).view(n // g, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


def minibatch_stddev_by_label(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Minibatch-stddev where the groups are the samples sharing a label (a lone sample gets ~0).

    Real and fake batches carry the same labels, so the group sizes match between the two; a G that
    collapses within a category then shows a smaller std than the reals of that category.
    """
    n, c, h, w = x.shape
    flat = x.float().flatten(1)  # statistics in fp32 under autocast
    # Counts by index_add, not bincount: bincount makes the host wait for the device.
    counts = torch.zeros(num_classes, 1, device=x.device).index_add_(0, labels, flat.new_ones(n, 1))
    counts = counts.clamp(min=1)
    means = flat.new_zeros(num_classes, flat.shape[1]).index_add_(0, labels, flat)
    dev2 = (flat - (means / counts)[labels]).square()
    var = torch.zeros_like(means).index_add_(0, labels, dev2) / counts
    y = var.add(1e-8).sqrt().mean(dim=1)[labels].view(n, 1, 1, 1).expand(n, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


class Discriminator(nn.Module):
    def __init__(self, cfg: GanConfig):
        super().__init__()
        self.mbstd_group = cfg.mbstd_group
        self.mbstd_by_class = cfg.mbstd_by_class and cfg.conditional
        self.num_classes = cfg.num_classes
        res = cfg.resolution
        self.from_rgb = nn.Conv2d(3, cfg.channels(res), 1)
        blocks = []
        while res > 4:
            blocks.append(DBlock(cfg.channels(res), cfg.channels(res // 2), cfg.d_convs, cfg.d_norm))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        c4 = cfg.channels(4)
        self.conv = nn.Conv2d(c4 + 1, c4, 3, padding=1)
        self.fc = nn.Linear(c4 * 16, c4)
        self.out = nn.Linear(c4, 1)
        # Projection discriminator (Miyato & Koyama 2018): the class enters as an inner product with
        # the features, which conditions far better than concatenating a one-hot.
        self.embed = nn.Embedding(cfg.num_classes, c4) if cfg.conditional else None
        # Auxiliary classifier (AC-GAN) beside the projection: a direct, per-category training signal.
        self.aux = nn.Linear(c4, cfg.num_classes) if cfg.conditional and cfg.aux_weight > 0 else None
        if cfg.he_init:
            he_init(self)

    def forward(self, x, labels, with_aux: bool = False, aux_probe: bool = False):
        """Logits [N]; with ``with_aux``, also the auxiliary class logits [N, C] (None without the head);
        with ``aux_probe`` the head reads D's features detached (its loss trains the head only)."""
        x = F.leaky_relu(self.from_rgb(x), 0.2)
        x = self.blocks(x)
        if self.mbstd_by_class:
            x = minibatch_stddev_by_label(x, labels, self.num_classes)
        else:
            x = minibatch_stddev(x, self.mbstd_group)
        x = F.leaky_relu(self.conv(x), 0.2)
        phi = F.leaky_relu(self.fc(x.flatten(1)), 0.2)
        logits = self.out(phi).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(labels) * phi).sum(dim=1) / math.sqrt(phi.shape[1])
        if with_aux:
            return logits, self.aux(phi.detach() if aux_probe else phi) if self.aux is not None else None
        return logits


def build_networks(cfg: GanConfig) -> tuple[nn.Module, nn.Module]:
    """(G, D) for ``cfg.arch``: the seed's DCGAN baseline, or the atelier D with the generator that
    ``cfg.generator`` names (the FiLM one above, or the StyleGAN2-style one of ``stylegan.py``)."""
    if cfg.arch == "dcgan":
        return DCGANGenerator(cfg), DCGANDiscriminator(cfg)
    return build_generator(cfg), Discriminator(cfg)


def build_generator(cfg: GanConfig) -> nn.Module:
    if cfg.arch == "dcgan":
        return DCGANGenerator(cfg)
    return StyleGenerator(cfg) if cfg.generator == "style" else Generator(cfg)
