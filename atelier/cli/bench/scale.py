"""`atelier bench scale --json`: one batch across worker hosts on a real network, with a host cut off.

    control host   the root namespace: `Stack(listen=ADDR)` (API, Redis with a password, S3 with a key,
                   io and control workers, beat; a loopback PostgreSQL relayed on ADDR)
    worker hosts   network namespaces (atelier.cli.netns), each `atelier worker --role gpu` under a
                   hostname of its own, joined with the settings the control host prints

    one_host    images/s of a batch on worker host a alone
    two_hosts   images/s of the same batch on hosts a and b
    cut         a batch on both; host a's link goes down mid-batch and b finishes it. Recorded: each
                host's share (images per lease owner host), seconds from the cut until all of a's
                units were taken over, the job's end state, and expected == listed == S3 keys == rows;
                then the link comes back, a's worker rejoins (a later batch gets a share from it)
                and whatever a was still writing is fenced (the units it held stay finished by b)

`run_scale_out()` is also the integration test's body (tests/integration/test_scale_out.py), with a
small batch. The model is the 16 px GAN at CPU-test widths: throughput here measures the
system (queue, SQL, S3, network), not the GPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
import httpx

CATEGORIES = ["dress", "hat", "pants"]
# How long the cut host stands stopped before the check that precedes its cut (well under a lease's
# staleness below): a statement it sent before it stopped reaches the database meanwhile.
CUT_SETTLE_SECONDS = 0.3
# fast lease recovery, short network timeouts: a cut host's work moves within seconds
SCALE_ENV = {
    "ATELIER_HEARTBEAT_SECONDS": "1",
    "ATELIER_STALE_AFTER_SECONDS": "4",
    "ATELIER_RECONCILE_EVERY_SECONDS": "1",
    "ATELIER_RESEND_AFTER_SECONDS": "30",
    "ATELIER_CONSUMER_STUCK_SECONDS": "10",
    "ATELIER_INFRA_RETRY_SECONDS": "10",
    "ATELIER_DB_NETWORK_TIMEOUT_SECONDS": "5",
    "ATELIER_DB_IDLE_IN_TRANSACTION_SECONDS": "5",
    "ATELIER_BROKER_SOCKET_TIMEOUT": "3",
    "OMP_NUM_THREADS": "1",
}


def _atelier() -> str:
    script = Path(sys.executable).parent / "atelier"
    return str(script) if script.exists() else "atelier"


@contextmanager
def _process_env(env: dict[str, str]):  # noqa: ANN202
    """This process talks to the control host's services too (the model, the checks)."""
    from atelier.core.config import get_settings
    from atelier.core.db import dispose_engine
    from atelier.core.queue import celery_client

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear(), celery_client.cache_clear(), dispose_engine()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear(), celery_client.cache_clear(), dispose_engine()


def _tiny_model() -> str:
    """A model version of the 16 px GAN at CPU-test widths, checkpoint in S3: untrained, since
    throughput does not depend on the weights (as in `atelier bench generate`)."""
    from atelier.core.storage import get_store
    from atelier.gan.config import preset_config
    from atelier.gan.training import checkpoint_to_bytes, new_state, state_to_checkpoint
    from atelier.training import registry

    cfg = preset_config(
        "tiny",
        resolution=16,
        channel_base=256,
        channel_max=32,
        z_dim=16,
        w_dim=32,
        batch_size=8,
        num_classes=len(CATEGORIES),
    )
    data = checkpoint_to_bytes(state_to_checkpoint(new_state(cfg, CATEGORIES, seed=0)))
    return registry.register_checkpoint(
        get_store(), data, arch="atelier", preset="tiny", resolution=16, class_names=CATEGORIES, steps=0
    )


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # one that exited meanwhile
            os.kill(pid, sig)


class ScaleOut:
    """The control host, the worker hosts, and the checks of one run."""

    def __init__(self, cleanup: ExitStack, work_dir: Path, database_url: str | None, hosts: int = 2):
        from atelier.cli.netns import NetHosts
        from atelier.cli.stack import Stack

        self.net = cleanup.enter_context(NetHosts(hosts))
        self.names = [f"host-{chr(ord('a') + i)}" for i in range(hosts)]
        url = database_url or f"sqlite:///{work_dir / 'control' / 'atelier.db'}"
        self.stack = Stack(
            work_dir / "control",
            database_url=url,
            listen=self.net.address,
            workers=("cpu",),
            extra_env=SCALE_ENV,
        )
        self.stack.start()
        cleanup.callback(self.stack.stop)
        cleanup.enter_context(_process_env(self.stack.env))
        self.work_dir = work_dir
        self.procs: dict[int, subprocess.Popen] = {}
        cleanup.callback(self.stop_hosts)
        self.http = httpx.Client(
            base_url=self.stack.api_url,
            timeout=30,
            headers={"Authorization": f"Bearer {self.stack.admin_key}"},
        )
        cleanup.callback(self.http.close)
        self.model = _tiny_model()

    # ---- worker hosts ------------------------------------------------------------------------------
    def start_host(self, i: int) -> None:
        env = {**os.environ, **SCALE_ENV, **self.stack.worker_env}
        data = self.work_dir / self.names[i]
        log = open(self.work_dir / f"{self.names[i]}.out", "ab")  # noqa: SIM115 - the process owns it
        argv = [_atelier(), "worker", "--role", "gpu", "--data-dir", str(data)]
        self.procs[i] = subprocess.Popen(
            self.net.argv(i, self.names[i], argv),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def wait_ready(self, i: int, timeout: float = 120) -> float:
        """Seconds until host i's worker answers a ping over the broker: rates are timed from there,
        so that a worker's start-up (imports, torch) is not counted as throughput."""
        from atelier.core.queue import celery_client

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            replies = celery_client().control.ping(timeout=1.0)
            if any(node.endswith(f"@{self.names[i]}") for reply in replies for node in reply):
                return time.monotonic() - t0
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"worker host {self.names[i]} exited with {self.procs[i].returncode}")
        raise TimeoutError(f"worker host {self.names[i]} did not answer within {timeout:.0f} s")

    def stop_hosts(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()

    # ---- jobs --------------------------------------------------------------------------------------
    def submit(self, images: int, chunk_size: int, seed: int) -> str:
        per = {c: images // len(CATEGORIES) for c in CATEGORIES}
        per[CATEGORIES[0]] += images - sum(per.values())
        body = {"model": self.model, "per_category": per, "seed": seed, "chunk_size": chunk_size}
        r = self.http.post("/v1/generation-jobs", json=body)
        r.raise_for_status()
        return r.json()["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.http.get(f"/v1/jobs/{job_id}").raise_for_status().json()

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["status"] not in (
            "succeeded",
            "failed",
            "cancelled",
            "partially_succeeded",
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} still {job['status']} {job['progress']} after {timeout:.0f} s"
                )
            time.sleep(0.2)
        return job

    def units(self, job_id: str) -> list[tuple[int, str, str | None, int]]:
        """(id, status, worker, done) of the job's chunks."""
        from sqlalchemy import select

        from atelier.core.db import session_scope
        from atelier.core.models import WorkUnit

        # A read-only, deferred transaction: the observer must not queue for SQLite's write lock behind
        # the workers (a BEGIN IMMEDIATE here once ran past the busy timeout on a loaded 2-core machine:
        # "database is locked"); WAL readers see the last commit without any lock.
        with session_scope(readonly=True) as session:
            rows = session.execute(
                select(WorkUnit.id, WorkUnit.status, WorkUnit.worker, WorkUnit.done).where(
                    WorkUnit.job_id == job_id, WorkUnit.kind == "chunk"
                )
            ).all()
        return [tuple(r) for r in rows]

    def share(self, job_id: str) -> dict[str, int]:
        """Images per lease owner host: the worker identity is host:pid:token."""
        shares: Counter[str] = Counter()
        for _, status, worker, done in self.units(job_id):
            if status == "succeeded" and worker:
                shares[worker.split(":")[0]] += done
        return dict(shares)

    def running_on(self, job_id: str, host: str, *, fresh: bool = False) -> list[int]:
        """The units `host` holds now (fresh: only those it has recorded nothing of yet, so that a cut
        lands before it can finish them)."""
        return [
            uid
            for uid, status, worker, done in self.units(job_id)
            if status == "running" and (worker or "").startswith(f"{host}:") and not (fresh and done)
        ]

    def counts(self, job_id: str) -> dict[str, int]:
        """What a user can count: listed by the API, keys in S3, rows in SQL, and distinct indexes."""
        from sqlalchemy import func, select

        from atelier.core.db import session_scope
        from atelier.core.models import GeneratedImage
        from atelier.core.storage import get_store

        listed, cursor, indexes = 0, None, set()
        while True:
            params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = self.http.get(f"/v1/jobs/{job_id}/images", params=params).raise_for_status().json()
            listed += len(page["items"])
            indexes |= {item["index"] for item in page["items"]}
            if not (cursor := page["next_cursor"]):
                break
        # the image files: generated/J/000123.png (the manifest and archive sit beside them)
        keys = {
            o["Key"]
            for o in get_store().list(f"generated/{job_id}/")
            if o["Key"].rsplit("/", 1)[1][:6].isdigit()
        }
        with session_scope(readonly=True) as session:
            rows = session.execute(
                select(func.count()).select_from(GeneratedImage).where(GeneratedImage.job_id == job_id)
            ).scalar_one()
        return {"listed": listed, "unique_indexes": len(indexes), "s3_keys": len(keys), "rows": rows}

    def rate(self, images: int, chunk_size: int, seed: int, timeout: float) -> dict[str, Any]:
        t0 = time.monotonic()
        job_id = self.submit(images, chunk_size, seed)
        job = self.wait(job_id, timeout)
        seconds = time.monotonic() - t0
        return {
            "job": job_id,
            "status": job["status"],
            "seconds": round(seconds, 1),
            "images_per_s": round(images / seconds, 1),
            "share": self.share(job_id),
        }

    def _cut_while_holding(self, job_id: str) -> tuple[list[int], int]:
        """Cut host a's link while it holds a unit it has recorded nothing of: (those units, images done
        then), or ([], 0) and no cut where it holds none. Host a is stopped (SIGSTOP) from the check to
        the cut: on a loaded machine a check takes longer than a chunk, and a unit seen unfinished was
        otherwise finished before the link went down (its failover then never happened). The pause
        before the check lets a commit that a sent before it stopped land on the server. WAL readers and
        PostgreSQL do not wait on a stopped writer."""
        # Every process on the host: the worker's Celery children each run in a session of their own.
        pids = self.net.pids(0)
        _signal_all(pids, signal.SIGSTOP)
        try:
            time.sleep(CUT_SETTLE_SECONDS)
            held = self.running_on(job_id, self.names[0], fresh=True)
            if not held:
                return [], 0
            done = self.job(job_id)["progress"]["done"]
            self.net.cut(0)
            return held, done
        finally:
            _signal_all(pids, signal.SIGCONT)

    def cut_batch(self, images: int, chunk_size: int, seed: int, timeout: float) -> dict[str, Any]:
        """Host a's link goes down once both hosts have finished work, a holds a unit and a quarter is
        done; b finishes."""
        a, b = self.names[0], self.names[1]
        job_id = self.submit(images, chunk_size, seed)
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            share = self.share(job_id)
            if share.get(a) and share.get(b) and job["progress"]["done"] >= images // 4:
                held, done_at_cut = self._cut_while_holding(job_id)
                if held:
                    break
                job = self.job(job_id)
            if job["status"] != "running" and job["status"] != "queued" or time.monotonic() > deadline:
                raise AssertionError(
                    f"both hosts never worked on the batch together: {job}, {self.units(job_id)}"
                )
            time.sleep(0.05)
        cut_at = time.monotonic()
        # recovered: every unit a held at the cut is running or finished on another host
        recovered = None
        while recovered is None or (job := self.job(job_id))["status"] in ("queued", "running"):
            if recovered is None:
                owners = {uid: (status, worker) for uid, status, worker, _ in self.units(job_id)}
                # (one that a finished as the link went down counts as done)
                if all(
                    owners[uid][0] == "succeeded" or not (owners[uid][1] or "").startswith(f"{a}:")
                    for uid in held
                ):
                    recovered = time.monotonic() - cut_at
            if time.monotonic() > deadline:
                raise TimeoutError(f"the batch did not end with host {a} cut off: {self.job(job_id)}")
            time.sleep(0.2)
        finished_after_cut = time.monotonic() - cut_at
        counts_at_end = self.counts(job_id)
        share_at_end = self.share(job_id)
        self.net.restore(0)
        return {
            "job": job_id,
            "status": job["status"],
            "images": images,
            "done_at_cut": done_at_cut,
            "units_held_by_cut_host": held,
            "recover_seconds": round(recovered, 1),
            "finished_seconds_after_cut": round(finished_after_cut, 1),
            "share": share_at_end,
            "counts": counts_at_end,
        }

    def after_rejoin(
        self, cut: dict[str, Any], images: int, chunk_size: int, seed: int, timeout: float
    ) -> dict[str, Any]:
        """The cut host is back: a later batch gets a share from it, and the units it held at the cut
        stay finished by the other host whatever it wrote late (fenced)."""
        a = self.names[0]
        deadline = time.monotonic() + timeout
        later: dict[str, Any] = {}
        while not later.get("share", {}).get(a):
            if time.monotonic() > deadline:
                raise TimeoutError(f"host {a} did not rejoin: {later}")
            later = self.rate(images, chunk_size, seed, timeout)
            seed += images
        owners = {uid: (status, worker) for uid, status, worker, _ in self.units(cut["job"])}
        logs = (self.work_dir / a / "logs").glob("*.log")
        fenced = sum(p.read_text(errors="replace").count("is no longer ours") for p in logs)
        held = [owners[uid] for uid in cut["units_held_by_cut_host"]]
        return {
            "later_batch": later,
            "late_writes_fenced_in_cut_host_log": fenced,
            "held_units_now": [{"status": s, "host": (w or "").split(":")[0]} for s, w in held],
            "cut_job_status": self.job(cut["job"])["status"],
            "cut_job_counts": self.counts(cut["job"]),
        }


def run_scale_out(
    work_dir: Path,
    *,
    images: int,
    chunk_size: int,
    database_url: str | None,
    measure_rates: bool,
    timeout: float = 600,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "images": images,
        "chunk_size": chunk_size,
        "database": "postgresql"
        if database_url and database_url.startswith("postgresql")
        else "sqlite (one file on the shared filesystem)",
    }
    with ExitStack() as cleanup:
        run = ScaleOut(cleanup, work_dir, database_url)
        run.start_host(0)
        result["host_ready_seconds"] = [round(run.wait_ready(0), 1)]
        if measure_rates:
            result["one_host"] = run.rate(images, chunk_size, 1_000_000, timeout)
        run.start_host(1)
        result["host_ready_seconds"].append(round(run.wait_ready(1), 1))
        if measure_rates:
            result["two_hosts"] = run.rate(images, chunk_size, 2_000_000, timeout)
            result["speedup"] = round(
                result["two_hosts"]["images_per_s"] / result["one_host"]["images_per_s"], 2
            )
        result["cut"] = run.cut_batch(images, chunk_size, 3_000_000, timeout)
        result["rejoin"] = run.after_rejoin(
            result["cut"], max(40, chunk_size * 6), max(8, chunk_size // 2), 4_000_000, timeout
        )
        result["hosts"] = run.names
    return result


LIMITS = (
    "Every host here is a namespace on the same 2 shared CPU cores: the two worker hosts, the control "
    "plane (API, Redis, SeaweedFS, SQL, io and control workers) and the encoders all take turns on them, "
    "so a second worker host adds network and lease traffic but no compute; on separate machines each "
    "host brings its own cores (and GPU), and the shared S3 PUTs and SQL writes limit first."
)


@click.command("scale")
@click.option("--images", type=int, default=10_000, show_default=True, help="images per batch")
@click.option("--chunk-size", type=int, default=250, show_default=True)
@click.option(
    "--database-url",
    envvar="ATELIER_BENCH_DATABASE_URL",
    default=None,
    help="PostgreSQL for the control host (default: SQLite on the shared filesystem)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def bench_scale_cmd(images: int, chunk_size: int, database_url: str | None, as_json: bool) -> None:
    """One batch on one and on two worker hosts (network namespaces, root only), then with one host cut
    off mid-batch: images/s, recovery seconds, exact counts."""
    from atelier.cli.netns import unavailable

    if why := unavailable():
        raise click.UsageError(f"bench scale needs network namespaces: {why}")
    with tempfile.TemporaryDirectory(prefix="atelier-bench-scale-") as tmp:
        result = run_scale_out(
            Path(tmp),
            images=images,
            chunk_size=chunk_size,
            database_url=database_url,
            measure_rates=True,
            timeout=max(600, images / 5),
        )
    result["cpu_cores"] = os.cpu_count()
    result["what_limits_it_here"] = LIMITS
    click.echo(json.dumps(result, indent=None if as_json else 2))
