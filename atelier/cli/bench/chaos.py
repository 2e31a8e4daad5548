"""`atelier bench chaos --json`: bulk batches through the faults production meets, on an embedded stack.

One stack in a temp dir (or --data-dir); faults run one after another, each on its own batch:

    worker-kill   the GPU worker SIGKILLed --kills times at random points (a training job runs too)
    s3-hang       SeaweedFS stopped with SIGSTOP for --s3-hang-seconds, then SIGCONT
    s3-crash      SeaweedFS SIGKILLed; the supervisor restarts it
    s3-down       SeaweedFS stopped (connections refused) for --s3-down-seconds, started again on the
                  same ports and data dir
    s3-down-long  the same for --s3-down-long-seconds
    broker-hang   redis-server SIGSTOPped for --broker-hang-seconds while a --big-submit image batch is
                  submitted (its response time is measured), then killed and restarted (AOF kept)
    sqlite-lock   another process holds the SQLite file under BEGIN EXCLUSIVE for --sqlite-lock-seconds

Per fault it reports: images expected, listed (GET /v1/jobs/{id}/images, every page), unique (distinct
indexes), lost (expected - unique), doubled (listed - unique); jobs by final status; the worst
GET /v1/jobs/{id} latency (and failed polls) while the fault lasted; the submit latency.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import click
import httpx

FAULTS = ("worker-kill", "s3-hang", "s3-crash", "s3-down", "s3-down-long", "broker-hang", "sqlite-lock")
TERMINAL = {"succeeded", "partially_succeeded", "failed", "cancelled"}

# --fast-reconcile (the test suite's short run): a lost worker is noticed in seconds, not half a minute
FAST_RECONCILE = {
    "ATELIER_HEARTBEAT_SECONDS": "1",
    "ATELIER_STALE_AFTER_SECONDS": "6",
    "ATELIER_RECONCILE_EVERY_SECONDS": "2",
    "ATELIER_TRAIN_SEGMENT_SECONDS": "5",
    "ATELIER_JUDGE_SECONDS": "2",
    "ATELIER_EVAL_PER_CLASS": "8",
    "ATELIER_EVAL_MAX_REAL": "64",
}


@dataclass
class Options:
    images: int = 10_000
    big_submit: int = 20_000
    kills: int = 10
    s3_hang_seconds: float = 45.0
    s3_down_seconds: float = 30.0
    s3_down_long_seconds: float = 180.0
    broker_hang_seconds: float = 40.0
    sqlite_lock_seconds: float = 40.0
    job_timeout: float = 1800.0
    resolution: int = 64
    training: bool = True
    training_steps: int = 300
    seed: int = 0


class Poller:
    """A few threads polling GET /v1/jobs/{id} back to back; records (start time, latency, outcome)."""

    def __init__(self, base_url: str, key: str, threads: int = 4) -> None:
        self.base_url, self.key, self.threads = base_url, key, threads
        self.job_ids: list[str] = []
        self.samples: list[tuple[float, float, str]] = []
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._workers.append(t)

    def _run(self, i: int) -> None:
        with httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60.0
        ) as http:
            while not self._stop.is_set():
                ids = list(self.job_ids)
                if not ids:
                    time.sleep(0.2)
                    continue
                t0 = time.time()
                try:
                    outcome = str(http.get(f"/v1/jobs/{ids[i % len(ids)]}").status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                self.samples.append((t0, time.time() - t0, outcome))
                time.sleep(0.2)

    def window(self, start: float, end: float) -> dict:
        inside = [s for s in self.samples if start <= s[0] <= end]
        failed: dict[str, int] = {}
        for _, _, outcome in inside:
            if outcome != "200":
                failed[outcome] = failed.get(outcome, 0) + 1
        worst = max((s[1] for s in inside), default=None)
        return {
            "polls": len(inside),
            "worst_poll_ms": None if worst is None else round(worst * 1000, 1),
            "failed_polls": failed,
        }

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=65)


@dataclass
class Chaos:
    stack: object  # atelier.cli.stack.Stack
    opts: Options
    model_id: str
    rng: random.Random
    client: object = None  # atelier.client.Client
    poller: Poller | None = None
    events: list[str] = field(default_factory=list)

    # ---- helpers -----------------------------------------------------------------------------
    def sleep(self, seconds: float) -> None:
        """Sleep while keeping the supervisor's promise: a child that exits is restarted."""
        deadline = time.monotonic() + seconds
        while True:
            for name in self.stack.supervise_once():
                self.events.append(f"{time.strftime('%H:%M:%S')} supervisor restarted {name}")
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.25, left))

    def submit(self, count: int, *, timeout: float = 300.0) -> tuple[dict | None, float, str | None]:
        t0 = time.perf_counter()
        try:
            response = httpx.post(
                f"{self.stack.api_url}/v1/generation-jobs",
                json={"model": self.model_id, "count": count, "seed": self.rng.randrange(1 << 30)},
                headers={"Authorization": f"Bearer {self.stack.admin_key}"},
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            return None, time.perf_counter() - t0, type(exc).__name__
        dt = time.perf_counter() - t0
        if response.status_code >= 400:
            return None, dt, f"HTTP {response.status_code}: {response.text[:200]}"
        return response.json(), dt, None

    def job(self, job_id: str) -> dict | None:
        try:
            return self.client.jobs.get(job_id).model_dump(mode="json")  # a dict: the report edits it
        except Exception:  # noqa: BLE001 - the API may be briefly unable to answer during a fault
            return None

    def wait_started(self, job_id: str, timeout: float = 120.0) -> None:
        """Until the batch has made progress, so that the fault hits running work."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job and (job["progress"]["done"] > 0 or job["status"] in TERMINAL):
                return
            self.sleep(0.5)

    def wait_ended(self, job_ids: list[str]) -> dict[str, dict]:
        deadline = time.monotonic() + self.opts.job_timeout
        ended: dict[str, dict] = {}
        while len(ended) < len(job_ids) and time.monotonic() < deadline:
            for job_id in job_ids:
                if job_id not in ended:
                    job = self.job(job_id)
                    if job and job["status"] in TERMINAL:
                        ended[job_id] = job
            self.sleep(1.0)
        for job_id in job_ids:  # still running after the timeout: reported as is, then cancelled
            if job_id not in ended:
                ended[job_id] = self.job(job_id) or {"status": "unknown", "progress": {"total": 0}}
                ended[job_id]["status"] += " (timed out)"
                with contextlib.suppress(Exception):
                    self.client.post(f"/v1/jobs/{job_id}/cancel")
        return ended

    def count_images(self, job_id: str) -> tuple[int, int]:
        """(listed, unique): every page of GET /v1/jobs/{id}/images."""
        indexes: list[int] = []
        cursor = None
        while True:
            page = self.client.get(f"/v1/jobs/{job_id}/images", limit=500, cursor=cursor)
            indexes += [item["index"] for item in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                return len(indexes), len(set(indexes))

    # ---- faults ------------------------------------------------------------------------------
    def worker_kill(self, extra: dict) -> None:
        for i in range(self.opts.kills):
            self.sleep(self.rng.uniform(1.0, 6.0))
            name = "worker-cpu" if i % 4 == 3 else "worker-gpu"  # finalize and manifests die too
            self.stack.children[name].held = True  # restarted below, not by the supervisor as well
            self.stack.signal_child(name, signal.SIGKILL)
            self.events.append(f"{time.strftime('%H:%M:%S')} SIGKILL {name}")
            self.sleep(self.rng.uniform(0.5, 2.0))
            self.stack.bring_up(name)
        extra["kills"] = self.opts.kills

    def s3_hang(self, extra: dict) -> None:
        self.stack.signal_child("s3", signal.SIGSTOP)
        try:
            self.sleep(self.opts.s3_hang_seconds)
        finally:
            self.stack.signal_child("s3", signal.SIGCONT)
        extra["fault_seconds"] = self.opts.s3_hang_seconds

    def s3_crash(self, extra: dict) -> None:
        self.stack.signal_child("s3", signal.SIGKILL)
        t0 = time.monotonic()
        self.sleep(0.5)
        while self.stack.children["s3"].proc.poll() is not None:  # the supervisor's back-off
            self.sleep(0.25)
        extra["restarted_after_s"] = round(time.monotonic() - t0, 1)

    def _s3_down(self, seconds: float, extra: dict) -> None:
        self.stack.hold_down("s3")
        try:
            self.sleep(seconds)
        finally:
            self.stack.bring_up("s3")
        extra["fault_seconds"] = seconds

    def s3_down(self, extra: dict) -> None:
        self._s3_down(self.opts.s3_down_seconds, extra)

    def s3_down_long(self, extra: dict) -> None:
        self._s3_down(self.opts.s3_down_long_seconds, extra)

    def broker_hang(self, extra: dict) -> None:
        self.stack.signal_child("redis", signal.SIGSTOP)
        result: dict = {}

        def big_submit() -> None:
            job, dt, error = self.submit(self.opts.big_submit, timeout=self.opts.broker_hang_seconds + 60)
            result.update(job=job, seconds=dt, error=error)

        thread = threading.Thread(target=big_submit, daemon=True)
        try:
            self.sleep(1.0)
            thread.start()
            self.sleep(self.opts.broker_hang_seconds - 1.0)
        finally:
            self.stack.signal_child("redis", signal.SIGKILL)  # hung, then restarted (AOF kept)
            self.stack.bring_up("redis")
        thread.join()
        extra["fault_seconds"] = self.opts.broker_hang_seconds
        extra["big_submit_images"] = self.opts.big_submit
        extra["big_submit_ms"] = round(result["seconds"] * 1000, 1)
        extra["big_submit_error"] = result["error"]
        if result["job"]:
            extra["jobs"] = [result["job"]["id"]]

    def sqlite_lock(self, extra: dict) -> None:
        url = self.stack.env["ATELIER_DATABASE_URL"]
        if not url.startswith("sqlite"):
            extra["skipped"] = "not SQLite"
            return
        path = url.split("///", 1)[-1]
        code = (
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
            "c.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "time.sleep(float(sys.argv[2]))\n"
            "c.execute('COMMIT')\n"
        )
        locker = subprocess.Popen(
            [sys.executable, "-c", code, path, str(self.opts.sqlite_lock_seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(locker.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=60)  # the locker waits up to 30 s for the write lock itself
        try:
            if not got or got[0].strip() != "locked":
                extra["error"] = "the locking process did not get the lock within 60 s"
                return
            self.sleep(self.opts.sqlite_lock_seconds)
            locker.wait(timeout=30)
        finally:
            if locker.poll() is None:
                locker.kill()
        extra["fault_seconds"] = self.opts.sqlite_lock_seconds

    # ---- one fault, measured -------------------------------------------------------------------
    def run(self, fault: str) -> dict:
        inject = getattr(self, fault.replace("-", "_"))
        job, submit_s, error = self.submit(self.opts.images)
        row: dict = {"fault": fault, "submit_ms": round(submit_s * 1000, 1)}
        if job is None:
            return {**row, "error": f"submit failed: {error}"}
        job_ids = [job["id"]]
        if fault == "worker-kill" and self.opts.training:
            job_ids.append(self.submit_training())
        self.poller.job_ids[:] = job_ids
        self.wait_started(job["id"])
        extra: dict = {}
        events_before = len(self.events)
        t0 = time.time()
        inject(extra)
        t1 = time.time()
        job_ids += extra.pop("jobs", [])
        self.poller.job_ids[:] = job_ids
        during = self.poller.window(t0, t1)
        ended = self.wait_ended(job_ids)
        row.update(extra)
        row.update(
            {f"{k}_during_fault" if k != "worst_poll_ms" else "worst_poll_ms": v for k, v in during.items()}
        )
        row["recovery_poll"] = self.poller.window(t1, time.time())
        expected = listed = unique = unfinished = 0
        states: dict[str, int] = {}
        for job_id, final in ended.items():
            states[final["status"]] = states.get(final["status"], 0) + 1
            if final.get("kind") != "generate":
                row["training"] = {"status": final["status"], "steps": final["progress"].get("done")}
                continue
            n, u = self.count_images(job_id)
            if final["status"] not in TERMINAL:  # still running at the timeout: not counted as lost
                unfinished += final["progress"]["total"] - u
            expected += final["progress"]["total"]
            listed, unique = listed + n, unique + u
        row.update(
            images_expected=expected, listed=listed, unique=unique, lost=expected - unique - unfinished,
            unfinished=unfinished, doubled=listed - unique, jobs=states, seconds=round(time.time() - t0, 1),
        )  # fmt: skip
        # kills and restarts while this fault ran: a worker that needed its supervisor shows up here
        row["events"] = self.events[events_before:]
        return row

    def submit_training(self) -> str:
        from atelier.catalogue.synthetic import catalogue_zip, make_catalogue

        cats = ("dress", "hat", "pants")
        if not getattr(self, "_catalogue_done", False):
            upload = self.client.upload(
                [("c.zip", catalogue_zip(make_catalogue(12, cats, seed=self.opts.seed)))]
            )
            self.client.wait(upload["job"]["id"], timeout=300)
            self._catalogue_done = True
        job = self.client.post(
            "/v1/training-jobs",
            json={
                "preset": "tiny",
                "resolution": 16,
                "steps": 300,
                "categories": list(cats),
                "promote": "never",
            },
        )
        return job["id"]


def run_chaos(
    faults: list[str],
    opts: Options,
    *,
    data_dir: Path | None = None,
    fast_reconcile: bool = False,
    stack=None,
) -> dict:  # noqa: ANN001
    """Run `faults` in order on `stack` (default: a new embedded stack in data_dir or a temp dir)."""
    from atelier.cli.bench.api import register_model
    from atelier.cli.stack import Stack
    from atelier.client import Client

    out: dict = {"benchmark": "chaos", "cpu_count": os.cpu_count(), "loadavg_before": os.getloadavg(),
                 "options": opts.__dict__, "fast_reconcile": fast_reconcile}  # fmt: skip
    with ExitStack() as cleanup:
        if stack is None:
            if data_dir is None:
                data_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="atelier-chaos-")))
            stack = cleanup.enter_context(Stack(data_dir, extra_env=FAST_RECONCILE if fast_reconcile else {}))
        model_id = register_model(stack, resolution=opts.resolution)
        chaos = Chaos(stack=stack, opts=opts, model_id=model_id, rng=random.Random(opts.seed))
        chaos.client = Client(stack.api_url, stack.admin_key, timeout=60)
        chaos.poller = Poller(stack.api_url, stack.admin_key)
        chaos.poller.start()
        cleanup.callback(chaos.client.close)
        cleanup.callback(chaos.poller.stop)
        out["faults"] = []
        for fault in faults:
            row = chaos.run(fault)
            out["faults"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)  # progress on stderr; one JSON on stdout
        out["events"] = chaos.events
    out["loadavg_after"] = os.getloadavg()
    return out


def _fault_list(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise click.BadParameter(f"unknown fault(s) {', '.join(unknown)}; one of {', '.join(FAULTS)}")
    return names


@click.command("chaos")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (the only output format)")
@click.option("--faults", default=",".join(FAULTS), show_default=True, help="comma-separated, run in order")
@click.option("--images", type=int, default=10_000, show_default=True, help="images per fault's batch")
@click.option(
    "--big-submit", type=int, default=20_000, show_default=True, help="images submitted in broker-hang"
)
@click.option("--kills", type=int, default=10, show_default=True, help="worker SIGKILLs in worker-kill")
@click.option("--s3-hang-seconds", type=float, default=45.0, show_default=True)
@click.option("--s3-down-seconds", type=float, default=30.0, show_default=True)
@click.option("--s3-down-long-seconds", type=float, default=180.0, show_default=True)
@click.option("--broker-hang-seconds", type=float, default=40.0, show_default=True)
@click.option("--sqlite-lock-seconds", type=float, default=40.0, show_default=True)
@click.option("--job-timeout", type=float, default=1800.0, show_default=True, help="per fault, after it")
@click.option("--resolution", type=int, default=64, show_default=True)
@click.option(
    "--training/--no-training", default=True, show_default=True, help="a training job in worker-kill"
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="default: a new temp dir")
@click.option("--fast-reconcile", is_flag=True, help="seconds-scale heartbeats (default: `atelier up`'s)")
def bench_chaos_cmd(as_json: bool, faults: str, data_dir: Path | None, fast_reconcile: bool, **kw) -> None:
    """Bulk batches through worker kills, S3, broker and SQLite faults; per fault, images lost/doubled."""
    result = run_chaos(_fault_list(faults), Options(**kw), data_dir=data_dir, fast_reconcile=fast_reconcile)
    click.echo(json.dumps(result))
