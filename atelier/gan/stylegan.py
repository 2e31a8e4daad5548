"""A StyleGAN2-style generator (Karras et al. 2020), class-conditional, at any power-of-two resolution.

    z, label -> Mapping (the same as the FiLM generator's: pixel-norm z ++ class embedding -> MLP) -> w
    const 4x4 -> [ModConv3x3 + noise] -> toRGB
      -> per resolution: upsample x2 -> [ModConv3x3 + noise] * g_convs -> toRGB; rgb = up(rgb) + toRGB

Modulated convolution: each input channel is scaled by a style s = A(w) (A: a Linear, bias 1, so it
starts as the identity); demodulation divides each output channel by the norm the scaled weights
would give it, so activations keep unit variance without any normalisation layer, and no statistic is
taken over the batch or over an image's pixels (the "droplet" artefacts of AdaIN). It runs as
StyleGAN2's non-fused form, x * s -> conv(x, W) -> * d: one ordinary convolution per layer (no
per-sample grouped conv), which is fast on a CPU, keeps channels_last, and is exact.

Noise: one learned strength per layer (starts at 0) times a fresh per-pixel N(0, 1) map while training.
When sampling, the maps are an input (``noise``: [N, noise_size], every layer's map flattened and
concatenated), drawn by ``sampling.py`` from each image's own seed (``sample_noise: "seeded"``), so that a
design depends only on its seed and label, never on the batch or on a global random stream. Without that
input, eval mode falls back to one fixed map per layer (a buffer, StyleGAN2's noise_mode="const"): every
design then carries the same texture, a variety the model learned that sampling threw away; checkpoints
saved before the field (``sample_noise: "const"``) keep sampling that way, so their designs do not change.

Skip outputs: every resolution adds its toRGB to the upsampled image of the one before, so the low
resolutions carry the coarse shape from the first steps (no progressive growing).

Weights are stored at He scale (1/sqrt(fan_in)), as the FiLM generator's are, so that the presets'
learning rates move them alike (GAN_NOTES.md round 8).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import GanConfig
from .mapping import Mapping, he_init


class ModulatedConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        # Stored at He scale (not StyleGAN's equalised learning rate, N(0, 1) scaled at run time): with
        # the presets' Adam lr of 2e-4, weights of size 1 moved ~25x slower relative to their size than
        # the FiLM G's, and D won at once (GAN_NOTES.md round 8: loss_g 6.6 against 1.9 after 100 steps).
        self.scale = 1.0
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel) / math.sqrt(cin * kernel * kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.affine = nn.Linear(w_dim, cin)
        self.affine.keep_init = True  # not He-initialised: the style must start near 1
        nn.init.normal_(self.affine.weight, std=1 / math.sqrt(w_dim))
        nn.init.ones_(self.affine.bias)
        self.demodulate, self.padding = demodulate, kernel // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # [N, cin]
        weight = self.weight * self.scale
        x = x * s[:, :, None, None].to(x.dtype)
        x = F.conv2d(x, weight.to(x.dtype) if x.dtype != weight.dtype else weight, padding=self.padding)
        if self.demodulate:
            # d[n, o] = 1 / sqrt(sum_{i,k} (W[o, i, k] s[n, i])^2): in fp32 (bf16 under autocast would lose
            # the small sums), then cast to the activations' precision.
            d = torch.rsqrt(s.float().square() @ weight.float().square().sum(dim=(2, 3)).T + 1e-8)
            x = x * d[:, :, None, None].to(x.dtype)
        return x + self.bias[None, :, None, None].to(x.dtype)


class StyleLayer(nn.Module):
    """Modulated 3x3 conv, per-pixel noise, bias and leaky ReLU (x sqrt(2), StyleGAN's gain)."""

    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int):
        super().__init__()
        self.conv = ModulatedConv2d(cin, cout, 3, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        # The eval-mode noise: fixed, so sampling is a function of the seed only.
        gen = torch.Generator().manual_seed(resolution * 1_000 + cout)
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution, generator=gen))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv(x, w)
        if noise is None and self.training:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        elif noise is None:
            noise = self.noise_const
        x = x + noise.to(x.dtype) * self.noise_strength.to(x.dtype)
        return F.leaky_relu(x, 0.2) * math.sqrt(2)


class ToRGB(nn.Module):
    def __init__(self, cin: int, w_dim: int):
        super().__init__()
        # No demodulation: the output's scale is the image's, learned.
        self.conv = ModulatedConv2d(cin, 3, 1, w_dim, demodulate=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w)


class StyleBlock(nn.Module):
    def __init__(self, cin: int, cout: int, w_dim: int, resolution: int, n_convs: int):
        super().__init__()
        self.layers = nn.ModuleList(
            StyleLayer(cin if i == 0 else cout, cout, w_dim, resolution) for i in range(n_convs)
        )
        self.to_rgb = ToRGB(cout, w_dim)

    def forward(self, x: torch.Tensor, rgb: torch.Tensor, w: torch.Tensor, noise: list | None = None):
        noise = noise or [None] * len(self.layers)
        # Nearest upsample + conv for the features (no checkerboard from transposed convs); bilinear for
        # the image skip, which is added to directly and would show nearest's blocks.
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        for i, layer in enumerate(self.layers):
            x = layer(x, w, noise[i])
        rgb = F.interpolate(rgb, scale_factor=2.0, mode="bilinear", align_corners=False)
        return x, rgb + self.to_rgb(x, w)


class StyleGenerator(nn.Module):
    """The same calling convention as the other generators: ``G(z, labels, truncation)``,
    ``G.mapping(z, labels, truncation, update_w_avg)``, ``G.synthesis(w)``; plus ``noise=`` (a
    [N, noise_size] tensor, see the module's docstring) on ``G(...)`` and ``G.synthesis``.

    ``noise_size``: how many noise values one sampled image takes (0 where sampling uses the fixed maps).
    """

    def __init__(self, cfg: GanConfig):
        super().__init__()
        self.z_dim, self.resolution, self.num_classes = cfg.z_dim, cfg.resolution, cfg.num_classes
        self.w_avg_beta = cfg.w_avg_beta
        self.mapping_net = Mapping(
            cfg.z_dim, cfg.w_dim, cfg.num_classes, cfg.mapping_layers, cfg.conditional, cfg.embed_dim
        )
        if cfg.he_init:
            he_init(self.mapping_net)
        c4 = cfg.channels(4)
        self.const = nn.Parameter(torch.randn(1, c4, 4, 4))
        self.layer4 = StyleLayer(c4, c4, cfg.w_dim, 4)
        self.rgb4 = ToRGB(c4, cfg.w_dim)
        blocks, cin = [], c4
        self.noise_shapes = [4]  # the side of each layer's noise map, in the order the layers run
        for k in range(3, int(math.log2(cfg.resolution)) + 1):
            cout = cfg.channels(2**k)
            blocks.append(StyleBlock(cin, cout, cfg.w_dim, 2**k, max(1, cfg.g_convs)))
            self.noise_shapes += [2**k] * max(1, cfg.g_convs)
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.noise_size = sum(r * r for r in self.noise_shapes) if cfg.sample_noise == "seeded" else 0

    def mapping(self, z, labels, truncation: float = 1.0, update_w_avg: bool = False):
        return self.mapping_net(z, labels, truncation, update_w_avg, self.w_avg_beta)

    def _noise_maps(self, noise: torch.Tensor | None) -> list:
        """[N, noise_size] -> one [N, 1, r, r] map per layer, in the order the layers run."""
        if noise is None:
            return [None] * len(self.noise_shapes)
        total = sum(r * r for r in self.noise_shapes)
        if noise.dim() != 2 or noise.shape[1] != total:
            raise ValueError(f"noise must be [N, {total}], got {list(noise.shape)}")
        maps, at = [], 0
        for r in self.noise_shapes:
            maps.append(noise[:, at : at + r * r].reshape(-1, 1, r, r))
            at += r * r
        return maps

    def synthesis(self, w: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        maps = self._noise_maps(noise)
        x = self.const.expand(w.shape[0], -1, -1, -1)
        x = self.layer4(x, w, maps[0])
        rgb = self.rgb4(x, w)
        at = 1
        for block in self.blocks:
            n = len(block.layers)
            x, rgb = block(x, rgb, w, maps[at : at + n])
            at += n
        return rgb  # linear output in ~[-1, 1]; clamped only when converted to pixels

    def forward(self, z, labels, truncation: float = 1.0, update_w_avg: bool = False, noise=None):
        return self.synthesis(self.mapping(z, labels, truncation, update_w_avg), noise)
