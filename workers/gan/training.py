"""The training loop as a plain function, and checkpoints as dicts of state_dicts.

    new_state(config, class_names, seed)  -> TrainState (G, D, G_ema, Adam x2, generators, counters)
    train(state, dataset, steps=|seconds=, progress_fn, abort_fn) -> the same state, advanced
    state_to_checkpoint(state) -> dict   <->   state_from_checkpoint(ckpt) -> TrainState
    checkpoint_to_bytes / checkpoint_from_bytes  (torch.load(weights_only=True): no code in files)
    finetune_state(ckpt, class_names)     -> new categories get fresh embedding rows, old rows kept

One step: sample a real batch (x-flip), one G forward; D on augment(real) and augment(fake.detach())
(+ lazy R1 on the real logits every r1_interval steps); G through D on augment(fake); EMA of G.

Every random draw goes through two torch.Generators kept in the state (``train_gen`` on the device
for noise/flips/augmentation, ``data_gen`` on the CPU for batch indices), so a run split into segments
at any step boundary produces bit-identical weights on CPU.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .augment import diff_augment, parse_policy
from .config import GanConfig
from .data import images_as_float
from .losses import d_loss, g_loss, r1_penalty
from .networks import build_networks

HISTORY_EVERY = 10  # record (step, loss_d, loss_g) every N steps for the loss curve


@dataclass
class TrainState:
    config: GanConfig
    class_names: list[str]
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    train_gen: torch.Generator
    data_gen: torch.Generator
    device: torch.device
    step: int = 0
    cur_nimg: int = 0
    history: list[list[float]] = field(default_factory=list)
    augment: dict = field(default_factory=dict)


def _make_optimizers(cfg: GanConfig, G: nn.Module, D: nn.Module):
    betas = tuple(cfg.betas)
    # Adam's default (foreach) implementation is deterministic on CPU; fused kernels are CUDA-only.
    return torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=betas), torch.optim.Adam(
        D.parameters(), lr=cfg.lr_d, betas=betas
    )


def _ema_copy(G: nn.Module) -> nn.Module:
    import copy

    G_ema = copy.deepcopy(G).eval()
    G_ema.requires_grad_(False)
    return G_ema


def new_state(config: GanConfig, class_names: list[str], seed: int = 0, device: str | torch.device = "cpu"):
    device = torch.device(device)
    if config.num_classes != len(class_names):
        config = GanConfig.from_dict({**config.to_dict(), "num_classes": max(1, len(class_names))})
    torch.manual_seed(seed)  # network initialisation
    G, D = build_networks(config)
    G, D = G.to(device), D.to(device)
    opt_G, opt_D = _make_optimizers(config, G, D)
    train_gen = torch.Generator(device=device).manual_seed(seed + 1)
    data_gen = torch.Generator().manual_seed(seed + 2)
    return TrainState(
        config=config,
        class_names=list(class_names),
        G=G,
        D=D,
        G_ema=_ema_copy(G),
        opt_G=opt_G,
        opt_D=opt_D,
        train_gen=train_gen,
        data_gen=data_gen,
        device=device,
        augment={"policy": config.augment, "p": 1.0 if config.augment else 0.0},
    )


@torch.no_grad()
def _update_ema(state: TrainState) -> None:
    cfg = state.config
    ema_params, params = list(state.G_ema.parameters()), list(state.G.parameters())
    if cfg.ema_kimg > 0:
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup:
            # Early on the EMA horizon grows with training so G_ema is not stuck at the random init.
            ema_nimg = min(ema_nimg, state.cur_nimg * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch_size / max(ema_nimg, 1e-8))
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)
    else:
        torch._foreach_copy_(ema_params, params)
    for b_ema, b in zip(state.G_ema.buffers(), state.G.buffers(), strict=False):
        b_ema.copy_(b)  # w_avg, BN statistics: copied, not averaged


def train_step(state: TrainState, images: torch.Tensor, labels: torch.Tensor) -> dict:
    cfg, G, D, gen, dev = state.config, state.G, state.D, state.train_gen, state.device
    policy = parse_policy(cfg.augment)
    n = cfg.batch_size
    idx = torch.randint(images.shape[0], (n,), generator=state.data_gen).to(dev)
    real = images_as_float(images[idx])
    y = labels[idx]
    if cfg.xflip:
        flip = torch.rand(n, generator=gen, device=dev) < 0.5
        real = torch.where(flip[:, None, None, None], real.flip(3), real)
    z = torch.randn(n, cfg.z_dim, generator=gen, device=dev)

    def aug(t):
        return diff_augment(t, policy, gen) if policy else t

    G.train()
    D.train()
    fake = G(z, y, update_w_avg=True)

    # D step: L_D = softplus(-D(real)) + softplus(D(fake)), plus lazy R1 on the same real logits.
    D.requires_grad_(True)
    do_r1 = cfg.r1_gamma > 0 and state.step % cfg.r1_interval == 0
    real_in = aug(real).detach().requires_grad_(do_r1)
    real_logits = D(real_in, y)
    fake_logits = D(aug(fake.detach()), y)
    loss_d = d_loss(real_logits, fake_logits)
    total_d = loss_d
    if do_r1:
        total_d = loss_d + r1_penalty(real_in, real_logits) * (cfg.r1_gamma / 2 * cfg.r1_interval)
    state.opt_D.zero_grad(set_to_none=True)
    total_d.backward()
    state.opt_D.step()

    # G step (non-saturating), through the freshly updated D; D's weights are frozen for speed.
    D.requires_grad_(False)
    loss_g = g_loss(D(aug(fake), y))
    state.opt_G.zero_grad(set_to_none=True)
    loss_g.backward()
    state.opt_G.step()

    state.step += 1
    state.cur_nimg += n
    _update_ema(state)
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}


def train(
    state: TrainState,
    dataset: dict,
    *,
    steps: int | None = None,
    seconds: float | None = None,
    progress_fn: Callable[[dict], None] | None = None,
    abort_fn: Callable[[], bool] | None = None,
    device: str | torch.device | None = None,
    progress_every: int = 20,
) -> TrainState:
    """Train ``steps`` more steps and/or for ``seconds``, whichever ends first; returns ``state``.

    ``abort_fn()`` is checked before every step; ``progress_fn`` gets a dict every ``progress_every``
    steps and once at the end. The uint8 dataset is moved to the device once.
    """
    if steps is None and seconds is None:
        raise ValueError("train() needs steps or seconds")
    if device is not None and torch.device(device) != state.device:
        raise ValueError(f"state lives on {state.device}; load it with device={device!r}")
    dev = state.device
    images, labels = dataset["images"].to(dev), dataset["labels"].to(dev)
    if labels.numel() == 0:
        raise ValueError("dataset is empty")
    if int(labels.max()) >= state.config.num_classes:
        raise ValueError(f"label {int(labels.max())} out of range for {state.config.num_classes} classes")
    start_step, t0, cpu0 = state.step, time.perf_counter(), time.process_time()
    end_step = None if steps is None else start_step + steps
    last = {}

    def report(final: bool = False):
        if progress_fn is None or not last:
            return
        elapsed = max(time.perf_counter() - t0, 1e-9)
        done = state.step - start_step
        progress_fn(
            {
                "step": state.step,
                "total": end_step,
                "done": done,
                "elapsed_s": elapsed,
                "cpu_s": time.process_time() - cpu0,  # under CPU contention, the fairer clock
                "final": final,
                "loss_d": float(last["loss_d"]),
                "loss_g": float(last["loss_g"]),
                "steps_per_s": done / elapsed,
                "images_per_s": done * state.config.batch_size / elapsed,
            }
        )

    while True:
        if end_step is not None and state.step >= end_step:
            break
        if seconds is not None and time.perf_counter() - t0 >= seconds:
            break
        if abort_fn is not None and abort_fn():
            break
        last = train_step(state, images, labels)
        if state.step % HISTORY_EVERY == 0:
            state.history.append([float(state.step), float(last["loss_d"]), float(last["loss_g"])])
        if state.step % progress_every == 0:
            report()
    report(final=True)
    return state


# ---------------------------------------------------------------- checkpoints


def state_to_checkpoint(state: TrainState) -> dict:
    cuda_rng = None
    if state.device.type == "cuda":
        cuda_rng = torch.cuda.get_rng_state(state.device)
    return {
        "format": 1,
        "config": state.config.to_dict(),
        "class_names": list(state.class_names),
        "G": state.G.state_dict(),
        "D": state.D.state_dict(),
        "G_ema": state.G_ema.state_dict(),
        "opt_G": state.opt_G.state_dict(),
        "opt_D": state.opt_D.state_dict(),
        "augment": dict(state.augment),
        "step": state.step,
        "cur_nimg": state.cur_nimg,
        "rng": {
            "torch_cpu": torch.get_rng_state(),
            "torch_cuda": cuda_rng,
            "train_gen": state.train_gen.get_state(),
            "data_gen": state.data_gen.get_state(),
        },
        "history": torch.tensor(state.history, dtype=torch.float64).view(-1, 3),
    }


def checkpoint_to_bytes(ckpt: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


def checkpoint_from_bytes(b: bytes) -> dict:
    return torch.load(io.BytesIO(b), weights_only=True, map_location="cpu")


def state_from_checkpoint(ckpt: dict, device: str | torch.device = "cpu") -> TrainState:
    cfg = GanConfig.from_dict(ckpt["config"])
    state = new_state(cfg, ckpt["class_names"], seed=0, device=device)
    state.G.load_state_dict(ckpt["G"])
    state.D.load_state_dict(ckpt["D"])
    state.G_ema.load_state_dict(ckpt["G_ema"])
    state.opt_G.load_state_dict(ckpt["opt_G"])
    state.opt_D.load_state_dict(ckpt["opt_D"])
    state.augment = dict(ckpt.get("augment", state.augment))
    state.step, state.cur_nimg = int(ckpt["step"]), int(ckpt["cur_nimg"])
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch_cpu"])
    if rng.get("torch_cuda") is not None and state.device.type == "cuda":
        torch.cuda.set_rng_state(rng["torch_cuda"], state.device)
    try:
        state.train_gen.set_state(rng["train_gen"])
    except RuntimeError:
        # A CUDA generator's state does not fit a CPU one (moved between device types): reseed from
        # the step, which keeps the run deterministic from here on.
        state.train_gen.manual_seed(1_000_003 * state.step + 1)
    state.data_gen.set_state(rng["data_gen"])
    state.history = [list(map(float, row)) for row in ckpt["history"].tolist()]
    return state


_CLASS_ROWS = ("mapping_net.embed.weight", "mapping_net.w_avg", "embed.weight")


def finetune_state(ckpt: dict, class_names: list[str], seed: int = 0, device: str | torch.device = "cpu"):
    """A fresh TrainState initialised from ``ckpt`` for a catalogue with ``class_names``.

    Per-class rows (G's class embedding and w_avg, D's projection embedding) are matched by category
    name: known categories keep their learned rows, new ones keep a fresh initialisation (w_avg: the
    mean of the old rows). Optimiser moments start over, because their shapes changed.
    """
    old_names = list(ckpt["class_names"])
    cfg = GanConfig.from_dict({**ckpt["config"], "num_classes": max(1, len(class_names))})
    state = new_state(cfg, class_names, seed=seed, device=device)
    mapping = [(new_i, old_names.index(n)) for new_i, n in enumerate(class_names) if n in old_names]
    for net, key in ((state.G, "G"), (state.D, "D"), (state.G_ema, "G_ema")):
        target = net.state_dict()
        source = ckpt[key]
        merged = {}
        for name, value in source.items():
            if name.endswith(_CLASS_ROWS) and name in target:
                row = target[name].clone()
                if name.endswith("w_avg"):
                    row[:] = value.mean(dim=0)
                for new_i, old_i in mapping:
                    row[new_i] = value[old_i]
                merged[name] = row
            else:
                merged[name] = value
        net.load_state_dict(merged)
    state.history = []
    return state
