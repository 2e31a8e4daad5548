"""The /ui gallery without a browser: sign-in, session and CSRF rules, a job of 100,000 images paged
by cursor, and thumbnails that are small derived files. The browser walk is in
tests/integration/test_gallery_browser.py."""

from __future__ import annotations

import io
import re

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import String, case, cast, insert, literal, select

from atelier.core.pagination import encode_cursor

N = 100_000


@pytest.fixture
def ui(db_url, monkeypatch):  # noqa: ANN001, ANN201
    from atelier.core.config import get_settings
    from atelier.core.db import dispose_engine

    monkeypatch.setenv("ATELIER_DATABASE_URL", db_url)
    get_settings.cache_clear()
    dispose_engine()
    from atelier.api.main import app

    yield TestClient(app)
    get_settings.cache_clear()
    dispose_engine()


def make_key(scopes: list[str], *, owns: str | None = None) -> str:
    """A key's secret; `owns` makes that job the key's (jobs belong to the key that submitted them)."""
    from atelier.core import auth
    from atelier.core.db import session_scope
    from atelier.core.models import Job

    with session_scope() as session:
        key, secret = auth.create_key(session=session, name="designer", scopes=scopes)
        if owns is not None:
            session.get(Job, owns).api_key_id = key.id
        return secret


def sign_in(client: TestClient, secret: str) -> None:
    response = client.post("/ui/login", data={"api_key": secret, "next": "/ui/jobs"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/jobs"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html)[1]


def test_sign_in_gives_an_httponly_strict_cookie_without_the_key(ui):
    secret = make_key(["read"])
    page = ui.get("/ui/models", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/ui/login?next=/ui/models"
    foreign = ui.post("/ui/login", data={"api_key": secret}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "set-cookie" not in foreign.headers
    wrong = ui.post("/ui/login", data={"api_key": "atl_nope"})
    assert wrong.status_code == 401 and "unknown or revoked API key" in wrong.text
    response = ui.post(
        "/ui/login", data={"api_key": secret, "next": "https://evil.example/"}, follow_redirects=False
    )
    assert response.headers["location"] == "/ui/jobs", "never an open redirect"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert secret not in cookie
    for page in ("/ui/models", "/ui/schedules", "/ui/catalogue", "/ui/jobs", "/ui/trends"):
        answer = ui.get(page)
        assert answer.status_code == 200 and "<h1" in answer.text, page


def test_forms_need_the_csrf_token_and_scopes_hold(ui, session):
    from atelier.core import jobs

    job = jobs.create_job(session=session, kind="ingest", params={})
    session.commit()
    sign_in(ui, make_key(["read"]))
    assert ui.post(f"/ui/jobs/{job.id}/cancel", data={"csrf": "x"}).status_code == 403  # read-only key
    ui.cookies.clear()
    sign_in(ui, make_key(["read", "submit"], owns=job.id))
    forged = ui.post(f"/ui/jobs/{job.id}/cancel", data={"csrf": "0" * 32})
    assert forged.status_code == 403 and "CSRF" in forged.json()["detail"]
    token = csrf_of(ui.get(f"/ui/jobs/{job.id}").text)
    done = ui.post(f"/ui/jobs/{job.id}/cancel", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303
    session.expire_all()
    assert session.get(type(job), job.id).status == "cancelled"
    assert "cancelled" in ui.get(f"/ui/jobs/{job.id}").text


def test_a_trend_report_is_requested_with_the_csrf_token_and_listed(ui, monkeypatch):
    sent = []
    monkeypatch.setattr("atelier.core.queue._background", None)  # send in the committing thread, to a list
    monkeypatch.setattr("atelier.core.queue.send_task", lambda name, **kw: sent.append(name))
    sign_in(ui, make_key(["read", "submit"]))
    listing = ui.get("/ui/trends")
    assert listing.status_code == 200 and 'href="/ui/trends"' in listing.text  # in the nav
    token = csrf_of(listing.text)
    form = {"period": "season", "horizon": "2", "categories": "dress, skirt", "since": "2024-01-01"}
    assert ui.post("/ui/trends", data=form).status_code == 403  # no token
    done = ui.post("/ui/trends", data={**form, "csrf": token}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].startswith("/ui/trends/")
    job_id = done.headers["location"].rsplit("/", 1)[-1]
    assert sent == ["atelier.trend_report"]
    page = ui.get(f"/ui/trends/{job_id}")
    assert page.status_code == 200 and "queued" in page.text and "appears here once" in page.text
    listing = ui.get("/ui/trends").text
    assert f'href="/ui/trends/{job_id}"' in listing and "season" in listing
    too_far = ui.post("/ui/trends", data={**form, "horizon": "99", "csrf": token})
    assert (
        too_far.status_code == 422
        and "horizon" in too_far.text
        and "ATELIER_TREND_MAX_HORIZON" in too_far.text
    )
    bad = ui.post("/ui/trends", data={**form, "period": "decade", "csrf": token})
    assert bad.status_code == 422 and "period" in bad.text
    assert ui.get("/ui/trends/nope").status_code == 404


def test_a_session_ends_with_its_key(ui):
    from atelier.core.db import session_scope
    from atelier.core.models import ApiKey, utcnow

    secret = make_key(["read"])
    sign_in(ui, secret)
    with session_scope() as s:
        for key in s.query(ApiKey).all():
            key.revoked_at = utcnow()
    assert ui.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_a_session_ends_when_its_key_expires(ui):
    from datetime import timedelta

    from atelier.core.db import session_scope
    from atelier.core.models import ApiKey, utcnow

    sign_in(ui, make_key(["read"]))
    assert ui.get("/ui/jobs", follow_redirects=False).status_code == 200
    with session_scope() as s:
        for key in s.query(ApiKey).all():
            key.expires_at = utcnow() - timedelta(seconds=1)
    assert ui.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session_on_the_server_and_a_replayed_cookie_is_refused(ui):
    from sqlalchemy import func

    from atelier.core.db import session_scope
    from atelier.core.models import UiSession

    sign_in(ui, make_key(["read"]))
    cookie = ui.cookies.get("atelier_ui")
    assert cookie and "." not in cookie  # a random token: no key id, nothing to forge
    token = csrf_of(ui.get("/ui/jobs").text)
    out = ui.post("/ui/logout", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(UiSession)) == 0
    ui.cookies.clear()
    ui.cookies.set("atelier_ui", cookie, path="/ui")  # the stolen or saved cookie, replayed
    replay = ui.get("/ui/jobs", follow_redirects=False)
    assert replay.status_code == 303 and replay.headers["location"].startswith("/ui/login")


def test_behind_a_tls_proxy_sign_in_works_and_the_cookie_is_secure(ui, monkeypatch):
    from atelier.core.config import get_settings

    secret = make_key(["read"])
    proxied = {"Origin": "https://gallery.example", "X-Forwarded-Proto": "https"}
    proxied |= {"X-Forwarded-Host": "gallery.example"}
    untrusted = ui.post("/ui/login", data={"api_key": secret}, headers=proxied, follow_redirects=False)
    assert untrusted.status_code == 403  # the headers count only where the proxy is trusted
    monkeypatch.setenv("ATELIER_TRUST_FORWARDED_HEADERS", "true")
    get_settings.cache_clear()
    done = ui.post("/ui/login", data={"api_key": secret}, headers=proxied, follow_redirects=False)
    assert done.status_code == 303 and "; Secure" in done.headers["set-cookie"]
    plain = ui.post("/ui/login", data={"api_key": secret}, follow_redirects=False)
    assert plain.status_code == 303 and "Secure" not in plain.headers["set-cookie"]


def test_the_gallery_shows_a_key_only_its_own_jobs(ui, session):
    from atelier.core import jobs

    mine = jobs.create_job(session=session, kind="generate", params={}, total=1)
    theirs = jobs.create_job(session=session, kind="generate", params={}, total=1)
    trend = jobs.create_job(session=session, kind="trend", params={})
    session.commit()
    sign_in(ui, make_key(["read"], owns=mine.id))
    listing = ui.get("/ui/jobs").text
    assert f"/ui/jobs/{mine.id}" in listing and theirs.id not in listing
    for path in (
        f"/ui/jobs/{theirs.id}",
        f"/ui/jobs/{theirs.id}/images",
        f"/ui/jobs/{theirs.id}/images/0",
        f"/ui/thumbs/{theirs.id}/0",
        f"/ui/jobs/{theirs.id}/manifest",
        f"/ui/jobs/{theirs.id}/archive",
        f"/ui/jobs/{theirs.id}/stream",
        f"/ui/trends/{trend.id}",
    ):
        assert ui.get(path, follow_redirects=False).status_code == 404, path
    assert trend.id not in ui.get("/ui/trends").text
    assert ui.get(f"/ui/jobs/{mine.id}").status_code == 200


def test_a_job_of_100000_images_pages_by_cursor_and_filters_without_loading_all(ui, session):
    from atelier.core import jobs
    from atelier.core.models import GeneratedImage, utcnow
    from atelier.core.models.base import UTCDateTime

    cats = [("dress", 60_000), ("hat", 40_000)]
    job = jobs.create_job(
        session=session, kind="generate", params={"per_category": [list(c) for c in cats]}, total=N
    )
    job.status, job.progress_done = "succeeded", N
    session.flush()
    # 100,000 rows made by the database itself (a recursive CTE): no 100,000 Python objects here either
    n = select(literal(0).label("i")).cte("n", recursive=True)
    n = n.union_all(select(n.c.i + 1).where(n.c.i < N - 1))
    columns = ["job_id", "index", "seed", "category", "key", "sha256", "format", "width", "height"]
    rows = select(
        literal(job.id),
        n.c.i,
        n.c.i + 7,
        case((n.c.i < 60_000, "dress"), else_="hat"),
        literal(f"generated/{job.id}/") + cast(n.c.i, String) + literal(".png"),
        literal("0" * 64),
        literal("png"),
        literal(64),
        literal(64),
    )
    session.execute(
        insert(GeneratedImage).from_select(
            [*columns, "size_bytes", "created_at"],
            rows.add_columns(literal(900), literal(utcnow(), UTCDateTime())),
        )
    )
    session.commit()
    sign_in(ui, make_key(["read"], owns=job.id))

    def indices(html: str) -> list[int]:
        return [int(i) for i in re.findall(rf'src="/ui/thumbs/{job.id}/(\d+)"', html)]

    first = ui.get(f"/ui/jobs/{job.id}/images")
    assert indices(first.text) == list(range(60))
    assert f"cursor={encode_cursor(59)}" in first.text
    deep = ui.get(f"/ui/jobs/{job.id}/images", params={"cursor": encode_cursor(N - 31)})
    assert indices(deep.text) == list(range(N - 30, N))
    assert 'rel="next"' not in deep.text, "the last page has no next page"
    hats = ui.get(f"/ui/jobs/{job.id}/images", params={"category": "hat", "cursor": encode_cursor(59990)})
    assert indices(hats.text) == list(range(60_000, 60_060))
    assert f"cursor={encode_cursor(60059)}" in hats.text
    assert len(first.content) < 40_000, "a page of 60 thumbnails is links, not images"
    bad = ui.get(f"/ui/jobs/{job.id}/images", params={"cursor": "x" * 13})
    assert bad.status_code == 422 and "cursor" in bad.text


def test_thumbnails_are_small_webp_files_not_the_originals():
    from atelier.api.ui.thumbs import make_thumbnail, thumb_key

    original = io.BytesIO()
    Image.effect_mandelbrot((512, 512), (-2, -1.5, 1, 1.5), 100).convert("RGB").save(original, "PNG")
    thumb = make_thumbnail(original.getvalue(), 160)
    with Image.open(io.BytesIO(thumb)) as img:
        assert img.format == "WEBP" and max(img.size) == 160
    assert len(thumb) < len(original.getvalue()) / 5
    assert thumb_key("j1", 42, 160) == "thumbs/j1/42-160.webp"
