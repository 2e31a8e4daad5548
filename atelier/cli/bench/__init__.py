"""`atelier bench ...`: benchmarks that print one JSON object, never timed assertions in tests.

    model.py    train     the bare training loop (and bench_generate_bare, the bare generation loop)
    system.py   generate  bare_memory, bare_s3 and the whole system's images/s, and their ratio
    gpu.py      gpu       the GPU check: train, sample, judge, both bare benches
    api.py      api       status polling by 200 dashboards during a bulk batch
    chaos.py    chaos     batches through worker, S3, broker and SQL faults
    scale.py    scale     one batch on one and two worker hosts (network namespaces), one host cut off

Each module imports torch, the stack or the client only inside its functions, so `atelier --help`
starts without them.
"""

from __future__ import annotations

import click

from atelier.cli.bench.api import bench_api_cmd
from atelier.cli.bench.chaos import bench_chaos_cmd
from atelier.cli.bench.gpu import bench_gpu_cmd
from atelier.cli.bench.model import bench_train_cmd
from atelier.cli.bench.scale import bench_scale_cmd
from atelier.cli.bench.system import bench_generate_system_cmd


@click.group()
def bench() -> None:
    """Benchmarks that print one JSON object."""


for command in (
    bench_train_cmd,
    bench_generate_system_cmd,
    bench_gpu_cmd,
    bench_api_cmd,
    bench_chaos_cmd,
    bench_scale_cmd,
):
    bench.add_command(command)
