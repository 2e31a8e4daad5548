"""`atelier bench generate` as an operator runs it: a process of its own that starts an embedded stack,
registers a model and pushes one batch through API, queue, worker, S3 and SQL."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.one_backend("sqlite")]


def test_bench_generate_prints_the_system_rate_beside_the_bare_loops(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "atelier.cli.main", "bench", "generate", "--json", "--count", "40"]
        + ["--resolution", "16"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["system"]["status"] == "succeeded"
    assert out["system"]["images"] == 40 == out["bare_s3"]["images"] == out["bare_memory"]["images"]
    assert out["system"]["images_per_s"] > 0 and out["ratio"] > 0
