"""Floods against the real API (uvicorn): a burst of event streams of one key opened at the same
moment (the quota is counted where it is checked: no more than ATELIER_QUOTA_EVENT_STREAMS are
served, the rest get 429, and every slot comes back), then random bearer tokens and oversized sign-in
forms (refused cheaply, the API's peak memory measured)."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.integration.conftest import BARE_ENV, make_key, wait_for

pytestmark = pytest.mark.integration

QUOTA = int(BARE_ENV["ATELIER_QUOTA_EVENT_STREAMS"])


def _queued_job(stack) -> str:  # noqa: ANN001
    """A job that stays queued (the bare stack has no workers): its stream stays open."""
    from atelier.core import jobs
    from atelier.core.db import session_scope

    with session_scope(stack.settings.database_url) as session:
        job = jobs.create_job(session=session, kind="ingest", params={"image_ids": []})
        session.flush()
        return job.id


def test_a_burst_of_streams_gets_no_more_than_the_quota(bare_stack):
    reader = make_key(bare_stack, ["admin"])  # admin: may stream any job
    url = f"{bare_stack.api_url}/v1/jobs/{_queued_job(bare_stack)}/stream"
    headers = {"Authorization": f"Bearer {reader}"}
    statuses: list[int] = []
    opened = threading.Barrier(12)
    release = threading.Event()

    def one() -> None:
        with httpx.Client(timeout=20) as client:
            opened.wait()
            with client.stream("GET", url, headers=headers) as r:
                statuses.append(r.status_code)
                if r.status_code == 200:
                    release.wait(20)  # hold the stream open until every request has its answer

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    wait_for(lambda: len(statuses) == 12, timeout=30, what="12 answers")
    release.set()
    for t in threads:
        t.join(30)
    assert statuses.count(200) == QUOTA, statuses
    assert statuses.count(429) == 12 - QUOTA, statuses

    def reopened() -> bool:  # every slot came back when the streams closed
        with httpx.Client(timeout=10) as client, client.stream("GET", url, headers=headers) as r:
            return r.status_code == 200

    assert wait_for(reopened, timeout=15, what="a stream slot after the burst")


def test_random_tokens_and_large_forms_cost_the_api_little(bare_stack):
    """500 random bearer tokens (malformed and well-formed) and 50 oversized sign-in forms from 20
    threads: every one a 401 or 413, and the API's peak memory stays modest."""
    import secrets
    from concurrent.futures import ThreadPoolExecutor

    def token_request(i: int) -> int:
        token = secrets.token_hex(32) if i % 2 else "atl_" + secrets.token_urlsafe(32)
        r = httpx.get(
            f"{bare_stack.api_url}/v1/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        return r.status_code

    def form_request(_: int) -> int:
        r = httpx.post(f"{bare_stack.api_url}/ui/login", data={"api_key": "x" * 1_000_000}, timeout=30)
        return r.status_code

    with ThreadPoolExecutor(20) as pool:
        tokens = list(pool.map(token_request, range(500)))
        forms = list(pool.map(form_request, range(50)))
    # 503 is the concurrency cap answering at once, also a refusal without work
    assert set(tokens) <= {401, 503} and tokens.count(401) > 0, sorted(set(tokens))
    assert set(forms) == {413}, sorted(set(forms))
    status = open(f"/proc/{bare_stack.children['api'].proc.pid}/status").read()  # noqa: SIM115
    peak_mb = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024
    print(f"API peak RSS after the token and form floods: {peak_mb:.0f} MB")
    assert peak_mb < 400, f"API peak RSS {peak_mb:.0f} MB"
