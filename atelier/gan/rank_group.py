"""This host's ranks as subprocesses: start them with torchrun's environment, poll them, stop them.

    with RankGroup(nproc=2, nnodes=1, node_rank=0, master_addr=..., master_port=..., workdir=W,
                   device_type="cpu", pg_timeout_s=300, threads=None) as group:
        group.wait(deadline, tick)      # returns when every rank exited 0; raises DistributedTrainingError
                                        # (the others stopped) when one did not, or past the deadline

Each rank is ``subprocess.Popen([python, "-m", "atelier.gan.rank"])`` with MASTER_ADDR, MASTER_PORT, RANK,
LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE and GROUP_RANK, its output appended to W/rank-<r>.log and its
pid in W/rank-<r>.pid. Never multiprocessing: a Celery prefork worker process is daemonic and may not
have multiprocessing children. Leaving the ``with`` block stops whatever still runs (SIGTERM, then
SIGKILL after ``STOP_GRACE_S``); a rank also dies with its launcher (rank.py sets PDEATHSIG).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

STOP_GRACE_S = 10.0  # between SIGTERM and SIGKILL of a rank
POLL_S = 0.2

_PACKAGE = __package__ or "atelier.gan"
RANK_MODULE = f"{_PACKAGE}.rank"
_ROOT = Path(__file__).resolve().parents[len(_PACKAGE.split("."))]  # the folder holding the package


class DistributedTrainingError(RuntimeError):
    """A rank failed, or the segment ran past its time limit; the other ranks were stopped."""


def free_port(host: str = "") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def default_threads(nproc: int) -> int:
    """Torch threads per CPU rank: the host's cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // nproc)


class RankGroup:
    """This host's ranks as subprocesses: start, poll, stop; as a context manager nothing outlives it."""

    def __init__(
        self,
        *,
        nproc: int,
        nnodes: int,
        node_rank: int,
        master_addr: str,
        master_port: int,
        workdir: Path,
        device_type: str,
        pg_timeout_s: float,
        threads: int | None,
        python: str = sys.executable,
    ):
        self.workdir = workdir
        self.procs: list[tuple[int, subprocess.Popen]] = []
        world = nproc * nnodes
        base = dict(os.environ)
        base["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), base.get("PYTHONPATH", "")) if p)
        base.update(
            MASTER_ADDR=master_addr,
            MASTER_PORT=str(master_port),
            WORLD_SIZE=str(world),
            LOCAL_WORLD_SIZE=str(nproc),
            GROUP_RANK=str(node_rank),
            ATELIER_DIST_WORKDIR=str(workdir),
            ATELIER_DIST_DEVICE=device_type,
            ATELIER_DIST_TIMEOUT_S=str(pg_timeout_s),
            ATELIER_DIST_PARENT=str(os.getpid()),
            PYTHONUNBUFFERED="1",
        )
        base.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # a timed-out NCCL collective fails
        if device_type == "cpu":
            base["OMP_NUM_THREADS"] = str(threads or default_threads(nproc))
        self._envs = []
        for local in range(nproc):
            rank = node_rank * nproc + local
            self._envs.append((rank, {**base, "RANK": str(rank), "LOCAL_RANK": str(local)}))
        self.python = python

    def __enter__(self) -> RankGroup:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for rank, env in self._envs:
                # appended: a rerun in the same folder keeps the story of the run it resumes
                log = open(self.log_path(rank), "ab")  # noqa: SIM115 - the child holds it
                try:
                    p = subprocess.Popen(
                        [self.python, "-m", RANK_MODULE],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                finally:
                    log.close()
                self.procs.append((rank, p))
                (self.workdir / f"rank-{rank}.pid").write_text(str(p.pid))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_path(self, rank: int) -> Path:
        return self.workdir / f"rank-{rank}.log"

    def poll(self) -> bool:
        """True when every rank exited 0; raises when one exited otherwise; False while they run."""
        codes = [(rank, p.poll()) for rank, p in self.procs]
        failed = [(rank, c) for rank, c in codes if c not in (None, 0)]
        if failed:
            self.stop()
            # A killed rank first: the survivors' errors (a closed connection) are its consequence.
            rank, code = sorted(failed, key=lambda rc: rc[1] >= 0)[0]
            what = "; ".join(f"rank {r} {_describe(c)}" for r, c in failed)
            raise DistributedTrainingError(
                f"{what}; the other ranks were stopped (logs in {self.workdir})\n"
                f"last lines of rank {rank}:\n{self.tail(rank)}"
            )
        return all(c == 0 for _, c in codes)

    def stop(self) -> None:
        alive = [p for _, p in self.procs if p.poll() is None]
        for p in alive:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in alive:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=STOP_GRACE_S)

    def tail(self, rank: int, lines: int = 15) -> str:
        try:
            text = self.log_path(rank).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait(
        self,
        deadline: float,
        tick: Callable[[], None] | None = None,
    ) -> None:
        while True:
            if tick is not None:
                tick()
            if self.poll():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise DistributedTrainingError(
                    f"the ranks ran past their time limit (timeout_s) and were stopped "
                    f"(logs in {self.workdir})"
                )
            time.sleep(POLL_S)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
