"""The seed's losses, on logits, plus the R1 penalty.

With D(x) = sigmoid(l):  log D(x) = -softplus(-l)  and  log(1 - D(x)) = -softplus(l), so

    L_D = -E[log D(x)] - E[log(1 - D(G(z)))] = E[softplus(-l_real)] + E[softplus(l_fake)]
    L_G = -E[log D(G(z))]                     = E[softplus(-l_fake)]          (non-saturating)

The softplus form is the same number without the log(sigmoid) underflow at large |l|.

Relativistic pairing (RpGAN; Jolicoeur-Martineau 2019, with R1 and R2 as R3GAN, Huang et al. 2024): D
judges each fake against a real of the batch (row i with row i, which share a label) rather than each
image on its own, so G gains by moving a fake past its real partner wherever that partner lies, not by
collapsing onto the region D currently scores highest:

    L_D = E[softplus(l_fake - l_real)]      L_G = E[softplus(l_real - l_fake)]

Mode seeking (MSGAN, Mao et al. 2019), for G: two designs of one category drawn from different z should
differ as their z do. ``mode_seeking`` is 1 / (|G(z1) - G(z2)| / |z1 - z2|), averaged over the pairs of
a batch that share a label; it is large where G maps distant z to near-identical designs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def rp_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(fake_logits - real_logits).mean()


def rp_g_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(real_logits - fake_logits).mean()


def r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """E[||grad_x D(x)||^2] on reals (Mescheder et al. 2018); ``real_images`` must require grad. On fakes
    the same function is R2."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean()


def mode_seeking(
    images: torch.Tensor, z: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Mean over same-label pairs of mean|z_i - z_j| / mean|G_i - G_j| (0 when no two rows share a label).

    All pairs of the batch, not only adjacent ones: with 10 categories a batch of 32 holds ~50 such pairs.
    No value is read on the host, so a CUDA step only queues kernels."""
    n = images.shape[0]
    flat = images.float().reshape(n, -1)
    d_img = torch.cdist(flat, flat, p=1) / flat.shape[1]
    d_z = torch.cdist(z.float(), z.float(), p=1) / z.shape[1]
    same = labels[:, None] == labels[None, :]
    pairs = torch.triu(same, diagonal=1)
    per_pair = d_z / (d_img + eps)
    # where() rather than indexing: a boolean mask's size would be read on the host.
    return torch.where(pairs, per_pair, 0.0).sum() / pairs.sum().clamp_min(1)
