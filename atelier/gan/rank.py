"""One rank of a distributed training segment: ``python -m atelier.gan.rank`` (started by ``launch.py``).

    environment (torchrun's names): MASTER_ADDR MASTER_PORT RANK LOCAL_RANK WORLD_SIZE, plus
        ATELIER_DIST_WORKDIR    this host's folder: rank-<r>.log; on rank 0 also segment.json, inputs, outputs
        ATELIER_DIST_DEVICE     cpu | cuda          ATELIER_DIST_TIMEOUT_S   the process group's timeout
        ATELIER_DIST_PARENT     the launcher's pid: a rank never outlives its launcher

    join the group ─ rank 0 reads segment.json, the input checkpoint and the dataset, and broadcasts
    the bytes (ranks on other hosts need no files) ─ every rank builds the same TrainState ─ DDP ─
    train(dist=...) ─ rank 0 writes the checkpoint (every checkpoint_every steps and at the end) and
    result.json ─ barrier ─ leave the group.

Stopping: the step budget is the same number on every rank; the time budget and a stop request (the file
``stop`` in rank 0's folder, written by the launcher when its abort_fn says so) are put to a vote every
``vote_every`` steps, so that all ranks leave the loop at the same step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

log = logging.getLogger("atelier.rank")


def write_atomic(path: Path, data: bytes) -> None:
    """A reader (or a rerun after a kill) sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _die_with_parent() -> None:
    # A launcher killed outright (a Celery worker lost) must not leave ranks holding GPUs or ports.
    parent = int(os.environ.get("ATELIER_DIST_PARENT", "0"))
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if parent and os.getppid() != parent:
        sys.exit("the launcher exited before this rank started")


def run_rank() -> int:
    import torch

    from .data import dataset_from_bytes
    from .distributed import init_process_group_from_env
    from .training import (
        checkpoint_from_bytes,
        checkpoint_to_bytes,
        state_from_checkpoint,
        state_to_checkpoint,
        train,
    )

    workdir = Path(os.environ["ATELIER_DIST_WORKDIR"])
    device_type = os.environ.get("ATELIER_DIST_DEVICE", "cpu")
    timeout_s = float(os.environ.get("ATELIER_DIST_TIMEOUT_S", "300"))
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    log.info("joining the group at %s:%s", os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"])
    dist = init_process_group_from_env(device_type, timeout_s)
    rank0 = dist.rank == 0
    try:
        spec_bytes = (workdir / "segment.json").read_bytes() if rank0 else None
        spec = json.loads(dist.broadcast_bytes(spec_bytes))
        ckpt = dist.broadcast_bytes(Path(spec["checkpoint_in"]).read_bytes() if rank0 else None)
        data = dist.broadcast_bytes(Path(spec["dataset"]).read_bytes() if rank0 else None)
        dist.seed = int(spec["seed"])
        state = state_from_checkpoint(
            checkpoint_from_bytes(ckpt),
            device=dist.device,
            precision=spec["precision"],
            channels_last=spec["channels_last"],
        )
        del ckpt
        dataset = dataset_from_bytes(data)
        del data
        dist.rows(state.config.batch_size)  # fails early, on every rank, when B does not split
        dist.wrap(state)
        log.info("rank %d of %d on %s at step %d", dist.rank, dist.world_size, dist.device, state.step)

        out = Path(spec["checkpoint_out"]) if rank0 else None
        stop_file = workdir / "stop"
        start, t0 = state.step, time.perf_counter()
        seconds, every = spec["seconds"], spec["checkpoint_every"]
        check_every, vote_every = spec["replica_check_every"], spec["vote_every"]
        checks = [0]

        def save() -> None:
            write_atomic(out, checkpoint_to_bytes(state_to_checkpoint(state)))
            log.info("rank 0 wrote %s at step %d", out, state.step)

        def check_replicas() -> None:
            if not dist.replicas_identical(state):
                raise RuntimeError(f"ranks hold different weights after step {state.step}")
            checks[0] += 1

        def at_step_boundary() -> bool:
            # Called by train() before every step, at the same steps on every rank.
            done = state.step - start
            if done and check_every and done % check_every == 0:
                check_replicas()
            if rank0 and done and every and state.step % every == 0:
                save()
            if done % vote_every:
                return False
            late = seconds is not None and time.perf_counter() - t0 >= seconds
            return dist.vote_stop(late or (rank0 and stop_file.exists()))

        progress_file = workdir / "progress.jsonl"

        def progress(p: dict) -> None:
            with progress_file.open("a") as f:
                f.write(json.dumps(p) + "\n")

        steps = spec["steps"]
        train(
            state,
            dataset,
            steps=steps,
            seconds=None if steps is not None else math.inf,  # the time budget is voted on, above
            progress_fn=progress if rank0 else None,
            abort_fn=at_step_boundary,
            progress_every=spec["progress_every"],
            dist=dist,
        )
        check_replicas()  # once at the end in any case
        if rank0:
            save()
            result = {
                "step": state.step,
                "start_step": start,
                "world_size": dist.world_size,
                "replica_checks": checks[0],
                "checkpoint": str(out),
                "seconds": time.perf_counter() - t0,
            }
            write_atomic(workdir / "result.json", json.dumps(result).encode())
        dist.barrier()
    finally:
        dist.close()
    log.info("rank %d done", dist.rank)
    return 0


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s rank {os.environ.get('RANK', '?')} %(levelname)s %(message)s",
    )
    _die_with_parent()
    sys.exit(run_rank())


if __name__ == "__main__":
    main()
