"""Try-on previews against real SQL and S3: the request's database connection is back in the pool before
the S3 GET and the rendering, so a slow S3 or a large render never holds one of the API's few
connections (ATELIER_DB_POOL_SIZE). A probe store (the real S3 client underneath) and a probe around
the renderer look at the session and the engine's pool while they run."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from atelier.catalogue.synthetic import draw_garment

pytestmark = pytest.mark.integration


def _generated_image(stack, *, stored_template: str | None) -> str:  # noqa: ANN001
    """A finished generation job with one image (and, if asked, its stored try-on preview)."""
    from atelier.core import jobs
    from atelier.core.db import session_scope
    from atelier.core.models import GeneratedImage
    from atelier.core.storage import ObjectStore
    from atelier.generation.postprocess import encode
    from atelier.tryon import renderer

    store = ObjectStore(stack.settings)
    data = encode(draw_garment("dress", random.Random(5), 128), "png", provenance={"seed": 5})
    postprocess = [{"op": "tryon", "template": stored_template}] if stored_template else []
    with session_scope(stack.settings.database_url) as session:
        job = jobs.create_job(session=session, kind="generate", params={"postprocess": postprocess}, total=1)
        job.status = jobs.SUCCEEDED
        key = f"generated/{job.id}/0.png"
        store.put(key, data, content_type="image/png")
        tryon_key = None
        if stored_template:
            tryon_key = f"generated/{job.id}/tryon/000000-{stored_template}.png"
            preview = renderer.preview(data, category="dress", template=stored_template, provenance={})
            store.put(tryon_key, preview, content_type="image/png")
        row = dict(job_id=job.id, index=0, seed=5, category="dress", key=key, sha256="0" * 64, format="png")
        session.add(GeneratedImage(**row, width=128, height=128, size_bytes=len(data), tryon_key=tryon_key))
        return job.id


def _watched_preview(stack, job_id: str, template: str | None, monkeypatch) -> list:  # noqa: ANN001
    """Serve the preview through the route's own function with a session like the API's (read-only)
    and record, at each S3 GET and at the rendering, whether the session is in a transaction and how
    many connections the engine's pool has checked out."""
    from atelier.core.db import get_engine, session_factory
    from atelier.core.storage import ObjectStore
    from atelier.tryon import routes

    url = stack.settings.database_url
    pool = get_engine(url).pool
    session = session_factory(url, readonly=True)()
    seen: list[tuple[str, bool, int]] = []

    class Probe(ObjectStore):
        def get(self, key):  # noqa: ANN001, ANN201
            seen.append((f"GET {key}", session.in_transaction(), pool.checkedout()))
            return super().get(key)

    real_preview = routes.tryon.preview

    def preview(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(("render", session.in_transaction(), pool.checkedout()))
        return real_preview(*args, **kwargs)

    monkeypatch.setattr(routes.tryon, "preview", preview)
    admin = SimpleNamespace(id="probe", scopes=["admin"])
    try:
        response = routes.tryon_preview(
            job_id, 0, key=admin, session=session, store=Probe(stack.settings), template=template
        )
    finally:
        session.close()
    assert response.status_code == 200 and response.body[:8] == b"\x89PNG\r\n\x1a\n"
    return seen


def test_a_rendered_preview_holds_no_connection_during_s3_and_rendering(bare_stack_db, monkeypatch):
    job_id = _generated_image(bare_stack_db, stored_template=None)
    seen = _watched_preview(bare_stack_db, job_id, "curvy-s", monkeypatch)
    assert [what for what, _, _ in seen] == [f"GET generated/{job_id}/0.png", "render"], seen
    for what, in_transaction, checked_out in seen:
        assert not in_transaction, f"the request's transaction was open during {what}"
        assert checked_out == 0, f"{checked_out} connection(s) checked out during {what}"


def test_a_stored_preview_holds_no_connection_during_its_s3_get(bare_stack_db, monkeypatch):
    job_id = _generated_image(bare_stack_db, stored_template="slim-s")
    seen = _watched_preview(bare_stack_db, job_id, None, monkeypatch)
    assert [what for what, _, _ in seen] == [f"GET generated/{job_id}/tryon/000000-slim-s.png"], seen
    _, in_transaction, checked_out = seen[0]
    assert not in_transaction and checked_out == 0, seen
