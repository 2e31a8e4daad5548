"""Colour science for trend reports: sRGB <-> CIELAB (D65) and plain names for palette colours.

CIELAB is roughly perceptually uniform, so a distance in it means about the same visible difference
everywhere; clustering garment pixels there groups colours as people see them.
"""

from __future__ import annotations

import numpy as np

# sRGB (linear) -> XYZ, D65 white
_M = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_WHITE = np.array([0.95047, 1.0, 1.08883])
_EPS, _KAPPA = 216 / 24389, 24389 / 27

# a few everyday names, each at a representative sRGB value: the nearest in Lab names a palette colour
NAMED = {
    "black": (20, 20, 20),
    "charcoal": (60, 60, 64),
    "grey": (128, 128, 128),
    "white": (245, 245, 245),
    "beige": (220, 200, 165),
    "brown": (120, 75, 40),
    "red": (200, 30, 40),
    "burgundy": (110, 20, 40),
    "pink": (240, 150, 180),
    "orange": (240, 130, 30),
    "yellow": (240, 220, 50),
    "olive": (110, 110, 40),
    "green": (40, 150, 60),
    "teal": (30, 130, 130),
    "light blue": (140, 190, 235),
    "blue": (40, 80, 200),
    "navy": (25, 35, 90),
    "purple": (120, 50, 160),
}


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in 0..255 -> (..., 3) L*a*b*."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _M.T / _WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1
    )


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """(..., 3) L*a*b* -> (..., 3) sRGB in 0..255 (clipped to the gamut)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    fx, fz = fy + lab[..., 1] / 500, fy - lab[..., 2] / 200
    f = np.stack([fx, fy, fz], axis=-1)
    xyz = np.where(f**3 > _EPS, f**3, (116 * f - 16) / _KAPPA) * _WHITE
    linear = np.clip(xyz @ np.linalg.inv(_M).T, 0, 1)
    c = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(np.round(c * 255), 0, 255)


_NAMED_LAB = rgb_to_lab(np.array(list(NAMED.values())))


def colour_name(lab: np.ndarray) -> str:
    return list(NAMED)[int(np.argmin(((_NAMED_LAB - np.asarray(lab)) ** 2).sum(axis=1)))]


def to_hex(rgb) -> str:  # noqa: ANN001
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"
