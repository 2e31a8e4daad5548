"""The seed's baseline: DCGAN (Radford et al. 2016), unconditional, at any power-of-two resolution.

    G: z -> ConvT 4x4 -> [ConvT(4, stride 2) -> BN -> ReLU] ... -> ConvT -> tanh
    D: x -> Conv(4, stride 2) -> LReLU -> [Conv(4, stride 2) -> BN -> LReLU] ... -> Conv 4x4 -> logit

Labels are accepted and ignored, so that training, sampling and metrics call both archs the same way.
Sampling uses eval mode (BN running statistics), so an image depends only on its own noise.
"""

from __future__ import annotations

import math

from torch import nn

from .config import GanConfig


def _init(m: nn.Module) -> None:
    # DCGAN's N(0, 0.02) initialisation.
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, cfg: GanConfig):
        super().__init__()
        self.z_dim, self.resolution, self.num_classes = cfg.z_dim, cfg.resolution, cfg.num_classes
        c4 = cfg.channels(4)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.z_dim, c4, 4, 1, 0, bias=False),
            nn.BatchNorm2d(c4),
            nn.ReLU(),
        ]
        cin = c4
        for k in range(3, int(math.log2(cfg.resolution))):
            cout = cfg.channels(2**k)
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        layers += [nn.ConvTranspose2d(cin, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_init)

    def mapping(self, z, labels, truncation: float = 1.0, update_w_avg: bool = False):
        # No mapping network: "w" is z, and truncation scales z towards its mean (zero).
        return z * truncation

    def synthesis(self, w):
        return self.net(w[:, :, None, None])

    def forward(self, z, labels, truncation: float = 1.0, update_w_avg: bool = False):
        return self.synthesis(self.mapping(z, labels, truncation))


class DCGANDiscriminator(nn.Module):
    def __init__(self, cfg: GanConfig):
        super().__init__()
        res = cfg.resolution
        cout = cfg.channels(res // 2)
        layers: list[nn.Module] = [nn.Conv2d(3, cout, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        res //= 2
        while res > 4:
            cin, cout = cout, cfg.channels(res // 2)
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
            res //= 2
        layers.append(nn.Conv2d(cout, 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)
        self.apply(_init)

    def forward(self, x, labels, with_aux: bool = False, aux_probe: bool = False):
        logits = self.net(x).flatten()
        return (logits, None) if with_aux else logits
