"""How a model version is judged and promoted.

Every version is scored with the judge of its own dataset snapshot (a small CNN trained on the
snapshot's real photos, cached in S3 per snapshot and resolution). The promotion gate compares the
candidate with the production model on that same judge and the same real images, so the two KIDs
are measured with one ruler.
"""

from __future__ import annotations

import logging
import math

from atelier.core.config import get_settings
from atelier.core.db import session_scope
from atelier.core.models import DatasetSnapshot
from atelier.core.storage import ObjectStore
from atelier.training import registry

log = logging.getLogger(__name__)


def judge_key(snapshot_id: str, resolution: int) -> str:
    return f"snapshots/{snapshot_id}/judge-{resolution}.pt"


def judge_for(store: ObjectStore, snapshot: DatasetSnapshot, dataset: dict):  # noqa: ANN201
    from atelier.gan.judge import judge_from_bytes, judge_to_bytes, train_judge

    resolution = int(dataset["images"].shape[-1])
    key = judge_key(snapshot.id, resolution)
    if store.exists(key):
        return judge_from_bytes(store.get(key))
    settings = get_settings()
    judge, _info = train_judge(dataset, seed=0, epochs=settings.judge_epochs, seconds=settings.judge_seconds)
    store.put(key, judge_to_bytes(judge))
    return judge


def evaluate_version(G, judge, dataset: dict, *, sweep: bool = False) -> dict:  # noqa: ANN001
    """Metrics of G at its default truncation; with ``sweep``, at the truncation that a sweep over
    ``ATELIER_TRUNCATION_SWEEP`` chooses (``default_truncation``, to be stored with the version, beside
    the sweep's own numbers in ``truncation_sweep``)."""
    from atelier.gan.metrics import evaluate, swept_metrics

    settings = get_settings()
    kwargs = dict(n_per_class=settings.eval_per_class, seed=0, max_real=settings.eval_max_real)
    if sweep and len(settings.truncation_values) > 1:
        metrics = swept_metrics(
            G,
            judge,
            dataset,
            settings.truncation_values,
            **settings.sweep_limits,
            **kwargs,
        )
    else:
        metrics = evaluate(G, judge, dataset, **kwargs)
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, list, dict, type(None)))}


def promotion_decision(
    store: ObjectStore,
    version_id: str,
    metrics: dict,
    judge,
    dataset: dict,
    params: dict,  # noqa: ANN001
) -> tuple[bool, str]:
    """(promote?, why) for a freshly trained version, by the job's `promote` policy."""
    policy = params.get("promote", "if_better")
    if policy == "never":
        return False, "the job asked not to promote"
    if policy == "always":
        return True, "the job asked to promote"
    with session_scope() as session:
        current = registry.production(session=session)
        if current is None:
            return True, "first model: there was no production model"
        if current.id == version_id:
            return True, "already production"
        prod = {
            "id": current.id,
            "key": current.checkpoint_key,
            "resolution": current.resolution,
            "class_names": list(current.class_names),
        }
    if prod["resolution"] != int(dataset["images"].shape[-1]):
        return (
            False,
            f"production {prod['id']} is {prod['resolution']} px: KIDs at different sizes do not compare",
        )
    if set(prod["class_names"]) - set(dataset["class_names"]):
        return False, f"production {prod['id']} knows categories this dataset lacks"
    from atelier.gan.sampling import load_generator
    from atelier.gan.training import checkpoint_from_bytes
    from atelier.workers.device import worker_device

    # On the worker's device, as the candidate was evaluated: same precision, same ruler.
    device = worker_device()
    G_prod, _, prod_names = load_generator(checkpoint_from_bytes(store.get(prod["key"])), device)
    prod_metrics = evaluate_version(
        _remap_labels(G_prod, prod_names, list(dataset["class_names"])), judge, dataset
    )
    settings = get_settings()
    return promotion_gate(
        metrics,
        prod_metrics,
        prod["id"],
        tolerance=float(params.get("kid_tolerance", 0.0)),
        sigmas=settings.promotion_sigmas,
        min_diversity=settings.promotion_min_diversity,
        min_recall=settings.promotion_min_recall,
    )


def variety_refusal(candidate: dict, *, min_diversity: float = 0.0, min_recall: float = 0.0) -> str | None:
    """Why the candidate's designs are too typical to serve (None when they are varied enough).

    A GAN that draws the typical design of each category is recognised well and scores a fair KID, but
    is of little use to a designer; diversity (spread of generated over spread of real photos, per
    category, averaged) and recall against held-out photos (as a ratio to what real photos reach) are
    what see it. Each limit is named by its setting; 0 turns it off; a metric the evaluation lacks (an
    old version) is not held against it."""
    lost = []
    for name, key, limit, setting in (
        ("diversity", "diversity", min_diversity, "ATELIER_PROMOTION_MIN_DIVERSITY"),
        (
            "recall vs held-out photos (ratio to real-vs-real)",
            "recall_ratio",
            min_recall,
            "ATELIER_PROMOTION_MIN_RECALL",
        ),
    ):
        value = candidate.get(key)
        if limit > 0 and value is not None and value < limit:
            lost.append(f"{name} {value:.3f} below {setting} {limit:g}")
    if not lost:
        return None
    details = []
    # Per category, so that whoever reads the refusal sees which categories lack variety or coverage.
    for name, key in (("diversity", "diversity_per_class"), ("recall", "recall_ratio_per_class")):
        per_class = candidate.get(key)
        if per_class and any(v is not None for v in per_class):
            values = ", ".join("-" if v is None else f"{v:.2f}" for v in per_class)
            details.append(f"{name} per category: {values}")
    detail = f" ({'; '.join(details)})" if details else ""
    return "designs too typical: " + "; ".join(lost) + detail


def promotion_gate(
    candidate: dict,
    production: dict,
    production_id: str,
    *,
    tolerance: float = 0.0,
    sigmas: float = 2.0,
    min_diversity: float = 0.0,
    min_recall: float = 0.0,
) -> tuple[bool, str]:
    """Promote unless the candidate is worse than production beyond the measurement's own noise, or its
    designs are too typical (``variety_refusal``: below ``min_diversity`` or ``min_recall``).

    One KID from one seed moves by ~10-20 % between evaluations of the same model (GAN_NOTES.md), so a
    gate with margin 0 promotes and refuses at random. Margins, ``sigmas`` standard errors of the
    difference: KID from the spread of its subset estimates (``kid_std``), GAN-test accuracy and recall
    from their binomial standard errors (a fraction of ``n_gan_test`` images / ``n_real`` photos).
    ``tolerance`` (the job's ``kid_tolerance``) is added to the KID margin.
    """
    from atelier.gan.metrics import binomial_se

    typical = variety_refusal(candidate, min_diversity=min_diversity, min_recall=min_recall)
    kid_margin = (
        sigmas * math.hypot(candidate.get("kid_std", 0.0), production.get("kid_std", 0.0)) + tolerance
    )
    checks = [("KID", production["kid"] - candidate["kid"], kid_margin, "kid")]
    for name, key, n_key in (("GAN-test", "gan_test_accuracy", "n_gan_test"), ("recall", "recall", "n_real")):
        if candidate.get(key) is None or production.get(key) is None:
            continue
        se = math.hypot(
            binomial_se(candidate[key], candidate.get(n_key, 0)),
            binomial_se(production[key], production.get(n_key, 0)),
        )
        checks.append((name, candidate[key] - production[key], sigmas * se, key))
    # Every metric is oriented so that "gain" > 0 means the candidate is better.
    lost = [
        f"{name} {candidate[k]:.4f} vs {production[k]:.4f} (margin {m:.4f})"
        for name, gain, m, k in checks
        if gain < -m
    ]
    summary = ", ".join(
        f"{name} {candidate[k]:.4f} vs {production[k]:.4f} (+-{m:.4f})" for name, _, m, k in checks
    )
    if typical:
        # A floor, whatever production scores; the comparisons are shown beside it all the same.
        return False, f"worse than production {production_id} in variety: {typical} (all: {summary})"
    if lost:
        # Every comparison, not only the lost ones: whoever reads a refusal sees what was weighed.
        return (
            False,
            f"worse than production {production_id} beyond the noise: {'; '.join(lost)} (all: {summary})",
        )
    return True, f"no worse than production {production_id} within the noise: {summary}"


def kid_gate(new_kid: float, production_kid: float, tolerance: float, production_id: str) -> tuple[bool, str]:
    """Promote when the candidate's KID is no worse than production's by more than `tolerance`."""
    verdict = f"KID {new_kid:.5f} vs production {production_id} {production_kid:.5f} (tolerance {tolerance})"
    if new_kid <= production_kid + tolerance:
        return True, f"no worse: {verdict}"
    return False, f"worse: {verdict}"


def _remap_labels(G, own_names: list[str], dataset_names: list[str]):  # noqa: ANN001, ANN202
    """Production may order (or lack) categories differently: translate dataset labels to its own."""
    if own_names == dataset_names:
        return G
    import torch

    table = torch.tensor([own_names.index(n) for n in dataset_names])

    class Remapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = G
            self.z_dim, self.resolution, self.num_classes = G.z_dim, G.resolution, len(dataset_names)

            # What sampling reads from a loaded generator: its precision and default truncation(s).
            self.precision = getattr(G, "precision", None)
            self.default_truncation = getattr(G, "default_truncation", 1.0)
            own = getattr(G, "class_truncation", None)
            self.class_truncation = [own[i] for i in table.tolist()] if own else None

        def forward(self, z, y, **kw):  # noqa: ANN001, ANN003, ANN201
            return self.inner(z, table.to(y.device)[y], **kw)

    return Remapped()
