"""Offline metrics in the judge's feature space (``judge.py``).

kid(a, b)                   unbiased MMD^2, kernel k(x, y) = (x.y / d + 1)^3, averaged over subsets
                            (Binkowski et al. 2018): ~0 for one distribution, grows with the gap
precision_recall(r, f, k)   k-NN manifold estimate (Kynkaenniemi et al. 2019): fraction of fakes
                            inside the real manifold (fidelity), of reals inside the fake one (cover)
gan_test_accuracy(j, x, y)  does the judge see the asked-for category in the generated image
novelty(fake, train)        distance to the nearest training photo, relative to how far that photo
                            is from its own nearest neighbour; < threshold flags a near-copy
diversity_per_class(...)    per category, spread of generated over spread of real photos (mean
                            pairwise distance in judge features): 1 = as varied as the catalogue
recall_vs_heldout(...)      recall against photos the judge never trained on, over the recall other
                            real photos reach (the real-vs-real baseline): 1 = covers as real photos do;
                            also per category
recall_over_draws(...)      recall_vs_heldout's ratio over several independent draws of designs and
                            reference photos: its mean and spread (one draw moves by ~0.04)
evaluate(G, judge, data)    all of the above for a generator (GAN-test on n_per_class per category,
                            KID / precision / recall / diversity against the real set with its mix)
"""

from __future__ import annotations

import math

import torch

from .judge import (
    Judge,
    judge_accuracy,
    judge_from_bytes,
    judge_hits,
    judge_knows_split,
    judge_to_bytes,
    train_judge,
)

__all__ = [
    "kid",
    "precision_recall",
    "gan_test_accuracy",
    "novelty",
    "evaluate",
    "extract_features",
    "train_judge",
    "judge_to_bytes",
    "judge_from_bytes",
    "judge_accuracy",
    "Judge",
]


def kid(
    feat_a: torch.Tensor, feat_b: torch.Tensor, *, subsets: int = 50, subset_size: int = 1000, seed: int = 0
) -> float:
    return kid_with_spread(feat_a, feat_b, subsets=subsets, subset_size=subset_size, seed=seed)[0]


def kid_with_spread(
    feat_a: torch.Tensor, feat_b: torch.Tensor, *, subsets: int = 50, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """(KID, std of the per-subset estimates): the spread is what a promotion gate's margin is made of."""
    a, b = feat_a.double(), feat_b.double()
    d = a.shape[1]
    m = min(a.shape[0], b.shape[0], subset_size)
    if m < 2:
        raise ValueError("kid needs at least 2 samples in each set")
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=gen)[:m]]
        y = b[torch.randperm(b.shape[0], generator=gen)[:m]]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        # Unbiased: the diagonals (k(x, x)) are left out of the within-set means.
        values.append(
            float(
                (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
                + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
                - 2 * kxy.mean()
            )
        )
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std()) if subsets > 1 else 0.0


def _kth_nn_radius(f: torch.Tensor, k: int) -> torch.Tensor:
    dist = torch.cdist(f, f)
    # k+1: the nearest "neighbour" of a point is itself at distance 0.
    return dist.topk(min(k + 1, f.shape[0]), dim=1, largest=False).values[:, -1]


def _precision_coverage(real_f: torch.Tensor, fake_f: torch.Tensor, k: int = 3) -> tuple[float, torch.Tensor]:
    """Precision, and per real image whether it lies inside the fakes' k-NN manifold (recall is its
    mean): one distance matrix for both, which a sweep reuses for its paired recall margins."""
    real_f, fake_f = real_f.double(), fake_f.double()
    r_real, r_fake = _kth_nn_radius(real_f, k), _kth_nn_radius(fake_f, k)
    d = torch.cdist(fake_f, real_f)  # [fake, real]
    precision = (d <= r_real[None, :]).any(dim=1).double().mean().item()
    return precision, (r_fake[None, :] >= d.T).any(dim=1)


def precision_recall(real_f: torch.Tensor, fake_f: torch.Tensor, k: int = 3) -> dict:
    precision, coverage = _precision_coverage(real_f, fake_f, k)
    return {"precision": precision, "recall": coverage.double().mean().item()}


@torch.no_grad()
def gan_test_accuracy(judge: Judge, images: torch.Tensor, labels: torch.Tensor) -> float:
    return judge_accuracy(judge, images, torch.as_tensor(labels))


def novelty(fake_f: torch.Tensor, train_f: torch.Tensor, *, threshold: float = 0.5) -> dict:
    """Near-copy check: ratio = d(fake, NN train) / d(that train photo, its own NN in train).

    A generated design much closer to a photo than any other photo is (ratio << 1) is a likely copy.
    """
    fake_f, train_f = fake_f.double(), train_f.double()
    nn_dist, nn_idx = torch.cdist(fake_f, train_f).min(dim=1)
    own = _kth_nn_radius(train_f, 1).clamp_min(1e-12)
    ratio = nn_dist / own[nn_idx]
    flagged = (ratio < threshold).nonzero().flatten()
    return {
        "novelty_median_ratio": ratio.median().item(),
        "near_copy_fraction": flagged.numel() / max(1, ratio.numel()),
        "near_copy_threshold": threshold,
        "near_copy_indices": flagged.tolist()[:100],
        "nearest_train_index": nn_idx.tolist(),
    }


def spread(f: torch.Tensor) -> float | None:
    """Mean pairwise L2 distance between feature vectors (None under 2): how varied a set is."""
    m = f.shape[0]
    if m < 2:
        return None
    d = torch.cdist(f.double(), f.double())
    return float(d.sum() / (m * (m - 1)))  # the zero diagonal left out


def diversity_per_class(real_f, real_labels, fake_f, fake_labels, num_classes: int) -> list[float | None]:
    """Per category: the spread of its generated images over the spread of its real photos (1: as
    varied as the catalogue; a G that draws one typical design per category tends to 0). None where a
    category has fewer than 2 of either."""
    out = []
    for c in range(num_classes):
        r, f = spread(real_f[real_labels == c]), spread(fake_f[fake_labels == c])
        out.append(None if r is None or f is None or r == 0 else f / r)
    return out


def mean_diversity(per_class: list[float | None]) -> float | None:
    values = [v for v in per_class if v is not None]
    return sum(values) / len(values) if values else None


def reference_split(labels: torch.Tensor, held: torch.Tensor | None, seed: int = 0):
    """(held positions, matched positions): photos to measure recall on, and for each of them another
    photo of the same category outside the held set, the real-vs-real baseline. ``held``: the judge's
    held-out positions if known, else a stratified half of ``labels``."""
    gen = torch.Generator().manual_seed(seed)
    if held is None:
        held_parts = []
        for c in labels.unique().tolist():
            idx = (labels == c).nonzero().flatten()
            held_parts.append(idx[torch.randperm(idx.numel(), generator=gen)][: idx.numel() // 2])
        held = torch.cat(held_parts) if held_parts else torch.zeros(0, dtype=torch.int64)
    is_held = torch.zeros(labels.numel(), dtype=torch.bool)
    is_held[held] = True
    keep, match = [], []
    for c in labels[held].unique().tolist():
        h = held[labels[held] == c]
        pool = ((labels == c) & ~is_held).nonzero().flatten()
        if pool.numel() == 0:
            continue
        # Without replacement where the category has enough photos outside the held set.
        order = torch.randperm(pool.numel(), generator=gen)
        picks = pool[order[torch.arange(h.numel()) % pool.numel()]]
        keep.append(h)
        match.append(picks)
    if not keep:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    return torch.cat(keep), torch.cat(match)


def covered(real_f: torch.Tensor, ref_f: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Per real image: does it fall inside the k-NN manifold of ``ref_f`` (precision_recall's recall,
    image by image)."""
    real_f, ref_f = real_f.double(), ref_f.double()
    return (torch.cdist(real_f, ref_f) <= _kth_nn_radius(ref_f, k)[None, :]).any(dim=1)


def recall_vs_heldout(
    real_f, fake_f, labels, held: torch.Tensor | None, seed: int = 0, num_classes: int | None = None
) -> dict:
    """Recall of the generated images against photos held out of the judge's training, as a ratio to
    the recall that other real photos of the same categories reach (k-NN recall is far from 1 even
    between two halves of one catalogue, so the raw figure has no fixed target). ``fake_f[i]`` carries
    ``labels[i]``, as evaluate's KID fakes do.

    ``recall_ratio_per_class`` (with ``num_classes``): the same ratio over each category's held-out
    photos, both manifolds still built from every category's images; None where a category has no
    held-out photo. Tens of photos per category (17-119 in clothing-small): a guide to which categories
    a model's designs miss, not a figure to gate on (the lowest categories of four 64 px models
    differed from model to model, GAN_NOTES.md round 15)."""
    held, match = reference_split(labels, held, seed)
    if held.numel() < 4:
        empty = None if num_classes is None else [None] * num_classes
        return {
            "recall_heldout": None, "recall_real_baseline": None, "recall_ratio": None, "n_recall": 0,
            "recall_ratio_per_class": empty,
        }  # fmt: skip
    by_fake, by_real = covered(real_f[held], fake_f[held]), covered(real_f[held], real_f[match])
    fake, base = by_fake.double().mean().item(), by_real.double().mean().item()
    per_class = None
    if num_classes is not None:
        per_class = []
        for c in range(num_classes):
            mine = labels[held] == c
            b = by_real[mine].double().mean().item() if mine.any() else 0.0
            per_class.append(by_fake[mine].double().mean().item() / b if b > 0 else None)
    return {
        "recall_heldout": fake,
        "recall_real_baseline": base,
        "recall_ratio": fake / base if base > 0 else None,
        "n_recall": int(held.numel()),
        "recall_ratio_per_class": per_class,
    }


# Seeds of recall_over_draws' designs: apart from evaluate's (seed + i), the sweep's (+1,000,000) and
# `gan sample`'s (0+), so that no draw reuses a design another figure was computed on.
DRAW_SEED_OFFSET = 3_000_000


def recall_over_draws(
    G,
    judge: Judge,
    dataset: dict,
    draws: int,
    *,
    seed: int = 0,
    truncation: float | list[float] | None = None,
) -> dict:
    """``recall_ratio`` (recall_vs_heldout) over ``draws`` independent draws: each draw generates one
    design per held-out photo, in its category, from its own seeds, and matches the baseline's
    reference photos with its own split. k-NN recall hangs on which designs happen to be drawn (one
    design far out carries a wide ball), so one draw of 460 designs moves by about 0.04 (sd) around
    the model's mean (GAN_NOTES.md round 20); the mean of several is the figure to compare models by.
    Needs the judge's held-out split on this dataset."""
    from .sampling import generate, resolve_truncation

    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    info = getattr(judge, "info", {}) or {}
    labels = dataset["labels"]
    held_all = info.get("heldout_index") if judge_knows_split(info, labels) else None
    if held_all is None or len(held_all) < 4:
        raise ValueError("recall over draws needs the judge's held-out photos of this dataset")
    held_all = torch.as_tensor(held_all)
    truncation = resolve_truncation(G, truncation)
    ratios, recalls = [], []
    feats: dict[int, torch.Tensor] = {}  # real photos' features, computed once each

    def real_f(idx: torch.Tensor) -> torch.Tensor:
        missing = [i for i in idx.tolist() if i not in feats]
        if missing:
            for i, f in zip(missing, extract_features(judge, dataset["images"][missing]), strict=True):
                feats[i] = f
        return torch.stack([feats[i] for i in idx.tolist()])

    for r in range(draws):
        held, match = reference_split(labels, held_all, seed=seed + r)
        start = seed + DRAW_SEED_OFFSET + r * held.numel()
        fakes = generate(
            G,
            seeds=list(range(start, start + held.numel())),
            labels=labels[held].tolist(),
            truncation=truncation,
        )
        photos = real_f(held)
        fake = covered(photos, extract_features(judge, fakes)).double().mean().item()
        base = covered(photos, real_f(match)).double().mean().item()
        recalls.append(fake)
        ratios.append(fake / base if base > 0 else 0.0)
    mean = sum(ratios) / draws
    sd = math.sqrt(sum((x - mean) ** 2 for x in ratios) / (draws - 1)) if draws > 1 else None
    return {
        "recall_ratio_mean": mean,
        "recall_ratio_sd": sd,
        "recall_ratio_draws": ratios,
        "recall_heldout_draws": recalls,
        "n_recall_draws": draws,
    }


@torch.no_grad()
def extract_features(judge: Judge, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Judge features (float64, on the CPU); the judge runs where it lives, the images go there."""
    judge.eval()
    dev = next(judge.parameters()).device
    return torch.cat(
        [
            judge.features(images[i : i + batch].to(dev)).double().cpu()
            for i in range(0, images.shape[0], batch)
        ]
    )


def evaluate(
    G,
    judge: Judge,
    dataset: dict,
    *,
    n_per_class: int = 100,
    seed: int = 0,
    truncation: float | list[float] | None = None,
    device: str | None = None,
    max_real: int = 5000,
    kid_subsets: int = 50,
    keep_samples: bool = False,
    real_features: torch.Tensor | None = None,
) -> dict:
    """All metrics for generator ``G`` (use G_ema) against ``dataset``'s real images.

    GAN-test: ``n_per_class`` images per category, seeds ``seed + i``. KID / precision / recall: one
    generated image per real image (up to ``max_real``) with the same category, so a conditional model
    is compared at the catalogue's category mix; ``kid_heldout`` does the same on the judge's held-out
    split only. Novelty is measured against the judge's train split. ``truncation``: one value, one per
    category, or None for the model's own. ``keep_samples`` adds ``samples`` (per-image judge hits and
    the KID features, as tensors) for a sweep to recombine.
    """
    import copy

    from .sampling import _device_of, generate, resolve_truncation

    # Everything runs on G's device (a CUDA worker's G_ema stays on the GPU); the judge goes there too,
    # as a copy so that the caller's judge is never moved under it.
    if device is not None and torch.device(device) != _device_of(G):
        raise ValueError(f"the generator lives on {_device_of(G)}, not {device}")
    device = None
    if next(judge.parameters()).device != _device_of(G):
        judge = copy.deepcopy(judge).to(_device_of(G))
    truncation = resolve_truncation(G, truncation)
    images, labels = dataset["images"], dataset["labels"]
    num_classes = judge.num_classes
    gen_labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    fakes = generate(
        G,
        seeds=[seed + i for i in range(gen_labels.numel())],
        labels=gen_labels.tolist(),
        truncation=truncation,
        device=device,
    )
    hits = judge_hits(judge, fakes, gen_labels)
    per_class = [hits[gen_labels == c].double().mean().item() for c in range(num_classes)]
    n = images.shape[0]
    real_idx = torch.arange(n)
    if n > max_real:
        real_idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_real].sort().values
    # Real features once, indexed by position in the dataset (-1: not computed).
    # The real photos' features depend on the judge, the seed and max_real only: a sweep passes them on.
    real_f = real_features if real_features is not None else extract_features(judge, images[real_idx])
    offset = seed + gen_labels.numel()
    kid_fakes = generate(
        G,
        seeds=[offset + i for i in range(real_idx.numel())],
        labels=labels[real_idx].tolist(),
        truncation=truncation,
        device=device,
    )
    fake_f = extract_features(judge, kid_fakes)
    precision, coverage = _precision_coverage(real_f, fake_f, k=3)
    info = getattr(judge, "info", {}) or {}
    out = {
        "gan_test_accuracy": hits.double().mean().item(),
        "gan_test_per_class": per_class,
        "judge_heldout_accuracy": info.get("heldout_accuracy"),
        **dict(
            zip(
                ("kid", "kid_std"),
                kid_with_spread(real_f, fake_f, seed=seed, subsets=kid_subsets),
                strict=True,
            )
        ),
        "precision": precision,
        "recall": coverage.double().mean().item(),
        "n_gan_test": int(gen_labels.numel()),
        "n_generated": int(gen_labels.numel() + real_idx.numel()),
        "n_real": int(real_idx.numel()),
        "truncation": truncation,
    }

    def real_features(idx):
        if n <= max_real:
            return real_f[idx]
        return extract_features(judge, images[idx])

    # The judge's own split indexes the photos it was trained on: only meaningful on that dataset (a
    # judge file may be reused on another catalogue that has the same categories).
    same_data = judge_knows_split(info, labels)
    held = info.get("heldout_index") if same_data else None
    if held is not None and len(held) > 1:
        held = torch.as_tensor(held)
        # The KID fakes already carry one image per real image with its label: reuse the held-out ones.
        held_fake_f = (
            fake_f[held]
            if n <= max_real
            else extract_features(
                judge,
                generate(
                    G,
                    seeds=[offset + i for i in range(held.numel())],
                    labels=labels[held].tolist(),
                    truncation=truncation,
                    device=device,
                ),
            )
        )
        out["kid_heldout"] = kid(real_features(held), held_fake_f, seed=seed, subsets=kid_subsets)
    kid_labels = labels[real_idx]
    out["diversity_per_class"] = diversity_per_class(real_f, kid_labels, fake_f, kid_labels, num_classes)
    out["diversity"] = mean_diversity(out["diversity_per_class"])
    known = [v for v in out["diversity_per_class"] if v is not None]
    out["diversity_min"] = min(known) if known else None
    # Recall against the judge's held-out photos among those measured (positions in real_idx).
    held_pos = None
    if held is not None:
        held_pos = torch.isin(real_idx, torch.as_tensor(held)).nonzero().flatten()
        held_pos = held_pos if held_pos.numel() >= 4 else None
    out.update(recall_vs_heldout(real_f, fake_f, kid_labels, held_pos, seed=seed, num_classes=num_classes))
    train_idx = info.get("train_index") if same_data else None
    train_f = real_features(torch.as_tensor(train_idx)) if train_idx is not None else real_f
    nov = novelty(extract_features(judge, fakes), train_f)
    nov.pop("nearest_train_index")
    out.update(nov)
    if keep_samples:
        out["samples"] = {
            "hits": hits,
            "gan_test_labels": gen_labels,
            "real_f": real_f,
            "fake_f": fake_f,
            "kid_labels": kid_labels,
            "covered": coverage,
        }
    return out


def binomial_se(p: float, n: int) -> float:
    """Standard error of a fraction ``p`` of ``n`` (GAN-test over its images, recall over the photos)."""
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


# The diversity a truncation must keep (per category, spread of generated over spread of real photos)
# unless the caller names another (ATELIER_TRUNCATION_MIN_DIVERSITY on the stack).
MIN_DIVERSITY = 0.9
# The recall a truncation must keep, as a fraction of recall at 1.0 (less the margin of its noise;
# ATELIER_TRUNCATION_RECALL_KEEP on the stack): 1.0 keeps it within its noise. At 0.8, a 64 px model's
# chosen truncation 0.8 took recall_ratio 0.71 / 0.54 back to 0.54 / 0.46 (two seeds, GAN_NOTES.md
# round 12) while every other limit held.
RECALL_KEEP = 1.0


def paired_margin(covered_t: torch.Tensor, covered_ref: torch.Tensor, sigmas: float) -> float:
    """``sigmas`` standard errors of the difference between two recalls measured on the same photos
    with designs of the same seeds (McNemar): only the photos whose coverage changed carry noise. Two
    independent binomial errors overstate it: over 3,068 photos the paired margin at 0.9 against 1.0
    is 0.016-0.017 for two 64 px models, the unpaired one 0.025. With the unpaired margin `gan train`'s
    sweep kept 0.9 on both; with the paired one it keeps 1.0 on one of them, whose recall_ratio over 8
    draws goes from 0.71 to 0.76 (GAN_NOTES.md round 21)."""
    changed = int((covered_t != covered_ref).sum())
    return sigmas * math.sqrt(changed) / max(covered_t.numel(), 1)


def truncation_sweep(
    G,
    judge: Judge,
    dataset: dict,
    values=(1.0, 0.9, 0.8, 0.7),
    *,
    recall_keep: float = RECALL_KEEP,
    kid_slack: float = 1.1,
    sigmas: float = 2.0,
    class_sigmas: float = 1.0,
    min_diversity: float = MIN_DIVERSITY,
    **kwargs,
) -> dict:
    """Evaluate G at each truncation and choose the default: the strongest truncation (the lowest value)
    that keeps the mean within-category diversity >= ``min_diversity`` and recall >= ``recall_keep`` x
    and KID <= ``kid_slack`` x those at 1.0; 1.0 when none does. Truncation trades variety for
    fidelity: it pulls every design of a category towards the typical one, and past that point a
    catalogue of generated designs is monotonous (GAN_NOTES.md round 8: diversity 0.83 of the real
    photos' at the 32 px model's chosen truncation).

    Recall and KID allow ``sigmas`` standard errors of the difference, as the promotion gate does: a
    good model's KID is small next to its own spread (0.0064 +- 0.0010 at 1.0 and 0.0079 +- 0.0012 at
    0.8 for one tiny model, GAN_NOTES.md round 5), and a bare 1.1x would refuse a truncation for the
    noise of one estimate. Recall's error is the paired one (``paired_margin``: the same photos and
    seeds at every truncation), where the evaluations carry their samples.

    Then per category (``class_truncation``, None when no category moves): a category leaves the
    default for the truncation where the judge recognises the most more of its images, when that gain
    exceeds ``class_sigmas`` x its paired standard error (the same seeds at every truncation, so only
    the images that change verdict count: sqrt(discordant)) and the category's own diversity there
    stays >= ``min_diversity``; the mix must then still keep every limit, measured on the recombined
    KID features, or the smallest gains go back to the default. A rare category (skirt: 112 photos of
    3,068) needs more truncation to be recognised than t-shirts do, and one global value pays for it
    with every category's diversity (GAN_NOTES.md round 6).
    """
    rows, real_f = {}, None
    for t in values:
        rows[float(t)] = evaluate(
            G, judge, dataset, truncation=float(t), keep_samples=True, real_features=real_f, **kwargs
        )
        real_f = (rows[float(t)].get("samples") or {}).get("real_f")  # the same photos at every truncation
    samples = {t: m.pop("samples", None) for t, m in rows.items()}
    ref = rows[max(rows)]
    # Which photos each truncation's designs cover: the same photos and design seeds at every value.
    coverage = {t: s["covered"] if s is not None else None for t, s in samples.items()}
    ref_coverage = coverage[max(rows)]

    def keeps(m: dict, coverage_m: torch.Tensor | None = None) -> bool:
        kid_margin = sigmas * math.hypot(m.get("kid_std", 0.0), ref.get("kid_std", 0.0))
        if coverage_m is not None and ref_coverage is not None:
            recall_margin = paired_margin(coverage_m, ref_coverage, sigmas)
        else:
            recall_margin = sigmas * math.hypot(
                binomial_se(m["recall"], m["n_real"]), binomial_se(ref["recall"], ref["n_real"])
            )
        diverse = m.get("diversity") is None or m["diversity"] >= min_diversity
        return (
            diverse
            and m["recall"] >= recall_keep * ref["recall"] - recall_margin
            and m["kid"] <= kid_slack * ref["kid"] + kid_margin
        )

    ok = [t for t, m in rows.items() if keeps(m, coverage[t])]
    best = min(ok) if ok else max(rows)
    per_class = None
    if all(s is not None for s in samples.values()):
        per_class = _class_truncation(samples, rows, best, keeps, class_sigmas, min_diversity, kwargs)
    return {"default_truncation": best, "class_truncation": per_class, "sweep": rows}


def _class_truncation(
    samples: dict, rows: dict, best: float, keeps, class_sigmas: float, min_diversity: float, kwargs: dict
) -> list | None:
    base = samples[best]
    labels, kid_labels = base["gan_test_labels"], base["kid_labels"]
    num_classes = int(labels.max()) + 1
    choice, gains = [best] * num_classes, [0] * num_classes
    for c in range(num_classes):
        before = base["hits"][labels == c]
        for t in sorted(samples, reverse=True):
            div = rows[t].get("diversity_per_class", [None] * num_classes)[c]
            if div is not None and div < min_diversity:
                continue  # this category would turn typical at t
            after = samples[t]["hits"][labels == c]
            net = int(after.sum()) - int(before.sum())
            if net > class_sigmas * math.sqrt(int((after != before).sum())) and net > gains[c]:
                choice[c], gains[c] = t, net

    def recombined() -> dict:
        fake_f = base["fake_f"].clone()
        for c, t in enumerate(choice):
            fake_f[kid_labels == c] = samples[t]["fake_f"][kid_labels == c]
        real_f = base["real_f"]
        kid_, kid_std = kid_with_spread(
            real_f, fake_f, seed=kwargs.get("seed", 0), subsets=kwargs.get("kid_subsets", 50)
        )
        per_class = diversity_per_class(real_f, kid_labels, fake_f, kid_labels, num_classes)
        precision, coverage = _precision_coverage(real_f, fake_f)
        mix = {
            "kid": kid_,
            "kid_std": kid_std,
            "n_real": real_f.shape[0],
            "diversity": mean_diversity(per_class),
            "precision": precision,
            "recall": coverage.double().mean().item(),
        }
        return mix, coverage

    moved = [c for c in range(num_classes) if choice[c] != best]
    # Give back the smallest gains first until the mix keeps the limits.
    while moved and not keeps(*recombined()):
        c = min(moved, key=lambda c: gains[c])
        choice[c] = best
        moved.remove(c)
    return choice if moved else None


SWEEP_FIELDS = (
    "gan_test_accuracy",
    "gan_test_per_class",
    "kid",
    "kid_std",
    "precision",
    "recall",
    "recall_ratio",
    "diversity",
    "diversity_per_class",
)
# The sweep chooses on seeds of its own; the metrics reported for the choice come from the caller's
# seeds, which the choice never saw (a maximum over noisy estimates is biased upwards).
SELECTION_SEED_OFFSET = 1_000_000


def swept_metrics(
    G,
    judge: Judge,
    dataset: dict,
    values=(1.0, 0.9, 0.8, 0.7),
    *,
    min_diversity: float = MIN_DIVERSITY,
    recall_keep: float = RECALL_KEEP,
    **kwargs,
) -> dict:
    """The metrics at the truncation a sweep chooses (measured again on ``seed``, which the choice never
    saw), with ``default_truncation``, ``class_truncation`` (None, or one value per category) and, to be
    kept with the model (checkpoint and version), the sweep's headline metrics per truncation in
    ``truncation_sweep``."""
    seed = kwargs.pop("seed", 0)
    result = truncation_sweep(
        G, judge, dataset, values, seed=seed + SELECTION_SEED_OFFSET, min_diversity=min_diversity,
        recall_keep=recall_keep, **kwargs,
    )  # fmt: skip
    chosen = result["class_truncation"] or result["default_truncation"]
    return {
        **evaluate(G, judge, dataset, truncation=chosen, seed=seed, **kwargs),
        "default_truncation": result["default_truncation"],
        "class_truncation": result["class_truncation"],
        "truncation_sweep": {str(t): {k: m.get(k) for k in SWEEP_FIELDS} for t, m in result["sweep"].items()},
    }


# What a sweep stores with the model (checkpoint and version metrics), where load_generator reads it.
SWEPT_CHECKPOINT_FIELDS = ("default_truncation", "class_truncation", "truncation_sweep")


def chosen_truncation(metrics: dict) -> float | list[float]:
    """The sampling setting a sweep chose: one value per category where it chose them, else one value."""
    return metrics.get("class_truncation") or float(metrics.get("default_truncation", 1.0))
