"""The seed's losses, on logits, plus the R1 penalty.

With D(x) = sigmoid(l):  log D(x) = -softplus(-l)  and  log(1 - D(x)) = -softplus(l), so

    L_D = -E[log D(x)] - E[log(1 - D(G(z)))] = E[softplus(-l_real)] + E[softplus(l_fake)]
    L_G = -E[log D(G(z))]                     = E[softplus(-l_fake)]          (non-saturating)

The softplus form is the same number without the log(sigmoid) underflow at large |l|.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """E[||grad_x D(x)||^2] on reals (Mescheder et al. 2018); ``real_images`` must require grad."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean()
