"""The documentation a user reads: every setting is in the configuration reference, and every link
between the README and docs/ leads to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

from atelier.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_in_the_configuration_reference():
    reference = (ROOT / "docs" / "configuration.md").read_text()
    missing = [
        f"ATELIER_{name.upper()}"
        for name in Settings.model_fields
        if f"ATELIER_{name.upper()}" not in reference
    ]
    assert not missing, f"docs/configuration.md does not describe {missing}"


def test_links_between_the_guides_lead_somewhere():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken
