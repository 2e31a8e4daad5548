"""Garment masks: which pixels of a product photo or a generated design are the garment.

    photo ──> at most WORK_SIZE px, CIELAB
          ──> backdrop model: k-means of a border band (several colours: wood grain, fabric, a floor
              and its shadow are one backdrop), each cluster with its own spread
          ──> garment model: k-means of the central pixels that are not backdrop-like
          ──> GrabCut-like rounds: a pixel is backdrop-like when it is nearer the backdrop model than
              the garment model (and within reach of it); majority-smoothed; the backdrop is what of
              that connects to the border; the garment is the rest, cut to the components that reach
              the centre, with holes filled; both models are refitted from the new split
          ──> back to the photo's size

Only pixels that connect to the border count as backdrop, so a white print inside a garment stays
garment. Used by the try-on composite (API, no torch), the trend report's colour analysis (workers),
and, through `border_flood_mask`, the `background` post-process op. numpy only: the API has no scipy.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from atelier.imaging.colour import rgb_to_lab

WORK_SIZE = 160  # the mask is computed at most this size (long side) and scaled back
BAND = 0.06  # the border band that models the backdrop, as a fraction of the short side
BACKDROP_CLUSTERS, GARMENT_CLUSTERS = 5, 4
MIN_SHARE = 0.06  # a band cluster smaller than this is a garment touching the border, not backdrop
REACH = 14.0  # ΔE beyond a backdrop cluster's own spread that still counts as that backdrop
ROUNDS = 3
CENTRE_SHARE = 0.2  # a colour with this much of the central box is one of the garment's main colours
BAND_MAJORITY = 0.5  # ... unless it holds this much of the band: then the garment sits on its own colour
MARGIN = 4.0  # ΔE by which a pixel must be nearer the backdrop model: ties stay garment


def border_flood_mask(near: np.ndarray) -> np.ndarray:
    """Pixels of `near` (bool HxW) 4-connected to the image border through other `near` pixels."""
    seed = np.zeros_like(near)
    seed[0, :], seed[-1, :], seed[:, 0], seed[:, -1] = near[0, :], near[-1, :], near[:, 0], near[:, -1]
    return flood(seed, near)


def flood(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Pixels of `allowed` 4-connected to `seed & allowed` through other `allowed` pixels."""
    reach = seed & allowed
    while True:
        grown = reach.copy()
        grown[1:, :] |= reach[:-1, :]
        grown[:-1, :] |= reach[1:, :]
        grown[:, 1:] |= reach[:, :-1]
        grown[:, :-1] |= reach[:, 1:]
        grown &= allowed
        if np.array_equal(grown, reach):
            return reach
        reach = grown


def backdrop_colour(arr: np.ndarray) -> np.ndarray:
    """The median colour of the one-pixel border: the backdrop of a product photo."""
    border = np.concatenate([arr[0, :], arr[-1, :], arr[:, 0], arr[:, -1]]).astype(np.float64)
    return np.median(border, axis=0)


def single_colour_mask(arr: np.ndarray, tolerance: float = 28.0) -> np.ndarray:
    """The garment against a one-colour backdrop: what differs from the border's median colour by more
    than `tolerance` (RGB distance), or is enclosed by such pixels."""
    arr = arr.astype(np.float64)
    return ~border_flood_mask(np.sqrt(((arr - backdrop_colour(arr)) ** 2).sum(axis=2)) <= tolerance)


def kmeans(points: np.ndarray, k: int, *, rounds: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centres, spreads, shares) of `points` (n, 3): Lloyd's k-means from lightness quantiles, so the
    same pixels always give the same clusters. Spread: a cluster's RMS distance to its centre."""
    points = points.reshape(-1, 3)
    if len(points) > 2000:  # an even sample is as good for a handful of colours
        points = points[:: len(points) // 2000]
    k = max(1, min(k, len(points)))
    order = np.argsort(points[:, 0], kind="stable")
    centres = points[order[((np.arange(k) + 0.5) * len(points) / k).astype(int)]].copy()
    for _ in range(rounds):
        nearest = _distances(points, centres).argmin(axis=1)
        for j in range(k):
            members = points[nearest == j]
            if len(members):
                centres[j] = members.mean(axis=0)
    d = _distances(points, centres)
    nearest = d.argmin(axis=1)
    spreads = np.array(
        [np.sqrt((d[nearest == j, j] ** 2).mean()) if (nearest == j).any() else 0.0 for j in range(k)]
    )
    shares = np.bincount(nearest, minlength=k) / len(points)
    return centres, spreads, shares


def _distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.sqrt(((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2))


def _model_distance(lab: np.ndarray, centres: np.ndarray, spreads: np.ndarray) -> np.ndarray:
    """Per pixel: ΔE to the nearest cluster beyond that cluster's own spread (0 inside it)."""
    h, w, _ = lab.shape
    d = _distances(lab.reshape(-1, 3), centres) - np.clip(spreads, 1.0, 20.0)[None, :]
    return np.maximum(d.min(axis=1), 0).reshape(h, w)


def _majority(mask: np.ndarray) -> np.ndarray:
    """3x3 majority vote: texture speckles that the colour models miss do not break the flood."""
    padded = np.pad(mask.astype(np.int8), 1, mode="edge")
    h, w = mask.shape
    votes = sum(padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
    return votes >= 5


def _smooth(lab: np.ndarray) -> np.ndarray:
    """3x3 mean, twice: per-pixel texture (noise, weave, grain) averages towards its colour."""
    h, w, _ = lab.shape
    for _ in range(2):
        padded = np.pad(lab, ((1, 1), (1, 1), (0, 0)), mode="edge")
        lab = sum(padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0
    return lab


def _band(h: int, w: int) -> np.ndarray:
    b = max(2, round(BAND * min(h, w)))
    band = np.zeros((h, w), dtype=bool)
    band[:b, :], band[-b:, :], band[:, :b], band[:, -b:] = True, True, True, True
    return band


def _centre(h: int, w: int, part: float = 0.5) -> np.ndarray:
    box = np.zeros((h, w), dtype=bool)
    y0, x0 = round(h * (1 - part) / 2), round(w * (1 - part) / 2)
    box[y0 : h - y0, x0 : w - x0] = True
    return box


def _clean(garment: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The garment components that reach the centre (or, when none does, all of it), holes filled."""
    central = flood(centre, garment)
    kept = central if central.any() else garment
    return kept | ~border_flood_mask(~kept)


def _refine(raw: np.ndarray) -> np.ndarray:
    lab = _smooth(raw)
    h, w, _ = lab.shape
    band, centre = _band(h, w), _centre(h, w)
    bg_c, bg_s, shares = kmeans(lab[band], BACKDROP_CLUSTERS)
    # A garment that fills the frame reaches the band: a band colour that is a minority there and a
    # main colour of the centre is the garment's, not the backdrop's.
    mid_c, mid_s, mid_shares = kmeans(lab[_centre(h, w, 0.3)], GARMENT_CLUSTERS)
    main_mid = mid_c[mid_shares >= CENTRE_SHARE]
    near_mid = _distances(bg_c, main_mid).min(axis=1) <= REACH if len(main_mid) else np.zeros(len(bg_c), bool)
    keep = (shares >= MIN_SHARE) & ~(near_mid & (shares < BAND_MAJORITY))
    if not keep.any():
        keep = shares == shares.max()
    bg_c, bg_s = bg_c[keep], bg_s[keep]
    d_bg = _model_distance(lab, bg_c, bg_s)
    first = centre & _majority(d_bg > REACH)
    if first.sum() < 8:  # the centre looks like the backdrop: nothing to model a garment from
        return ~border_flood_mask(d_bg <= REACH)
    fg_c, fg_s, _ = kmeans(lab[first], GARMENT_CLUSTERS)
    garment = None
    for _ in range(ROUNDS):
        d_fg = _model_distance(lab, fg_c, fg_s)
        backdrop_like = _majority((d_bg + MARGIN < d_fg) & (d_bg <= REACH))
        # the unsmoothed colours too: smoothing blends the garment's edge with the backdrop, and an
        # edge pixel that is backdrop-coloured is backdrop
        d_bg_raw, d_fg_raw = _model_distance(raw, bg_c, bg_s), _model_distance(raw, fg_c, fg_s)
        backdrop_like |= (d_bg_raw + MARGIN < d_fg_raw) & (d_bg_raw <= REACH)
        new = _clean(~border_flood_mask(backdrop_like), centre)
        if garment is not None and np.array_equal(new, garment):
            break
        garment = new
        if garment.all() or not garment.any():
            break
        bg_c, bg_s, _ = kmeans(lab[~garment], BACKDROP_CLUSTERS)
        # the garment's model leaves out its backdrop-coloured parts (a white print on a white
        # backdrop): they are garment by enclosure, and would make the backdrop look like garment
        distinct = garment & (d_bg > MARGIN)
        if not distinct.any():
            break
        fg_c, fg_s, _ = kmeans(lab[distinct], GARMENT_CLUSTERS)
        d_bg = _model_distance(lab, bg_c, bg_s)
    return garment


def garment_mask(img: Image.Image) -> np.ndarray:
    """Bool HxW (the image's size), True on the garment: everything but the backdrop reachable from
    the border, with the backdrop modelled as several colours so textured backdrops are cut too."""
    rgb = img.convert("RGB")
    width, height = rgb.size
    work = rgb
    if max(width, height) > WORK_SIZE:
        scale = WORK_SIZE / max(width, height)
        work = rgb.resize((max(8, round(width * scale)), max(8, round(height * scale))), Image.Resampling.BOX)
    if min(work.size) < 8:
        return single_colour_mask(np.asarray(rgb))
    mask = _refine(rgb_to_lab(np.asarray(work)))
    if not mask.any():
        # Every colour of the frame is also one of the border's: a garment that fills the frame, as a
        # generated design often does. One backdrop colour (the border's median) then finds its shape.
        mask = single_colour_mask(np.asarray(work))
    if work.size != (width, height):
        plane = Image.fromarray(mask.astype(np.uint8) * 255).resize(
            (width, height), Image.Resampling.BILINEAR
        )
        mask = np.asarray(plane) >= 128
    return mask
