"""DiffAugment (Zhao et al. 2020): differentiable colour / translation / cutout, applied to real AND fake.

A small catalogue (a few thousand photos) lets D memorise the reals; augmenting both reals and fakes,
in the D pass and in the G pass, keeps D honest without leaking augmentations into G's outputs (the
same transform is applied to what D sees of both distributions, and G is trained through it).

Every random draw comes from the caller's ``torch.Generator`` so a resumed run replays exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> list[str]:
    parts = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in parts if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}; expected a comma list of {POLICIES}")
    return parts


def _rand(gen, *shape, device):
    return torch.rand(*shape, generator=gen, device=device)


def color(x, gen):
    n, dev = x.shape[0], x.device
    x = x + (_rand(gen, n, 1, 1, 1, device=dev) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(gen, n, 1, 1, 1, device=dev) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(gen, n, 1, 1, 1, device=dev) + 0.5) + mean  # contrast


def translation(x, gen, ratio: float = 0.125):
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dev = x.device
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), generator=gen, device=dev)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=gen, device=dev)
    gy, gx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # zero border: what slides in is "nothing", as in DiffAugment
    idx = torch.arange(n, device=dev)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, gy, gx].permute(0, 3, 1, 2)


def cutout(x, gen, ratio: float = 0.5):
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dev = x.device
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen, device=dev)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen, device=dev)
    gy, gx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    dy, dx = gy - oy + ch // 2, gx - ox + cw // 2  # position inside the square, if 0 <= d < size
    inside = (dy >= 0) & (dy < ch) & (dx >= 0) & (dx < cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_FUNCS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: list[str], gen: torch.Generator) -> torch.Tensor:
    for name in policy:
        x = _FUNCS[name](x, gen)
    return x.contiguous()
