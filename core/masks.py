"""Garment masks: which pixels of a product photo or a generated design are the garment.

    photo ──> backdrop colour (median of the border) ──> "near the backdrop" per pixel
          ──> border flood: near pixels 4-connected to the border are the backdrop ──> garment = the rest

Only pixels that connect to the border count as backdrop, so a white print inside a garment stays
garment. Used by the try-on composite (API, no torch) and by the trend report's colour analysis
(workers), and by the `background` post-process op.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def border_flood_mask(near: np.ndarray) -> np.ndarray:
    """Pixels of `near` (bool HxW) 4-connected to the image border through other `near` pixels."""
    reach = np.zeros_like(near)
    reach[0, :], reach[-1, :], reach[:, 0], reach[:, -1] = near[0, :], near[-1, :], near[:, 0], near[:, -1]
    while True:
        grown = reach.copy()
        grown[1:, :] |= reach[:-1, :]
        grown[:-1, :] |= reach[1:, :]
        grown[:, 1:] |= reach[:, :-1]
        grown[:, :-1] |= reach[:, 1:]
        grown &= near
        if np.array_equal(grown, reach):
            return reach
        reach = grown


def backdrop_colour(arr: np.ndarray) -> np.ndarray:
    """The median colour of the one-pixel border: the backdrop of a product photo."""
    border = np.concatenate([arr[0, :], arr[-1, :], arr[:, 0], arr[:, -1]]).astype(np.float64)
    return np.median(border, axis=0)


def garment_mask(img: Image.Image, *, tolerance: float = 28.0) -> np.ndarray:
    """Bool HxW, True on the garment: everything but the backdrop reachable from the border.

    `tolerance` is the largest RGB distance from the backdrop colour that still counts as backdrop;
    photos on a textured or dark backdrop get a noisier mask, which only matters for colour shares."""
    arr = np.asarray(img.convert("RGB"), dtype=np.int16)
    distance = np.sqrt(((arr - backdrop_colour(arr)) ** 2).sum(axis=2))
    return ~border_flood_mask(distance <= tolerance)
