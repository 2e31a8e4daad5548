"""The parts every conditional ``atelier`` generator shares: He initialisation, pixel norm, and the
mapping network z, label -> w with its per-class running mean of w (the centre truncation pulls to)."""

from __future__ import annotations

import torch
from torch import nn


def he_init(module: nn.Module) -> None:
    """He (Kaiming) init for leaky-ReLU layers.

    PyTorch's default init (kaiming_uniform with a=sqrt(5)) shrinks each layer's output by ~sqrt(3);
    through a BN-free D that leaves logits near 0 and loss_d stuck at 2 log 2 for hundreds of steps.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not getattr(m, "keep_init", False):
            nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def pixel_norm(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(dim=dim, keepdim=True) + 1e-8)


class Mapping(nn.Module):
    def __init__(
        self, z_dim: int, w_dim: int, num_classes: int, layers: int, conditional: bool, embed_dim: int = 0
    ):
        super().__init__()
        self.conditional = conditional
        embed_dim = embed_dim or w_dim
        self.embed = nn.Embedding(num_classes, embed_dim) if conditional else None
        dims = [z_dim + (embed_dim if conditional else 0)] + [w_dim] * layers
        self.net = nn.Sequential(
            *[m for a, b in zip(dims, dims[1:], strict=False) for m in (nn.Linear(a, b), nn.LeakyReLU(0.2))]
        )
        # Running mean of w per class: the centre that truncation pulls towards.
        self.register_buffer("w_avg", torch.zeros(num_classes, w_dim))

    def forward(self, z, labels, truncation: float = 1.0, update_w_avg: bool = False, beta: float = 0.995):
        x = pixel_norm(z)
        if self.conditional:
            x = torch.cat([x, pixel_norm(self.embed(labels))], dim=1)
        w = self.net(x)
        if update_w_avg:
            self._track(w.detach().float(), labels, beta)
        if isinstance(truncation, torch.Tensor) or truncation != 1.0:
            # w_avg is an fp32 buffer while w is bf16 under autocast: lerp in fp32 (the next Linear casts).
            # A tensor truncation holds one value per sample ([N, 1]): a per-category default.
            if isinstance(truncation, torch.Tensor):
                truncation = truncation.to(device=w.device, dtype=torch.float32)
            w = self.w_avg[labels].lerp(w.float(), truncation)
        return w

    @torch.no_grad()
    def _track(self, w, labels, beta):
        # No boolean-mask indexing or bincount: both make the host wait for the device every step.
        sums = torch.zeros_like(self.w_avg).index_add_(0, labels, w)
        counts = torch.zeros_like(self.w_avg[:, 0]).index_add_(0, labels, torch.ones_like(w[:, 0]))
        means = sums / counts.clamp(min=1)[:, None]
        seen = (counts > 0)[:, None]
        self.w_avg.copy_(torch.where(seen, means.lerp(self.w_avg, beta), self.w_avg))
