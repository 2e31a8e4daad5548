"""Sampling: one seed per image, so any image can be regenerated alone.

    image i of a request  <-  z_i = randn(z_dim, generator=Generator().manual_seed(seed + i))

z is always drawn on the CPU and then moved, so the same seed gives the same noise on every device,
at every batch size and position in the batch (G has no batch-dependent layer in eval mode). A style
generator that samples "seeded" noise inputs (``G.noise_size`` > 0) takes them from the same stream,
right after z: drawn per chunk of a request, never for the whole of it (50,000 images at 256 px would
be 35 GB of noise).

    load_generator(ckpt, device, precision) -> (G_ema in eval mode, config, class_names)
    generate(G, seeds=, labels=, truncation) -> uint8 [N, 3, R, R]   (truncation None: the model's default)
    interpolate(G, seed_a, seed_b, label, steps)  linear in w (the mapping output), ends included
    variations(G, seed, label, n, strength)       z + strength * noise_j, renormalised

truncation: one value for every category, or a list with one value per category; None is the model's
default (per category where its sweep chose one, ``class_truncation``; else ``default_truncation``).
"""

from __future__ import annotations

import io

import torch

from .config import GanConfig
from .networks import build_generator
from .training import autocast, default_channels_last, default_precision


def load_generator(
    ckpt: dict,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    channels_last: bool | None = None,
):
    """G_ema of ``ckpt`` in eval mode on ``device``; it carries ``precision`` (bf16 by default on CUDA),
    ``default_truncation`` and ``class_truncation`` (chosen by a truncation sweep and stored in the
    checkpoint; else 1 and None)."""
    device = torch.device(device)
    cfg = GanConfig.from_dict(ckpt["config"])
    G = build_generator(cfg)
    G.load_state_dict(ckpt["G_ema"])
    G = G.eval().requires_grad_(False).to(device)
    if default_channels_last(device) if channels_last is None else channels_last:
        G = G.to(memory_format=torch.channels_last)
    G.precision = precision or default_precision(device)
    autocast(device, G.precision)  # validates the name
    G.default_truncation = float(ckpt.get("default_truncation", 1.0))
    per_class = ckpt.get("class_truncation")
    G.class_truncation = [float(t) for t in per_class] if per_class else None
    return G, cfg, list(ckpt["class_names"])


def resolve_truncation(G, truncation: float | list[float] | None) -> float | list[float]:
    """What to sample with: a float for every category, or a list with one value per category."""
    if truncation is None:
        per_class = getattr(G, "class_truncation", None)
        return list(map(float, per_class)) if per_class else float(getattr(G, "default_truncation", 1.0))
    per_class = isinstance(truncation, (list, tuple))
    values = [float(t) for t in (truncation if per_class else [truncation])]
    if per_class and len(values) != G.num_classes:
        raise ValueError(f"truncation: {len(values)} values for {G.num_classes} categories")
    for t in values:
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"truncation must be in [0, 1], got {t}")
    return values if per_class else values[0]


def _truncation_rows(truncation: float | list[float], y: torch.Tensor) -> torch.Tensor | None:
    """One value per sample ([N, 1]) for a per-category truncation; None for a single value.

    A per-category model always samples through this path, whatever labels a request holds, so that an
    image does not depend on the rest of its request (scalar and tensor lerps need not agree to the bit).
    """
    if isinstance(truncation, float):
        return None
    return torch.tensor(truncation, dtype=torch.float32)[y][:, None]


def seed_noise(seeds: list[int], z_dim: int) -> torch.Tensor:
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def image_noise(seeds, z_dim: int, size: int) -> torch.Tensor:
    """[N, size]: the noise inputs of the images of ``seeds``: draws z_dim.. of one randn from each seed.
    For a z_dim that is a multiple of 16 (every preset's) the first z_dim draws are exactly the image's z
    (torch fills normals in blocks of 16), so the noise is the stream right after z."""
    return torch.stack(
        [torch.randn(z_dim + size, generator=torch.Generator().manual_seed(int(s)))[z_dim:] for s in seeds]
    )


def _noise_size(G) -> int:
    return int(getattr(G, "noise_size", 0))


def _device_of(G) -> torch.device:
    return next(G.parameters()).device


def _autocast(G, device: torch.device):
    # The generator's own precision (load_generator); by default bf16 on CUDA only, so that a CPU rerun
    # gives the same pixels on any CPU (training.default_precision).
    return autocast(device, getattr(G, "precision", None) or default_precision(device))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_hwc(images_u8: torch.Tensor):
    """uint8 [N, 3, H, W] -> numpy uint8 [N, H, W, 3], the layout PIL and encoders want."""
    return images_u8.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def encode_png(image_u8: torch.Tensor, compress_level: int = 6, text: dict | None = None) -> bytes:
    from PIL import Image, PngImagePlugin

    img = Image.fromarray(to_hwc(image_u8[None])[0])
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_text(str(k), str(v))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level, pnginfo=info)
    return buf.getvalue()


GEN_BATCH = 64


@torch.inference_mode()
def _padded(G, fn, *tensors: torch.Tensor, batch_size: int = GEN_BATCH) -> torch.Tensor:
    """Run ``fn(*chunk)`` on chunks padded to exactly ``batch_size`` rows; return uint8 images.

    Matrix-multiply kernels pick their blocking (and so their float summation order) from the
    problem shape, so a row's result can move by ~1e-6 with the batch size. Always running the same
    shape makes image i depend only on its seed, label and ``batch_size``: never on its position or
    on the rest of the request (checked by the tests).
    """
    dev = _device_of(G)
    n = tensors[0].shape[0]
    out = []
    for i in range(0, n, batch_size):
        chunk = [t[i : i + batch_size] for t in tensors]
        k = chunk[0].shape[0]
        if k < batch_size:
            chunk = [torch.cat([c, c[:1].expand(batch_size - k, *c.shape[1:])]) for c in chunk]
        with _autocast(G, dev):
            out.append(to_uint8(fn(*(c.to(dev) for c in chunk))[:k]).cpu())
    if not out:
        r = G.resolution
        return torch.zeros(0, 3, r, r, dtype=torch.uint8)
    return torch.cat(out)


def _check_labels(G, labels) -> torch.Tensor:
    y = torch.as_tensor(labels, dtype=torch.int64)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= G.num_classes):
        raise ValueError(f"labels must be in [0, {G.num_classes}), got {y.min().item()}..{y.max().item()}")
    return y


def generate(
    G,
    *,
    seeds: list[int],
    labels: list[int],
    truncation: float | list[float] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = GEN_BATCH,
) -> torch.Tensor:
    """uint8 [N, 3, R, R] on the CPU; image i is a function of (seeds[i], labels[i], truncation,
    batch_size) only. G runs where it lives; ``device`` only checks that this is where the caller thinks
    (moving G here would move the caller's model, in place, under it)."""
    if len(seeds) != len(labels):
        raise ValueError(f"{len(seeds)} seeds but {len(labels)} labels")
    if device is not None and torch.device(device) != _device_of(G):
        raise ValueError(f"the generator lives on {_device_of(G)}, not {device}; load it there")
    truncation = resolve_truncation(G, truncation)
    y = _check_labels(G, labels)
    z = seed_noise(seeds, G.z_dim) if seeds else torch.zeros(0, G.z_dim)
    return _sample(G, z, y, truncation, batch_size, noise_seeds=seeds)


def _sample(G, z, y, truncation, batch_size, noise_seeds):
    """Images of (z, y); the noise inputs (where G takes them) are those of ``noise_seeds``' images."""
    rows = _truncation_rows(truncation, y)
    rows = rows if rows is not None else torch.full((z.shape[0], 1), float(truncation))
    size = _noise_size(G)
    if not size:
        return _padded(G, lambda zz, yy, tt: G(zz, yy, truncation=_one(tt, truncation)), z, y, rows,
                       batch_size=batch_size)  # fmt: skip
    seeds = torch.as_tensor([int(s) for s in noise_seeds], dtype=torch.int64)

    def run(zz, yy, tt, ss):
        noise = image_noise(ss.tolist(), G.z_dim, size).to(zz.device)
        return G(zz, yy, truncation=_one(tt, truncation), noise=noise)

    return _padded(G, run, z, y, rows, seeds, batch_size=batch_size)


def _one(rows: torch.Tensor, truncation: float | list[float]):
    """The truncation G takes: the scalar where one value serves every category (scalar and per-row
    lerps need not agree to the bit, so a single-value model never goes through the rows)."""
    return truncation if isinstance(truncation, float) else rows


@torch.inference_mode()
def interpolate(
    G,
    seed_a: int,
    seed_b: int,
    label: int,
    steps: int,
    truncation: float | list[float] | None = None,
    batch_size: int = GEN_BATCH,
) -> torch.Tensor:
    """``steps`` images from seed_a's design to seed_b's (both ends included), linear in w."""
    truncation = resolve_truncation(G, truncation)
    y = _check_labels(G, [label] * max(steps, 2))
    z = seed_noise([seed_a, seed_b], G.z_dim)
    # The ends go through the same padded mapping as generate(), so they match it exactly.
    w_ends = _padded_mapping(G, z, y[:2], truncation, batch_size)
    t = torch.linspace(0, 1, steps)[:, None] if steps > 1 else torch.zeros(1, 1)
    w = w_ends[0].lerp(w_ends[1], t)
    size = _noise_size(G)
    if not size:
        return _padded(G, G.synthesis, w, batch_size=batch_size)
    # The noise inputs turn from seed_a's to seed_b's along a quarter circle: each frame's noise stays a
    # standard normal draw (cos^2 + sin^2 = 1), and the ends are exactly generate()'s images.
    n = image_noise([seed_a, seed_b], G.z_dim, size)
    angle = t * (torch.pi / 2)
    noise = torch.cos(angle) * n[0] + torch.sin(angle) * n[1]
    noise[0] = n[0]
    if steps > 1:
        noise[-1] = n[1]  # cos(pi / 2) is 4e-8 in float32, not 0
    return _padded(G, G.synthesis, w, noise, batch_size=batch_size)


def _padded_mapping(G, z, y, truncation, batch_size):
    dev = _device_of(G)
    k = z.shape[0]
    zz = torch.cat([z, z[:1].expand(batch_size - k, -1)]).to(dev)
    yy = torch.cat([y, y[:1].expand(batch_size - k)]).to(dev)
    rows = _truncation_rows(truncation, yy.cpu())
    with _autocast(G, dev):
        return G.mapping(zz, yy, truncation=truncation if rows is None else rows.to(dev))[:k].float().cpu()


def variations(
    G,
    seed: int,
    label: int,
    n: int,
    strength: float = 0.3,
    truncation: float | list[float] | None = None,
    batch_size: int = GEN_BATCH,
) -> torch.Tensor:
    """``n`` designs near ``seed``'s; variation j uses noise seeded from (seed, j), so it is reproducible."""
    truncation = resolve_truncation(G, truncation)
    y = _check_labels(G, [label] * n)
    z0 = seed_noise([seed], G.z_dim)
    eps = seed_noise([(seed * 1_000_003 + j + 1) % 2**63 for j in range(n)], G.z_dim)
    # Renormalise so the result stays a standard normal draw (same expected norm as z0).
    z = (z0 + strength * eps) / (1 + strength**2) ** 0.5
    # Every variation keeps seed's noise inputs: only z moves, so at strength 0 they are seed's design.
    return _sample(G, z, y, truncation, batch_size, noise_seeds=[seed] * n)
