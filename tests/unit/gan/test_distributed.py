"""Training across ranks on the CPU (gloo): real rank processes started by the launcher, tiny networks.

How close 2 ranks at per-rank batch B/2 follow 1 rank at batch B (measured over 8 steps, 16 px, B = 8,
GAN_NOTES.md; the tests run 4 steps to stay quick, in which the runs have less time to drift apart):
  * with no layer that couples the samples of a batch (minibatch-stddev off, no BatchNorm) and no
    augmentation, the two runs draw the same rows, flips and noise and differ only in float summation
    order (a mean of two half-batch gradients against one mean, convolutions on 4 rows against 8): the
    losses agree to 6 decimals and the weights to a relative L2 distance of about 1e-8 (asserted: 1e-5);
  * with the tiny preset's per-category minibatch-stddev (it sees one rank's rows, not the global batch),
    the classifier head and class balancing, the losses differ by up to about 0.01 and the weights by a
    relative L2 distance below 1e-3 (asserted: losses 0.05, weights 5e-3). With augmentation on, each
    rank also draws its augmentations from its own stream (and the single-process step draws augmentation
    and noise from one generator), so the runs then agree in distribution, not sample by sample.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import weakref

import pytest
import torch
from PIL import Image

from atelier.gan import launch
from atelier.gan.distributed import Dist, init_process_group_from_env, replica_digest
from atelier.gan.launch import DistributedTrainingError, free_port, run_distributed_segment
from atelier.gan.sampling import encode_png, generate, load_generator
from atelier.gan.training import (
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    new_state,
    state_from_checkpoint,
    state_to_checkpoint,
    train,
)

from .conftest import CATEGORIES, make_catalogue, tiny_config

PG_TIMEOUT_S = 20.0  # the group's timeout in these tests: a survivor of a dead peer fails within it


def _copy(state):
    blob = checkpoint_to_bytes(state_to_checkpoint(state))
    return state_from_checkpoint(checkpoint_from_bytes(blob), precision=state.precision)


def _relative_l2(a, b) -> float:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    num = sum(float((pa[k].detach() - pb[k].detach()).double().norm() ** 2) for k in pa)
    den = sum(float(pa[k].detach().double().norm() ** 2) for k in pa)
    return (num / den) ** 0.5


def _one_and_two_ranks(cfg, dataset, steps, tmp_path, **kw):
    start = new_state(cfg, CATEGORIES, seed=1, **kw)
    one, two = _copy(start), _copy(start)
    r1, r2 = [], []
    train(one, dataset, steps=steps, progress_fn=r1.append, progress_every=1)
    run_distributed_segment(
        two,
        dataset,
        nproc=2,
        steps=steps,
        progress_fn=r2.append,
        progress_every=1,
        workdir=tmp_path,
        pg_timeout_s=PG_TIMEOUT_S,
        replica_check_every=1,
    )
    assert two.step == one.step == steps
    steps_seen = [r["step"] for r in r2 if not r["final"]]
    assert steps_seen == list(range(1, steps + 1))  # rank 0's reports reach progress_fn, one per step
    losses = [
        (abs(a["loss_d"] - b["loss_d"]), abs(a["loss_g"] - b["loss_g"])) for a, b in zip(r1, r2, strict=True)
    ]
    result = json.loads((tmp_path / "result.json").read_text())
    return one, two, max(max(pair) for pair in losses), result


def test_two_ranks_follow_one_rank_to_float_precision_without_batch_coupling(tiny_dataset, tmp_path):
    # No minibatch-stddev groups, no BatchNorm, no augmentation: what is left is summation order. R1 at a
    # large weight on every other step, so a wrongly reduced R1 gradient would show.
    # fp32 on any CPU: bf16 (training's default on a CPU with AMX) rounds each rank's half batch apart.
    cfg = tiny_config(mbstd_group=1, mbstd_by_class=False, r1_gamma=1.0, r1_interval=2, augment="")
    one, two, loss_diff, result = _one_and_two_ranks(cfg, tiny_dataset, 4, tmp_path, precision="fp32")
    assert loss_diff < 1e-5
    for name in ("G", "D", "G_ema"):
        assert _relative_l2(getattr(one, name), getattr(two, name)) < 1e-5, name
    # w_avg is tracked from the global batch on every rank, as one rank tracks it
    assert torch.allclose(one.G.mapping_net.w_avg, two.G.mapping_net.w_avg, rtol=1e-4, atol=1e-6)
    assert result["world_size"] == 2 and result["replica_checks"] == 4


def test_two_ranks_follow_one_rank_closely_with_the_tiny_presets_batch_statistics(tiny_dataset, tmp_path):
    cfg = tiny_config()  # per-category minibatch-stddev, the classifier head, class balancing, R1
    assert cfg.mbstd_by_class and cfg.aux_weight > 0 and cfg.class_balance > 0
    one, two, loss_diff, _ = _one_and_two_ranks(cfg, tiny_dataset, 4, tmp_path)
    assert loss_diff < 0.05
    distances = {name: _relative_l2(getattr(one, name), getattr(two, name)) for name in ("G", "D", "G_ema")}
    assert all(d < 5e-3 for d in distances.values()), distances
    assert any(d > 0 for d in distances.values())  # the runs really differ where the docstring says


def test_abort_fn_stops_every_rank_at_the_same_step_and_the_segment_ends_normally(tiny_dataset, tmp_path):
    # As train() with abort_fn: the launcher polls it, rank 0 puts the stop to a vote, all ranks leave
    # the loop at the same step boundary and rank 0 writes the checkpoint of that step. The DCGAN
    # baseline, with BatchNorm in G and D: its running statistics averaged across ranks leave every
    # rank with the same weights after every step (compared after each one).
    state = new_state(tiny_config("dcgan"), CATEGORIES, seed=3)
    reports: list[dict] = []
    run_distributed_segment(
        state,
        tiny_dataset,
        nproc=2,
        steps=100_000,
        progress_fn=reports.append,
        progress_every=1,
        abort_fn=lambda: len(reports) >= 2,
        checkpoint_path=tmp_path / "checkpoint.pt",
        workdir=tmp_path / "ranks",
        pg_timeout_s=PG_TIMEOUT_S,
        timeout_s=240,
        replica_check_every=1,
    )
    assert 2 <= state.step < 100_000 and state.step % launch.VOTE_EVERY == 0
    assert reports[-1]["final"] and reports[-1]["step"] == state.step
    assert checkpoint_from_bytes((tmp_path / "checkpoint.pt").read_bytes())["step"] == state.step
    result = json.loads((tmp_path / "ranks" / "result.json").read_text())
    # a digest of G, D, G_ema, both Adam states and the counters, compared after every step (the stop
    # vote's step included) and once more at the end
    assert result["step"] == state.step and result["replica_checks"] == state.step + 1
    for net in (state.G, state.D, state.G_ema):
        assert all(torch.isfinite(p).all() for p in net.parameters())


def test_the_replica_digest_sees_one_changed_adam_moment(tiny_dataset):
    a = new_state(tiny_config(), CATEGORIES, seed=0)
    train(a, tiny_dataset, steps=1)
    b = _copy(a)
    assert replica_digest(a) == replica_digest(b)
    moment = next(iter(b.opt_D.state.values()))["exp_avg"]
    moment.view(-1)[0] += 1e-7
    assert replica_digest(a) != replica_digest(b)


def test_rank_shares_are_disjoint_and_make_the_global_batch():
    ranks = [Dist(rank=r, world_size=4, local_rank=r, device=torch.device("cpu")) for r in range(4)]
    rows = [i for d in ranks for i in range(32)[d.rows(32)]]
    assert rows == list(range(32))
    with pytest.raises(ValueError, match="batch_size 30 is not divisible by the 4 ranks"):
        ranks[0].rows(30)
    # each rank's augmentation stream is its own, and the same again for the same step (a resume)
    draws = [torch.rand(4, generator=d.aug_generator(7)) for d in ranks[:2]]
    assert not torch.equal(draws[0], draws[1])
    assert torch.equal(draws[0], torch.rand(4, generator=ranks[0].aug_generator(7)))


def test_closing_a_rank_takes_its_ddp_wrappers_down_before_the_group(tiny_dataset, monkeypatch):
    """A wrapper left alive keeps the process group (gloo's threads) until the interpreter's teardown."""
    import torch.distributed as tdist

    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    dist = init_process_group_from_env("cpu", PG_TIMEOUT_S)
    try:
        state = new_state(tiny_config(), CATEGORIES, seed=0)
        dist.wrap(state)
        train(state, tiny_dataset, steps=1, dist=dist)
        wrappers = [weakref.ref(dist.G), weakref.ref(dist.D)]
    finally:
        dist.close()
    assert not tdist.is_initialized()
    assert [w() for w in wrappers] == [None, None]
    assert state.step == 1


def test_launcher_refuses_what_cannot_run(tiny_dataset):
    state = new_state(tiny_config(batch_size=8), CATEGORIES)
    with pytest.raises(ValueError, match="batch_size 8 is not divisible by 3 ranks"):
        run_distributed_segment(state, tiny_dataset, nproc=3, steps=1)
    with pytest.raises(ValueError, match="master_port is required when nnodes > 1"):
        run_distributed_segment(state, tiny_dataset, nproc=1, nnodes=2, steps=1)
    with pytest.raises(ValueError, match="needs steps or seconds"):
        run_distributed_segment(state, tiny_dataset, nproc=2)


def test_one_rank_is_the_single_process_loop_bit_for_bit(tiny_dataset, tmp_path):
    start = new_state(tiny_config(), CATEGORIES, seed=4)
    a, b = _copy(start), _copy(start)
    train(a, tiny_dataset, steps=2)
    run_distributed_segment(b, tiny_dataset, nproc=1, steps=2, checkpoint_path=tmp_path / "c.pt")
    for name in ("G", "D", "G_ema"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    assert checkpoint_from_bytes((tmp_path / "c.pt").read_bytes())["step"] == 2


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _checkpoint_step(path) -> int:
    try:
        return checkpoint_from_bytes(path.read_bytes())["step"]
    except (OSError, RuntimeError, EOFError, KeyError):
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes; the launcher reaps its own children
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_a_killed_rank_fails_the_segment_quickly_and_a_rerun_resumes_from_the_last_checkpoint(
    tiny_dataset, tmp_path
):
    ckpt = tmp_path / "checkpoint.pt"
    work = tmp_path / "ranks"
    # Every optional piece on, in the GPU numerics: ADA (its counter reduced across ranks), per-rank
    # DiffAugment, the classifier head, balancing, R1, EMA; bf16 autocast and channels_last.
    extra = dict(augment="color,translation,cutout", augment_p=0.5, ada_target=0.6, ada_interval=2)
    state = new_state(tiny_config(**extra), CATEGORIES, seed=5, precision="bf16", channels_last=True)
    outcome: dict = {}

    def segment():
        try:
            run_distributed_segment(
                state,
                tiny_dataset,
                nproc=2,
                steps=100_000,
                checkpoint_path=ckpt,
                checkpoint_every=2,
                workdir=work,
                pg_timeout_s=PG_TIMEOUT_S,
                timeout_s=240,
            )
        except Exception as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    runner = threading.Thread(target=segment, daemon=True)
    runner.start()
    _wait_for(lambda: _checkpoint_step(ckpt) >= 2, 120, "rank 0's checkpoint at step 2")
    pids = {r: int((work / f"rank-{r}.pid").read_text()) for r in (0, 1)}
    os.kill(pids[1], signal.SIGKILL)
    killed_at = time.monotonic()
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert isinstance(outcome.get("error"), DistributedTrainingError)
    assert "rank 1 was killed by SIGKILL" in str(outcome["error"])
    assert outcome["ended"] - killed_at < 30  # the launcher noticed and stopped rank 0 (10 s grace at most)
    assert not any(_alive(pid) for pid in pids.values())

    saved = _checkpoint_step(ckpt)
    assert saved >= 2 and saved % 2 == 0
    resumed = state_from_checkpoint(
        checkpoint_from_bytes(ckpt.read_bytes()), precision="bf16", channels_last=True
    )
    assert resumed.step == saved
    run_distributed_segment(
        resumed,
        tiny_dataset,
        nproc=2,
        steps=2,
        checkpoint_path=ckpt,
        workdir=work,
        pg_timeout_s=PG_TIMEOUT_S,
        replica_check_every=1,
    )
    assert resumed.step == saved + 2 and resumed.precision == "bf16"
    assert checkpoint_from_bytes(ckpt.read_bytes())["step"] == saved + 2
    result = json.loads((work / "result.json").read_text())
    assert result["start_step"] == saved and result["replica_checks"] == 2  # identical after each step
    for net in (resumed.G, resumed.D, resumed.G_ema):
        assert all(torch.isfinite(p).all() for p in net.parameters())


def test_two_hosts_on_loopback_and_a_survivor_fails_by_the_groups_timeout_when_its_peer_freezes(
    tiny_dataset, tmp_path, monkeypatch
):
    """node 0 (run_distributed_segment) and node 1 (the documented `python -m atelier.gan.launch`), one
    rank each: node 1 gets its settings, weights and data from rank 0 over the group. Once they train,
    node 1's rank is frozen (SIGSTOP keeps its sockets open, so rank 0 learns nothing from the network).
    Node 0's launcher sees only its own rank, which must fail on its own when its collective passes the
    group's timeout, instead of hanging; node 1's launcher reports its rank once that is killed."""
    from atelier.gan import rank_group

    monkeypatch.setattr(rank_group, "STOP_GRACE_S", 2.0)  # for the launcher of node 0, in this process
    timeout = 10.0  # the group's timeout; it also bounds the rendezvous of two freshly started ranks
    port = free_port()
    ckpt, work0, work1 = tmp_path / "checkpoint.pt", tmp_path / "node0", tmp_path / "node1"
    state = new_state(tiny_config(), CATEGORIES, seed=6)
    outcome: dict = {}

    def node0():
        try:
            run_distributed_segment(
                state,
                tiny_dataset,
                nproc=1,
                nnodes=2,
                master_port=port,
                steps=100_000,
                checkpoint_path=ckpt,
                checkpoint_every=2,
                workdir=work0,
                pg_timeout_s=timeout,
                timeout_s=240,
            )
        except Exception as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    runner = threading.Thread(target=node0, daemon=True)
    runner.start()
    node1 = subprocess.Popen(
        [sys.executable, "-m", launch.__name__, "--nproc", "1", "--nnodes", "2", "--node-rank", "1"]
        + ["--master-addr", "127.0.0.1", "--master-port", str(port), "--device", "cpu"]
        + ["--workdir", str(work1), "--pg-timeout", str(timeout), "--timeout", "240"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: _checkpoint_step(ckpt) >= 2, 120, "a checkpoint written by rank 0 on node 0")
        assert "rank 1 of 2" in (work1 / "rank-1.log").read_text()
        frozen = int((work1 / "rank-1.pid").read_text())
        os.kill(frozen, signal.SIGSTOP)
        frozen_at = time.monotonic()
        runner.join(timeout=timeout + 120)
        assert not runner.is_alive(), "node 0 hung on its frozen peer instead of failing"
        os.kill(frozen, signal.SIGKILL)  # a stopped process dies of SIGKILL; node 1's launcher sees it
        _, err = node1.communicate(timeout=60)
    finally:
        if node1.poll() is None:
            node1.kill()
            node1.communicate(timeout=10)
    assert isinstance(outcome.get("error"), DistributedTrainingError)
    # It failed by itself, not stopped by its launcher (SIGTERM, then SIGKILL): the collective's timeout
    # raises in the training loop (an exit status), or, when gloo's receiving thread times out first,
    # that thread's uncaught exception aborts the process (SIGABRT). Both are the rank's own doing.
    message = str(outcome["error"])
    assert "rank 0 exited with status" in message or "rank 0 was killed by SIGABRT" in message, message
    assert "timed out" in message.lower(), message  # the tail says why
    waited = outcome["ended"] - frozen_at
    # it waited for the group's timeout (not less), and ended by itself (the join above bounds it; a
    # tighter upper bound would time the machine's load, not the code)
    assert waited > timeout - 1
    assert node1.returncode != 0 and "rank 1 was killed by SIGKILL" in err
    assert not _alive(frozen)


def test_gan_train_with_two_ranks_writes_one_checkpoint_from_rank_0_that_gan_sample_reads(tmp_path):
    from click.testing import CliRunner

    from atelier.cli.gan import gan

    data = tmp_path / "catalogue"
    for i, (blob, label) in enumerate(make_catalogue(18)):
        (data / CATEGORIES[label]).mkdir(parents=True, exist_ok=True)
        (data / CATEGORIES[label] / f"{i}.png").write_bytes(blob)
    out = tmp_path / "run"
    small = ["--set", "channel_base=256", "--set", "channel_max=32", "--set", "z_dim=16", "--set", "w_dim=32"]
    result = CliRunner().invoke(
        gan,
        ["train", "--data", str(data), "--out", str(out), "--resolution", "16", "--steps", "4"]
        + ["--set", "batch_size=8", "--no-sweep", "--nproc", "2", "--checkpoint-every", "2"]
        + small,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["step"] == 4 and summary["ranks"] == 2
    assert sorted(p.name for p in out.rglob("*.pt")) == ["checkpoint.pt"]
    assert "wrote" in (out / "ranks" / "rank-0.log").read_text()
    assert "wrote" not in (out / "ranks" / "rank-1.log").read_text()

    ckpt = checkpoint_from_bytes((out / "checkpoint.pt").read_bytes())
    G, cfg, names = load_generator(ckpt)
    images = generate(G, seeds=[0, 1, 2], labels=[0, 1, 2])
    decoded = Image.open(io.BytesIO(encode_png(images[0])))
    assert decoded.size == (16, 16) and names == CATEGORIES
    sampled = CliRunner().invoke(
        gan,
        [
            "sample",
            "--checkpoint",
            str(out / "checkpoint.pt"),
            "--per-category",
            "1",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert sampled.exit_code == 0, sampled.output
    assert json.loads(sampled.stdout.strip().splitlines()[-1])["written"] == 3
