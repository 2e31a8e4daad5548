"""Date a folder-per-category catalogue over N months with a planted trend, for trying trend reports.

    python scripts/date_catalogue.py ../shared/datasets/clothing-small/train > dates.csv
    atelier catalogue upload ../shared/datasets/clothing-small/train --dates-from dates.csv

Every photo gets one month (the 15th of it) of the N months ending with --end. Ordinary photos fall in
every month alike; photos of the --rising category, and photos whose garment is mostly the --rising
colour (nearest named colour in CIELAB over the garment pixels, backdrop removed), are drawn with a
weight that grows linearly from 0.25 to 1.75 over the months. Their share then rises month by month:
the planted trend a monthly report should find. Prints CSV `path,captured_at` (paths relative to DIR)
and, on stderr, how many photos of each kind there are.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

from atelier.imaging.colour import NAMED, colour_name, rgb_to_lab
from atelier.imaging.masks import garment_mask

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def main_colour(path: Path) -> str:
    with Image.open(path) as img:
        small = img.convert("RGB")
        small.thumbnail((64, 64))
    mask = garment_mask(small)
    pixels = np.asarray(small)[mask] if mask.sum() >= 16 else np.asarray(small).reshape(-1, 3)
    names = [colour_name(v) for v in rgb_to_lab(pixels[:: max(1, len(pixels) // 300)])]
    return max(set(names), key=names.count)


def months_back(end: str, n: int) -> list[date]:
    year, month = (int(v) for v in end.split("-"))
    first = year * 12 + month - 1 - (n - 1)
    return [date((first + i) // 12, (first + i) % 12 + 1, 15) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--end", default=f"{date.today().year}-{date.today().month:02d}", help="YYYY-MM")
    parser.add_argument("--rising", default="shorts", help="the category whose share rises")
    parser.add_argument("--rising-colour", default="red", choices=sorted(NAMED))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    months = months_back(args.end, args.months)
    steps = np.arange(args.months) / max(1, args.months - 1)
    rising_weights = list(0.25 + 1.5 * steps)
    counts = {"rising category": 0, "rising colour": 0, "ordinary": 0}
    out = csv.writer(sys.stdout)
    out.writerow(["path", "captured_at"])
    for path in sorted(p for p in args.directory.rglob("*") if p.suffix.lower() in SUFFIXES):
        if path.parent.name == args.rising:
            kind = "rising category"
        elif main_colour(path) == args.rising_colour:
            kind = "rising colour"
        else:
            kind = "ordinary"
        counts[kind] += 1
        weights = rising_weights if kind != "ordinary" else None
        month = rng.choices(months, weights=weights)[0]
        out.writerow([path.relative_to(args.directory).as_posix(), month.isoformat()])
    print(counts, file=sys.stderr)


if __name__ == "__main__":
    main()
