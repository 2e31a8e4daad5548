"""The device a worker's GAN tasks run on, decided once per process, said out loud when it is the CPU.

The worker image carries a CUDA build of torch. On a host whose NVIDIA driver is too old for it, or
where the container was given no GPU, `torch.cuda.is_available()` is simply False and training and
generation would run on the CPU, tens of times slower, without a word. So the first task of a
process that asks logs one WARNING with the reason and the worker exports
`atelier_worker_device_info{device, reason}` (atelier/workers/metrics.py) for dashboards and alerts.

    reason       device   when
    ""           cuda:0   CUDA works
    cpu_build    cpu      torch was built without CUDA (the CPU wheel): expected, logged at INFO
    no_gpu       cpu      a CUDA build, but no GPU was handed to this process (no driver, no device)
    cuda_init    cpu      a CUDA build whose initialisation failed, e.g. the driver is older than it needs
"""

from __future__ import annotations

import logging
import warnings
from functools import lru_cache
from typing import Any

log = logging.getLogger("atelier.worker.device")


def diagnose(torch: Any) -> tuple[str, str, str]:
    """(device, reason, detail) for this process; `torch` is passed in so tests can hand a stand-in."""
    if not torch.backends.cuda.is_built():
        return "cpu", "cpu_build", f"torch {torch.__version__} was built without CUDA"
    # torch reports a failed CUDA initialisation (an old driver) as a warning once per process,
    # then answers False from then on: catch it on this first ask to name the reason.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        return "cuda:0", "", torch.cuda.get_device_name(0)
    messages = [str(w.message) for w in caught if "CUDA" in str(w.message)]
    built = f"torch {torch.__version__} built for CUDA {torch.version.cuda}"
    if messages:
        return "cpu", "cuda_init", f"{built}: {messages[0]}"
    return "cpu", "no_gpu", f"{built}, but no GPU is visible to this process (no NVIDIA driver or device)"


@lru_cache(maxsize=1)
def worker_device() -> str:
    """ "cuda" or "cpu" for this process's GAN tasks; the first call logs and records the choice."""
    import torch

    device, reason, detail = diagnose(torch)
    if device == "cpu":
        level = logging.INFO if reason == "cpu_build" else logging.WARNING
        log.log(level, "GAN tasks run on the CPU (%s): %s", reason, detail)
    else:
        log.info("GAN tasks run on %s (%s)", device, detail)
    from atelier.workers.metrics import record_device

    record_device(device, reason)
    return device.split(":")[0]
