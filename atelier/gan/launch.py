"""Start a training segment as N torch.distributed ranks, as subprocesses, and supervise them.

    run_distributed_segment(state, dataset, nproc=N, steps=|seconds=, progress_fn, abort_fn, ...)
        -> the same TrainState, advanced: what train() does, run on N ranks (in-process when N == 1)
    join_distributed(nproc=N, nnodes=M, node_rank=K, master_addr=A, master_port=P)
        -> the ranks of host K (K > 0) of a run whose rank 0 lives on host 0; needs no inputs

Ranks are ``subprocess.Popen([python, "-m", "atelier.gan.rank"])`` (rank_group.py) with torchrun's environment
(MASTER_ADDR, MASTER_PORT, RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK), never
multiprocessing: a Celery prefork worker process is daemonic and may not have multiprocessing children.
Every rank writes rank-<r>.log (and rank-<r>.pid) in the work folder. The launcher polls: a rank that
exits non-zero (killed, crashed, or failed by the process group's timeout after a peer died) makes it
stop the others (SIGTERM, then SIGKILL) and raise DistributedTrainingError naming the rank and the tail
of its log; the whole segment is bounded by ``timeout_s``. The last checkpoint that rank 0 wrote (every
``checkpoint_every`` steps, atomically) survives, and a rerun from it resumes there.

Several hosts (torchrun-style static rendezvous: rank 0's host serves the TCP store):

    host 0 (holds the inputs; the training task or `atelier gan train` runs here):
        run_distributed_segment(state, dataset, nproc=2, nnodes=2, master_addr="10.0.0.1",
                                master_port=29500, ...)
        # or: atelier gan train --data DIR --out OUT --nproc 2 --nnodes 2 --node-rank 0 \\
        #         --master-addr 10.0.0.1 --master-port 29500
    host k = 1 .. nnodes-1 (same Atelier code and torch; no data, no checkpoint, no output):
        python -m atelier.gan.launch --nproc 2 --nnodes 2 --node-rank 1 \\
            --master-addr 10.0.0.1 --master-port 29500 [--device cuda|cpu] [--workdir DIR]
        # or: atelier gan train --nproc 2 --nnodes 2 --node-rank 1 --master-addr 10.0.0.1 --master-port 29500
        # or, from a task: join_distributed(nproc=2, nnodes=2, node_rank=1, master_addr=..., master_port=...)

Every host runs the same ``nproc`` (global rank = node_rank * nproc + local_rank); ``master_addr`` is an
address of host 0 that every host can reach, ``master_port`` a port free there (required when nnodes > 1;
one host alone picks a free one). The ranks also open connections to each other on ephemeral ports, so
the hosts must reach each other on any TCP port; with several interfaces, set GLOO_SOCKET_IFNAME (and
NCCL_SOCKET_IFNAME) in the environment of every launcher to the interface that carries that address.
All hosts must start within ``pg_timeout_s`` of each other; rank 0 sends the segment's settings, the
checkpoint and the dataset to every rank over the group, and only rank 0 writes anything but its log
(the checkpoint lands at host 0's ``checkpoint_path``). When a rank dies, its own host's launcher stops
that host's other ranks and fails; the ranks on the other hosts fail on the closed connection (gloo at
once) or, at the latest, at the group's timeout, and their launchers fail in turn. Rerun every host's
command to resume from the last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from .rank_group import DistributedTrainingError, RankGroup, default_threads, free_port

__all__ = [
    "DistributedTrainingError",
    "default_threads",
    "free_port",
    "join_distributed",
    "run_distributed_segment",
]

DEFAULT_PG_TIMEOUT_S = 300.0  # rendezvous and every collective; a checkpoint write on rank 0 must fit in it
STARTUP_ALLOWANCE_S = 120.0  # interpreter and torch start, rendezvous, input broadcast, DDP set-up
STEPS_ONLY_TIMEOUT_S = 24 * 3600.0  # the bound of a segment given steps and no seconds nor timeout_s
VOTE_EVERY = 5  # steps between stop votes (time budget, abort): one tiny collective each


def _check_topology(nproc: int, nnodes: int, node_rank: int, master_port: int | None) -> None:
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    if nnodes < 1:
        raise ValueError(f"nnodes must be at least 1, got {nnodes}")
    if not 0 <= node_rank < nnodes:
        raise ValueError(f"node_rank must be in 0..{nnodes - 1}, got {node_rank}")
    if nnodes > 1 and not master_port:
        raise ValueError("master_port is required when nnodes > 1: every host must dial the same port")


class _ProgressTail:
    """Rank 0's progress.jsonl, forwarded line by line to progress_fn."""

    def __init__(self, path: Path, progress_fn: Callable[[dict], None] | None):
        self.path, self.progress_fn, self.offset = path, progress_fn, 0

    def __call__(self) -> None:
        if self.progress_fn is None or not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # a half-written last line waits for the next call
        self.offset += end
        for line in chunk[:end].splitlines():
            if line.strip():
                self.progress_fn(json.loads(line))


def _replace_state(state, new) -> None:  # noqa: ANN001 - TrainState
    # Advance the caller's object in place, as train() does: callers keep using the state they passed.
    for f in fields(type(state)):
        setattr(state, f.name, getattr(new, f.name))


def run_distributed_segment(
    state,  # noqa: ANN001 - TrainState
    dataset: dict | str | os.PathLike,
    *,
    nproc: int,
    steps: int | None = None,
    seconds: float | None = None,
    progress_fn: Callable[[dict], None] | None = None,
    abort_fn: Callable[[], bool] | None = None,
    progress_every: int = 20,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    device: str | None = None,
    nnodes: int = 1,
    master_addr: str = "127.0.0.1",
    master_port: int | None = None,
    workdir: str | os.PathLike | None = None,
    timeout_s: float | None = None,
    pg_timeout_s: float = DEFAULT_PG_TIMEOUT_S,
    threads: int | None = None,
    replica_check_every: int = 0,
    seed: int = 0,
):
    """Train ``state`` for ``steps`` and/or ``seconds`` on ``nproc * nnodes`` ranks (this host is node 0
    and holds rank 0); returns ``state``, advanced in place, as ``train()`` does.

    ``dataset``: the prepared dataset dict, or the path of its ``dataset_to_bytes`` file. ``cfg.batch_size``
    is the global batch, split evenly over the ranks. ``checkpoint_path``: where rank 0 writes the
    checkpoint (every ``checkpoint_every`` steps and at the end; default: in ``workdir``). ``device``:
    "cuda" puts local rank i on cuda:i (NCCL), "cpu" runs gloo (default: the state's device type).
    ``abort_fn`` is polled by the launcher; when it says so the ranks stop together within a few steps
    and the segment ends normally, as train() does. ``seed`` seeds the per-rank augmentation streams.
    ``replica_check_every``: compare every rank's weights every N steps (a test aid; always at the end).
    Raises DistributedTrainingError when a rank fails or the segment passes ``timeout_s`` (default:
    ``seconds`` + ``pg_timeout_s`` + a start-up allowance, or a day for a steps-only segment).
    """
    from .data import dataset_to_bytes
    from .training import (
        checkpoint_from_bytes,
        checkpoint_to_bytes,
        state_from_checkpoint,
        state_to_checkpoint,
    )

    if steps is None and seconds is None:
        raise ValueError("run_distributed_segment needs steps or seconds")
    _check_topology(nproc, nnodes, 0, master_port)
    world = nproc * nnodes
    if state.config.batch_size % world:
        raise ValueError(
            f"batch_size {state.config.batch_size} is not divisible by {world} ranks (nproc x nnodes)"
        )
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    if world == 1:
        # One rank: the single-process loop itself, in this process (no group, no DDP).
        out = Path(checkpoint_path) if checkpoint_path else None
        return _run_in_process(
            state, dataset, steps, seconds, progress_fn, abort_fn, progress_every, out, checkpoint_every
        )
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="atelier-ranks-") if own_dir else workdir)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(checkpoint_path) if checkpoint_path else work / "checkpoint.pt"

    device_type = (device and str(device).split(":")[0]) or state.device.type
    if device_type == "cuda":
        import torch

        if torch.cuda.device_count() < nproc:
            raise ValueError(f"nproc {nproc} is more than the {torch.cuda.device_count()} CUDA devices here")
    if isinstance(dataset, dict):
        data_path = work / "dataset.pt"
        data_path.write_bytes(dataset_to_bytes(dataset))
    else:
        data_path = Path(dataset)
    ckpt_in = work / "input-checkpoint.pt"
    ckpt_in.write_bytes(checkpoint_to_bytes(state_to_checkpoint(state)))
    for stale in ("result.json", "progress.jsonl", "stop"):
        (work / stale).unlink(missing_ok=True)
    spec = {
        "checkpoint_in": str(ckpt_in),
        "checkpoint_out": str(out.resolve()),
        "dataset": str(data_path.resolve()),
        "steps": steps,
        "seconds": seconds,
        "progress_every": progress_every,
        "checkpoint_every": checkpoint_every,
        "replica_check_every": replica_check_every,
        "vote_every": VOTE_EVERY,
        "precision": state.precision,
        "channels_last": state.channels_last,
        "seed": seed,
    }
    (work / "segment.json").write_text(json.dumps(spec))
    if timeout_s is None:
        timeout_s = STEPS_ONLY_TIMEOUT_S
        if seconds is not None:
            timeout_s = seconds + pg_timeout_s + STARTUP_ALLOWANCE_S
    port = master_port or free_port()
    tail = _ProgressTail(work / "progress.jsonl", progress_fn)
    stop_file = work / "stop"

    def tick() -> None:
        tail()
        if abort_fn is not None and not stop_file.exists() and abort_fn():
            stop_file.touch()

    group = RankGroup(
        nproc=nproc,
        nnodes=nnodes,
        node_rank=0,
        master_addr=master_addr,
        master_port=port,
        workdir=work,
        device_type=device_type,
        pg_timeout_s=pg_timeout_s,
        threads=threads,
    )
    with group:
        group.wait(time.monotonic() + timeout_s, tick)
    tail()
    new = state_from_checkpoint(
        checkpoint_from_bytes(out.read_bytes()),
        device=state.device,
        precision=state.precision,
        channels_last=state.channels_last,
    )
    _replace_state(state, new)
    if own_dir:  # on success nothing of ours is left behind; a failure keeps the logs (named in the error)
        shutil.rmtree(work, ignore_errors=True)
    else:  # the caller's folder keeps the logs, result.json and (by default) the checkpoint
        ckpt_in.unlink(missing_ok=True)
        if isinstance(dataset, dict):
            data_path.unlink(missing_ok=True)
    return state


def _run_in_process(state, dataset, steps, seconds, progress_fn, abort_fn, progress_every, out, every):  # noqa: ANN001, ANN202
    from .data import dataset_from_bytes
    from .rank import write_atomic
    from .training import checkpoint_to_bytes, state_to_checkpoint, train

    if not isinstance(dataset, dict):
        dataset = dataset_from_bytes(Path(dataset).read_bytes())
    start = state.step

    def boundary() -> bool:
        if out is not None and every and state.step > start and state.step % every == 0:
            write_atomic(out, checkpoint_to_bytes(state_to_checkpoint(state)))
        return abort_fn is not None and abort_fn()

    train(
        state,
        dataset,
        steps=steps,
        seconds=seconds,
        progress_fn=progress_fn,
        abort_fn=boundary,
        progress_every=progress_every,
    )
    if out is not None:
        write_atomic(out, checkpoint_to_bytes(state_to_checkpoint(state)))
    return state


def join_distributed(
    *,
    nproc: int,
    nnodes: int,
    node_rank: int,
    master_addr: str,
    master_port: int,
    device: str | None = None,
    workdir: str | os.PathLike | None = None,
    timeout_s: float = STEPS_ONLY_TIMEOUT_S,
    pg_timeout_s: float = DEFAULT_PG_TIMEOUT_S,
    threads: int | None = None,
) -> dict:
    """Run host ``node_rank``'s ranks (node_rank > 0) of a run started on host 0; returns when they all
    finished, raises DistributedTrainingError when one fails or ``timeout_s`` passes."""
    _check_topology(nproc, nnodes, node_rank, master_port)
    if node_rank == 0:
        raise ValueError("node 0 holds rank 0 and the inputs: it runs run_distributed_segment")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(workdir or tempfile.mkdtemp(prefix="atelier-ranks-"))
    started = time.monotonic()
    group = RankGroup(
        nproc=nproc,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=master_port,
        workdir=work,
        device_type=str(device).split(":")[0],
        pg_timeout_s=pg_timeout_s,
        threads=threads,
    )
    with group:
        group.wait(time.monotonic() + timeout_s)
    return {
        "node_rank": node_rank,
        "ranks": [r for r, _ in group.procs],
        "seconds": round(time.monotonic() - started, 2),
        "workdir": str(work),
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m atelier.gan.launch``: join a multi-host run from a host other than host 0."""
    ap = argparse.ArgumentParser(prog="python -m atelier.gan.launch", description=main.__doc__)
    ap.add_argument("--nproc", type=int, required=True)
    ap.add_argument("--nnodes", type=int, required=True)
    ap.add_argument("--node-rank", type=int, required=True)
    ap.add_argument("--master-addr", required=True)
    ap.add_argument("--master-port", type=int, required=True)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--workdir", default=None, help="folder for the ranks' logs (default: a new temp folder)")
    ap.add_argument("--timeout", type=float, default=STEPS_ONLY_TIMEOUT_S, help="seconds before giving up")
    ap.add_argument("--pg-timeout", type=float, default=DEFAULT_PG_TIMEOUT_S, help="the group's timeout")
    args = ap.parse_args(argv)
    try:
        out = join_distributed(
            nproc=args.nproc,
            nnodes=args.nnodes,
            node_rank=args.node_rank,
            master_addr=args.master_addr,
            master_port=args.master_port,
            device=args.device,
            workdir=args.workdir,
            timeout_s=args.timeout,
            pg_timeout_s=args.pg_timeout,
        )
    except (ValueError, DistributedTrainingError) as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
