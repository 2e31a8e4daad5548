"""The training loop as a plain function, and checkpoints as dicts of state_dicts.

    new_state(config, class_names, seed)  -> TrainState (G, D, G_ema, Adam x2, generators, counters)
    train(state, dataset, steps=|seconds=, progress_fn, abort_fn) -> the same state, advanced
    state_to_checkpoint(state) -> dict   <->   state_from_checkpoint(ckpt) -> TrainState
    checkpoint_to_bytes / checkpoint_from_bytes  (torch.load(weights_only=True): no code in files)
    finetune_state(ckpt, class_names)     -> new categories get fresh embedding rows, old rows kept

One step: sample a real batch (x-flip), one G forward; D on augment(real) and augment(fake.detach())
(+ lazy R1 on the real logits every r1_interval steps); G through D on augment(fake); EMA of G.

Every random draw goes through two torch.Generators kept in the state (``train_gen`` for
noise/flips/augmentation, ``data_gen`` for batch indices, both on the device so that the step never
waits for the host), so a run split into segments at any step boundary produces bit-identical weights
on CPU.

Precision: ``precision="bf16"`` runs the G and D passes under bf16 autocast (weights, Adam, EMA, losses
and the R1 gradient norm stay fp32); ``channels_last`` stores conv weights and activations NHWC. bf16
is the default on CUDA and on CPUs with AMX or AVX512-BF16 (default_train_precision), and can be asked
for on any CPU, which is how the tests prove the GPU path;
channels_last is the default on both (GAN_NOTES.md round 6: +27 % steps/s for tiny on an AVX2 CPU).

Across ranks: ``train(..., dist=Dist)`` runs the same step on one rank of a torch.distributed group
(``distributed.py``: each rank keeps its rows of the global batch, DDP averages the gradients, buffers
and losses are averaged after the step); ``dist=None`` is the single-process step, unchanged.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .augment import diff_augment, parse_policy
from .config import ARCH_FIELDS, GanConfig, aux_weight_at, preset_config
from .data import images_as_float
from .losses import d_loss, g_loss, mode_seeking, r1_penalty, rp_d_loss, rp_g_loss
from .networks import build_networks

HISTORY_EVERY = 10  # record (step, loss_d, loss_g) every N steps for the loss curve
PRECISIONS = ("fp32", "bf16")


def cpu_has_bf16_units() -> bool:
    """AMX tiles or AVX512-BF16: oneDNN then runs bf16 convolutions in hardware (private torch API,
    hence the guard)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except Exception:  # a torch without the probes: fp32, the safe choice
        return False


def default_precision(device: str | torch.device) -> str:
    # Sampling: bf16 on CUDA; fp32 on every CPU, so that a generation job's images are the same pixels
    # whichever CPU worker (re)runs it, and the judge's scores of one checkpoint do not depend on the host.
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def default_train_precision(device: str | torch.device) -> str:
    # Training: bf16 on CUDA, and on a CPU with AMX or AVX512-BF16 (`small`, one thread: 4.46 steps/s
    # against 2.79 in fp32 on a Xeon with AMX, GAN_NOTES.md round 14; 5.6 against 3.9 on an AMD EPYC
    # with AVX512-BF16, round 17); fp32 on other CPUs, which have no bf16 units (bf16 there is not
    # measured). Weights, Adam, EMA and the losses stay fp32 either way.
    if torch.device(device).type == "cpu" and cpu_has_bf16_units():
        return "bf16"
    return default_precision(device)


def default_channels_last(device: str | torch.device) -> bool:
    # NHWC: tensor cores on CUDA; oneDNN's convolutions on the CPU (tiny, one thread, two runs side by
    # side: 3.0-3.2 steps per CPU-second against 2.4-2.5 NCHW; generation ~1.5x the images/s).
    return torch.device(device).type in ("cuda", "cpu")


def autocast(device: torch.device, precision: str):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    precision: str = "fp32"
    channels_last: bool = False
    # Device-side values, read by the host only at reports and checkpoints (no sync in the step):
    aug_p: torch.Tensor | None = None  # the current augmentation probability (0-d)
    ada_acc: torch.Tensor | None = None  # [sum of sign(D(real)), count] since the last ADA update
    pending: list = field(default_factory=list)  # (step, loss_d, loss_g) not yet copied to history


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


def new_state(
    config: GanConfig,
    class_names: list[str],
    seed: int = 0,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    channels_last: bool | None = None,
):
    device = torch.device(device)
    precision = precision or default_train_precision(device)
    autocast(device, precision)  # validates the name
    channels_last = default_channels_last(device) if channels_last is None else channels_last
    if config.num_classes != len(class_names):
        config = GanConfig.from_dict({**config.to_dict(), "num_classes": max(1, len(class_names))})
    torch.manual_seed(seed)  # network initialisation
    G, D = build_networks(config)
    G, D = G.to(device), D.to(device)
    if channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    opt_G, opt_D = _make_optimizers(config, G, D)
    train_gen = torch.Generator(device=device).manual_seed(seed + 1)
    data_gen = torch.Generator(device=device).manual_seed(seed + 2)
    p0 = config.augment_p if config.augment else 0.0
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
        augment={"policy": config.augment, "p": p0},
        precision=precision,
        channels_last=channels_last,
        aug_p=torch.tensor(p0, device=device),
        ada_acc=torch.zeros(2, device=device),
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


def class_balanced_weights(labels: torch.Tensor, num_classes: int, balance: float) -> torch.Tensor | None:
    """Per-image sampling weights count(label) ** -balance (None for plain uniform sampling)."""
    if balance <= 0:
        return None
    counts = torch.zeros(num_classes, device=labels.device).index_add_(
        0, labels, torch.ones(labels.shape[0], device=labels.device)
    )
    return counts.clamp(min=1).pow(-balance)[labels]


def _ada_update(state: TrainState, real_logits: torch.Tensor, dist=None) -> None:
    """StyleGAN2-ADA: raise p when D is too sure of the reals (r_t = E[sign D(real)] > target)."""
    cfg = state.config
    signs = real_logits.detach().float().sign().sum()
    state.ada_acc += torch.stack([signs, torch.full_like(signs, len(real_logits))])  # no host -> device copy
    if state.step % cfg.ada_interval == cfg.ada_interval - 1:
        if dist is not None:
            dist.all_reduce_sum_(state.ada_acc)  # r_t over the global batch: the same p on every rank
        r_t = state.ada_acc[0] / state.ada_acc[1].clamp(min=1)
        adjust = (
            torch.sign(r_t - cfg.ada_target) * (cfg.batch_size * cfg.ada_interval) / (cfg.ada_kimg * 1000)
        )
        state.aug_p = (state.aug_p + adjust).clamp(0.0, 1.0)
        state.ada_acc.zero_()


def train_step(
    state: TrainState,
    images: torch.Tensor,
    labels: torch.Tensor,
    sample_weights: torch.Tensor | None = None,
    dist=None,
) -> dict:
    """One D and one G step. ``images``/``labels``/``sample_weights`` live on the state's device; nothing
    here reads a device value on the host, so on CUDA the step only queues kernels.

    ``dist`` (a ``distributed.Dist``): this rank computes its rows of the global batch of
    ``cfg.batch_size``, G and D run through their DDP wrappers, and the losses returned are global."""
    cfg, G, D, gen, dev = state.config, state.G, state.D, state.train_gen, state.device
    policy = parse_policy(cfg.augment)
    n = cfg.batch_size
    # The global batch's draws on every rank (the generators stay in lockstep), this rank's rows kept.
    rows = slice(None) if dist is None else dist.rows(n)
    G_fwd, D_fwd = (G, D) if dist is None else (dist.G, dist.D)
    aug_gen = gen if dist is None else dist.aug_generator(state.step)
    if sample_weights is None:
        idx = torch.randint(images.shape[0], (n,), generator=state.data_gen, device=state.data_gen.device)
    else:
        idx = torch.multinomial(sample_weights, n, replacement=True, generator=state.data_gen)
    idx_all = idx.to(dev)
    idx = idx_all[rows]
    real = images_as_float(images[idx])
    y = labels[idx]
    if cfg.xflip:
        flip = (torch.rand(n, generator=gen, device=dev) < 0.5)[rows]
        real = torch.where(flip[:, None, None, None], real.flip(3), real)
    if state.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    z_all = torch.randn(n, cfg.z_dim, generator=gen, device=dev)
    z = z_all[rows]
    n_local = z.shape[0]
    adaptive = bool(policy) and cfg.ada_target > 0
    fixed_all = bool(policy) and not adaptive and cfg.augment_p >= 1.0

    def aug(t):
        if not policy:
            return t
        out = diff_augment(t, policy, aug_gen)
        if not fixed_all:  # each image augmented with probability p (ADA), the rest left alone
            keep = torch.rand(n_local, 1, 1, 1, generator=aug_gen, device=dev) < state.aug_p
            out = torch.where(keep, out, t)
        if state.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    aux_weight = aux_weight_at(cfg, state.cur_nimg)
    cast = autocast(dev, state.precision)
    G.train()
    D.train()
    with cast:
        fake = G_fwd(z, y, update_w_avg=dist is None)
    if dist is not None:
        # G's running w_avg from the global batch (every rank holds its z and labels), as one rank tracks it:
        # a per-class mean of per-rank means would weigh a class's few rows on one rank like many.
        with torch.no_grad(), cast:
            G.mapping(z_all, labels[idx_all], update_w_avg=True)

    # D step: L_D = softplus(-D(real)) + softplus(D(fake)) (or the paired form, losses.py), plus lazy R1
    # on the same real logits (and R2 on the fake ones with the paired loss).
    D.requires_grad_(True)
    do_r1 = cfg.r1_gamma > 0 and state.step % cfg.r1_interval == 0
    relativistic = cfg.loss == "rpgan"
    real_in = aug(real).detach().requires_grad_(do_r1)
    fake_in = aug(fake.detach()).detach().requires_grad_(do_r1 and relativistic)
    with cast:
        real_logits, real_cls = D_fwd(real_in, y, with_aux=True, aux_probe=cfg.aux_probe)
        fake_logits = D_fwd(fake_in, y)
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    loss_d = rp_d_loss(real_logits, fake_logits) if relativistic else d_loss(real_logits, fake_logits)
    total_d = loss_d
    if real_cls is not None:
        # At weight 0 too (a head faded out): under DDP every parameter of D must receive a gradient.
        total_d = total_d + aux_weight * F.cross_entropy(real_cls.float(), y)
    if do_r1:
        # The gradient norm in fp32 (the backward through the convs runs at the pass's precision).
        reg = r1_penalty(real_in, real_logits)
        if relativistic:
            reg = reg + r1_penalty(fake_in, fake_logits)  # R2: RpGAN needs both to converge (R3GAN)
        total_d = total_d + reg * (cfg.r1_gamma / 2 * cfg.r1_interval)
    state.opt_D.zero_grad(set_to_none=True)
    total_d.backward()
    state.opt_D.step()
    if adaptive:
        _ada_update(state, real_logits, dist)

    # G step (non-saturating), through the freshly updated D; D's weights are frozen for speed (and, under
    # DDP, so that no gradient hook of D fires: this pass calls the plain D, not its wrapper).
    D.requires_grad_(False)
    with cast:
        g_logits, g_cls = D(aug(fake), y, with_aux=True)
    # Paired: each fake against its real partner's logit from the D pass above (one D step old, and no
    # gradient into D), rather than a second D pass over the reals in every step.
    g_logits = g_logits.float()
    loss_g = rp_g_loss(real_logits.detach(), g_logits) if relativistic else g_loss(g_logits)
    total_g = loss_g
    if g_cls is not None and aux_weight * cfg.aux_g_scale > 0:
        total_g = total_g + aux_weight * cfg.aux_g_scale * F.cross_entropy(g_cls.float(), y)
    if cfg.mode_seeking > 0:
        # Over this rank's rows: pairs within a rank's share of the batch (the term is a mean, so the
        # gradient average across ranks keeps its scale).
        total_g = total_g + cfg.mode_seeking * mode_seeking(fake, z, y)
    state.opt_G.zero_grad(set_to_none=True)
    total_g.backward()
    state.opt_G.step()
    if dist is not None:
        loss_d, loss_g = dist.sync_step(state, loss_d, loss_g)  # before the EMA, which copies the buffers

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
    dist=None,
) -> TrainState:
    """Train ``steps`` more steps and/or for ``seconds``, whichever ends first; returns ``state``.

    ``abort_fn()`` is checked before every step; ``progress_fn`` gets a dict every ``progress_every``
    steps and once at the end. The uint8 dataset is moved to the device once. ``dist``: this process is
    one rank of a distributed run (``rank.py`` passes it; every rank must stop at the same step).
    """
    if steps is None and seconds is None:
        raise ValueError("train() needs steps or seconds")
    if device is not None and torch.device(device) != state.device:
        raise ValueError(f"state lives on {state.device}; load it with device={device!r}")
    dev = state.device
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick its fastest kernels
    images, labels = dataset["images"].to(dev), dataset["labels"].to(dev)
    if labels.numel() == 0:
        raise ValueError("dataset is empty")
    if int(labels.max()) >= state.config.num_classes:
        raise ValueError(f"label {int(labels.max())} out of range for {state.config.num_classes} classes")
    weights = class_balanced_weights(labels, state.config.num_classes, state.config.class_balance)
    start_step, t0, cpu0 = state.step, time.perf_counter(), time.process_time()
    end_step = None if steps is None else start_step + steps
    last = {}

    def report(final: bool = False):
        flush_history(state)  # the only place the host reads the losses
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
                "augment_p": float(state.aug_p) if state.aug_p is not None else 0.0,
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
        last = train_step(state, images, labels, weights, dist)
        if state.step % HISTORY_EVERY == 0:
            state.pending.append((state.step, last["loss_d"], last["loss_g"]))
        if state.step % progress_every == 0:
            report()
    report(final=True)
    return state


def flush_history(state: TrainState) -> None:
    """Copy the losses recorded on the device into ``state.history`` (one host sync for all of them)."""
    if state.pending:
        values = torch.stack([torch.stack([ld, lg]) for _, ld, lg in state.pending]).float().cpu().tolist()
        state.history.extend(
            [float(s), a, b] for (s, _, _), (a, b) in zip(state.pending, values, strict=True)
        )
        state.pending = []


# ---------------------------------------------------------------- checkpoints


def state_to_checkpoint(state: TrainState) -> dict:
    flush_history(state)
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
        "augment": {**state.augment, "p": float(state.aug_p) if state.aug_p is not None else 0.0},
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


def state_from_checkpoint(
    ckpt: dict,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    channels_last: bool | None = None,
) -> TrainState:
    cfg = GanConfig.from_dict(ckpt["config"])
    state = new_state(
        cfg, ckpt["class_names"], seed=0, device=device, precision=precision, channels_last=channels_last
    )
    state.G.load_state_dict(ckpt["G"])
    state.D.load_state_dict(ckpt["D"])
    state.G_ema.load_state_dict(ckpt["G_ema"])
    state.opt_G.load_state_dict(ckpt["opt_G"])
    state.opt_D.load_state_dict(ckpt["opt_D"])
    state.augment = dict(ckpt.get("augment", state.augment))
    state.aug_p = torch.tensor(float(state.augment.get("p", 0.0)), device=state.device)
    state.step, state.cur_nimg = int(ckpt["step"]), int(ckpt["cur_nimg"])
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch_cpu"])
    if rng.get("torch_cuda") is not None and state.device.type == "cuda":
        torch.cuda.set_rng_state(rng["torch_cuda"], state.device)
    for k, (gen, key) in enumerate(((state.train_gen, "train_gen"), (state.data_gen, "data_gen"))):
        try:
            gen.set_state(rng[key])
        except RuntimeError:
            # A CUDA generator's state does not fit a CPU one (moved between device types): reseed from
            # the step, which keeps the run deterministic from here on.
            gen.manual_seed(1_000_003 * state.step + 1 + k)
    state.history = [list(map(float, row)) for row in ckpt["history"].tolist()]
    return state


_CLASS_ROWS = ("mapping_net.embed.weight", "mapping_net.w_avg", "embed.weight", "aux.weight", "aux.bias")


def finetune_config(parent: dict, num_classes: int, overrides: dict | None = None) -> GanConfig:
    """The current preset's training settings (with ``overrides``) around the parent's weight shapes
    (``ARCH_FIELDS``, which an override may not change)."""
    fixed = sorted(set(overrides or {}) & set(ARCH_FIELDS))
    if fixed:
        raise ValueError(f"a fine-tune keeps its parent's weight shapes; cannot override {', '.join(fixed)}")
    arch = {k: parent[k] for k in ARCH_FIELDS if k in parent}
    # Checkpoints from before a field existed load with the field's "off" default (GanConfig's).
    for k in ("embed_dim", "generator"):
        arch.setdefault(k, getattr(GanConfig(), k))
    try:
        cfg = preset_config(arch["preset"], arch["resolution"], arch["arch"])
    except (KeyError, ValueError):  # an unknown old preset: keep the parent's config whole
        cfg = GanConfig.from_dict(parent)
    return GanConfig.from_dict({**cfg.to_dict(), **(overrides or {}), **arch, "num_classes": num_classes})


def _load_matching_moments(opt: torch.optim.Optimizer, saved: dict, params: list[nn.Parameter]) -> int:
    """Keep the parent's Adam moments for every parameter whose shape did not change; returns how many."""
    old_state = saved.get("state", {})
    old_ids = [i for g in saved.get("param_groups", []) for i in g["params"]]
    kept = 0
    for p, old_i in zip(params, old_ids, strict=False):
        s = old_state.get(old_i)
        if s and s.get("exp_avg") is not None and s["exp_avg"].shape == p.shape:
            # Moments to the parameter's device; Adam's 0-d step counter stays where Adam keeps it.
            opt.state[p] = {k: v.to(p.device) if torch.is_tensor(v) and v.dim() else v for k, v in s.items()}
            kept += 1
    return kept


def finetune_state(
    ckpt: dict,
    class_names: list[str],
    seed: int = 0,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    channels_last: bool | None = None,
    overrides: dict | None = None,
):
    """A TrainState that continues ``ckpt`` (the production model) on a catalogue with ``class_names``.

    Per-class rows (G's class embedding and w_avg, D's projection embedding and classifier) are matched
    by category name: known categories keep their learned rows, new ones keep a fresh initialisation
    (w_avg: the mean of the old rows). What a fine-tune keeps, so that it improves on its parent
    instead of restarting: G_ema and ``cur_nimg`` (the EMA ramp does not restart and wipe it), Adam's
    moments wherever the shapes match, and only the parent's weight shapes (training settings come
    from the current preset). The step counter starts at 0: it counts this job's steps.
    """
    old_names = list(ckpt["class_names"])
    cfg = finetune_config(ckpt["config"], max(1, len(class_names)), overrides)
    state = new_state(
        cfg, class_names, seed=seed, device=device, precision=precision, channels_last=channels_last
    )
    mapping = [(new_i, old_names.index(n)) for new_i, n in enumerate(class_names) if n in old_names]
    for net, key in ((state.G, "G"), (state.D, "D"), (state.G_ema, "G_ema")):
        target = net.state_dict()
        merged = {}
        for name, value in ckpt[key].items():
            if name not in target:
                continue  # a head the current preset dropped
            if name.endswith(_CLASS_ROWS) and target[name].shape[1:] == value.shape[1:]:
                row = target[name].clone()
                if name.endswith("w_avg"):
                    row[:] = value.mean(dim=0)
                for new_i, old_i in mapping:
                    row[new_i] = value[old_i]
                merged[name] = row
            elif target[name].shape == value.shape:
                merged[name] = value
        # Missing keys (a head the parent lacked) keep their fresh initialisation.
        net.load_state_dict(merged, strict=False)
    state.cur_nimg = int(ckpt.get("cur_nimg", 0))
    _load_matching_moments(state.opt_G, ckpt.get("opt_G", {}), list(state.G.parameters()))
    _load_matching_moments(state.opt_D, ckpt.get("opt_D", {}), list(state.D.parameters()))
    p = (
        float(ckpt.get("augment", {}).get("p", state.augment["p"]))
        if cfg.ada_target > 0
        else state.augment["p"]
    )
    state.aug_p = torch.tensor(p, device=state.device)
    state.history = []
    return state
