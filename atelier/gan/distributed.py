"""Training across ranks with torch.distributed: what runs inside one rank (``launch.py`` starts them).

    init_process_group_from_env(device_type, timeout_s) -> Dist    (torchrun's RANK, WORLD_SIZE, ...)
    dist.wrap(state)              G and D in DistributedDataParallel; train_step calls dist.G / dist.D
    dist.rows(n)                  this rank's rows of a global batch of n: the sharded sampler
    dist.aug_generator(step)      this rank's augmentation stream for one step
    dist.sync_step(state, ld, lg) float buffers and the two losses averaged over the ranks
    dist.vote_stop(want)          True on every rank as soon as one rank wants to stop
    dist.broadcast_bytes(b)       rank 0's bytes on every rank (inputs reach hosts that have no files)
    dist.replicas_identical(state)  one digest of G, D, G_ema, Adam and counters per rank, compared

One step on W ranks (``train_step(..., dist=...)``), for a global batch B (``cfg.batch_size``):

  * Sampling. Every rank draws the indices of the whole global batch (class-balanced or uniform, from
    ``data_gen``), its flips and its z (from ``train_gen``), then keeps rows [r*B/W, (r+1)*B/W). Both
    generators hold the same state on every rank and advance identically, so the ranks' shares are
    disjoint and deterministic and their union is exactly the batch one rank at batch B draws; rank 0's
    checkpoint carries the RNG state of all of them.
  * Augmentation (DiffAugment, the ADA keep-mask) draws from a per-rank generator seeded by (run seed,
    step, rank): independent across ranks, reproducible on resume, and nothing to checkpoint.
  * G and D forward through DDP, which averages the gradients in the backward. The lazy R1 term is part of
    D's single backward: ``autograd.grad(create_graph=True)`` is taken w.r.t. the input images only, so
    no parameter's gradient hook fires there, and the double-backward then reaches each parameter's
    AccumulateGrad once, as a plain backward does: DDP needs no special treatment for it (the tests
    check the 2-rank run against the 1-rank run at a large R1 weight). The G pass goes through the plain
    D with its weights frozen, so D's reducer is not touched. Every parameter of G and D must receive a
    gradient in its step (true of every network build_networks makes): DDP runs with
    find_unused_parameters=False, which two D forwards before one backward require.
  * After both optimiser steps one all_reduce averages every float buffer of G and D (G's per-class w_avg,
    BN running statistics) and the two losses; ADA's sign counter is summed at its update steps. Then
    the EMA runs on identical G on every rank, so G, D, G_ema, the Adam moments and aug_p are identical
    everywhere after every step (``replicas_identical`` checks it).

What differs from one rank at batch B (why 2 ranks follow 1 rank closely but not bit for bit): D's
minibatch-stddev and BatchNorm (the DCGAN baseline, g_norm="batch") see one rank's rows, not the global
batch; a mean of per-rank means is summed in another order than one mean; w_avg and BN statistics are
averages of per-rank updates; and with augmentation on, the augmentations (and, from the next step on,
the noise, since the single-process step draws both from one generator) come from other streams.

The process group: NCCL for CUDA tensors with gloo beside it for CPU tensors ("cpu:gloo,cuda:nccl"), gloo
alone on the CPU; every collective has the group's timeout, so a dead peer fails the survivors (gloo
usually at once, when the socket closes) instead of hanging them.
"""

from __future__ import annotations

import datetime
import gc
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


@dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    seed: int = 0  # the run's seed: the augmentation streams derive from it
    G: nn.Module | None = None  # DDP wrappers, set by wrap()
    D: nn.Module | None = None
    _aug_gen: torch.Generator | None = None

    def wrap(self, state) -> None:  # noqa: ANN001 - TrainState
        """Wrap G and D in DDP (which broadcasts rank 0's weights and buffers once)."""
        state.D.requires_grad_(True)  # a state that ended on a G pass has D frozen; DDP hooks need it live
        state.G.requires_grad_(True)
        kw = dict(forward_sync_buffers=False, find_unused_parameters=False)
        if self.device.type == "cuda":
            kw["device_ids"] = [self.device.index]
        # Buffers are averaged once per step by sync_step, not broadcast from rank 0 at every forward:
        # w_avg and BN statistics are updated inside the forward, from each rank's own rows.
        self.G, self.D = DDP(state.G, **kw), DDP(state.D, **kw)

    def rows(self, n: int) -> slice:
        if n % self.world_size:
            raise ValueError(f"batch_size {n} is not divisible by the {self.world_size} ranks")
        share = n // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def aug_generator(self, step: int) -> torch.Generator:
        if self._aug_gen is None:
            self._aug_gen = torch.Generator(device=self.device)
        # SplitMix-style constants keep (seed, step, rank) seeds far apart; seeding is host-side, no sync.
        return self._aug_gen.manual_seed(
            (self.seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + self.rank * 0x94D049BB133111EB)
            % (2**63)
        )

    def all_reduce_sum_(self, t: torch.Tensor) -> torch.Tensor:
        tdist.all_reduce(t)
        return t

    def sync_step(self, state, loss_d: torch.Tensor, loss_g: torch.Tensor):  # noqa: ANN001, ANN201
        """Average the float buffers of G and D and the two losses over the ranks, in one all_reduce."""
        bufs = [b for net in (state.G, state.D) for b in net.buffers() if b.is_floating_point()]
        parts = [b.detach().float().reshape(-1) for b in bufs]
        flat = torch.cat(parts + [loss_d.detach().float().reshape(1), loss_g.detach().float().reshape(1)])
        tdist.all_reduce(flat)
        flat /= self.world_size
        with torch.no_grad():
            for b, chunk in zip(bufs, flat[:-2].split([p.numel() for p in parts]), strict=True):
                b.copy_(chunk.view(b.shape))
        return flat[-2], flat[-1]

    def vote_stop(self, want: bool) -> bool:
        # A CPU tensor: gloo carries it beside NCCL, and the vote never waits for the GPU.
        t = torch.tensor([1 if want else 0], dtype=torch.int32)
        tdist.all_reduce(t)
        return bool(t.item() > 0)

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's ``data`` on every rank (over gloo, in CPU memory)."""
        size = torch.tensor([len(data) if self.rank == 0 and data is not None else 0], dtype=torch.int64)
        tdist.broadcast(size, 0)
        n = int(size.item())
        if n == 0:
            return b""
        if self.rank == 0:
            buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        else:
            buf = torch.empty(n, dtype=torch.uint8)
        tdist.broadcast(buf, 0)
        return data if self.rank == 0 else buf.numpy().tobytes()

    def replicas_identical(self, state) -> bool:  # noqa: ANN001 - TrainState
        digest = torch.frombuffer(bytearray(replica_digest(state)), dtype=torch.uint8)
        gathered = [torch.empty_like(digest) for _ in range(self.world_size)]
        tdist.all_gather(gathered, digest)
        return all(torch.equal(gathered[0], g) for g in gathered[1:])

    def barrier(self) -> None:
        tdist.barrier()

    def close(self) -> None:
        # DDP's reducers hold the process group: destroy_process_group only unregisters it while a
        # wrapper lives, and the group (gloo's threads) then goes at the interpreter's teardown, in an
        # order of its choosing; a finished rank once died there by SIGABRT ("terminate called without an
        # active exception") after logging "done". Dropped first, the wrappers take the group down here.
        self.G = self.D = None
        gc.collect()
        if tdist.is_initialized():
            tdist.destroy_process_group()
        gc.collect()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes()


def replica_digest(state) -> bytes:  # noqa: ANN001 - TrainState
    """sha256 over every weight, buffer, Adam moment and counter that a step changes."""
    h = hashlib.sha256()
    for net in (state.G, state.D, state.G_ema):
        for name, t in net.state_dict().items():
            h.update(name.encode())
            h.update(_tensor_bytes(t))
    for opt in (state.opt_G, state.opt_D):
        for s in opt.state.values():
            for k in sorted(s):
                if torch.is_tensor(s[k]):
                    h.update(_tensor_bytes(s[k]))
    h.update(_tensor_bytes(state.aug_p))
    h.update(f"{state.step} {state.cur_nimg}".encode())
    return h.digest()


def backend_for(device_type: str) -> str:
    return "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"


def init_process_group_from_env(device_type: str, timeout_s: float, seed: int = 0) -> Dist:
    """Join the group named by torchrun's environment (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE,
    LOCAL_RANK); ``timeout_s`` bounds the rendezvous and every collective after it."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local_rank} needs CUDA device {local_rank}; "
                f"this host has {torch.cuda.device_count()}"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    tdist.init_process_group(
        backend=backend_for(device_type),
        timeout=datetime.timedelta(seconds=timeout_s),
        rank=rank,
        world_size=world,
        device_id=device if device_type == "cuda" else None,
    )
    return Dist(rank=rank, world_size=world, local_rank=local_rank, device=device, seed=seed)
