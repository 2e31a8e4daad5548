"""The per-key event-stream quota under a burst: many streams of one key opened at the same moment
against the real API (uvicorn). The quota is counted where it is checked, so no more than
ATELIER_QUOTA_EVENT_STREAMS of them are served; the rest get 429, and every slot comes back."""

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
