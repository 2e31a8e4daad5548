"""The /ui gallery in headless Chromium (Debian's `chromium`, driven by Playwright; no browser is ever
downloaded), on an embedded stack of its own, as a new user of `atelier up` would use it: sign in
with the admin key, submit 500 designs from the form, watch the job finish live, page through the
thumbnails, filter to one category, open one image, ask for variations, and promote a model.

Each page is saved as a screenshot under test-artifacts/ui/ (gitignored), with the bytes that the
first thumbnail page cost the browser in thumbnail-page.json.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from atelier.cli.stack import Stack

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
CATS = ["dress", "hat", "pants"]
COUNTS = {"dress": 200, "hat": 150, "pants": 150}


@pytest.fixture(scope="module")
def gallery_stack(tmp_path_factory) -> Iterator[Stack]:  # noqa: ANN001
    # no beat: nothing here waits on the reconciler or a schedule, and one process fewer starts faster
    stack = Stack(tmp_path_factory.mktemp("gallery"), with_beat=False, extra_env={"OMP_NUM_THREADS": "1"})
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def model_id(gallery_stack: Stack) -> str:
    """A tiny 16 px conditional GAN, ten steps, registered the way a finished training job would."""
    from atelier.core.storage import ObjectStore
    from atelier.gan.data import prepare_images
    from atelier.gan.training import checkpoint_to_bytes, new_state, state_to_checkpoint, train
    from atelier.training import registry
    from tests.unit.gan.conftest import make_catalogue, tiny_config

    state = new_state(tiny_config(num_classes=3), CATS, seed=0)
    train(state, prepare_images(make_catalogue(24), resolution=16), steps=10)
    return registry.register_checkpoint(
        ObjectStore(gallery_stack.settings), checkpoint_to_bytes(state_to_checkpoint(state)),
        database_url=gallery_stack.env["ATELIER_DATABASE_URL"],
        arch="atelier", preset="tiny", resolution=16, class_names=CATS, steps=10,
        metrics={"kid": 0.25, "gan_test_accuracy": 0.5},
    )  # fmt: skip


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium (.ci/run does: apt-get install -y chromium)"
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def grid_loaded(page) -> None:  # noqa: ANN001
    """Every thumbnail of the grid has arrived (each first view makes its thumbnail in the API).

    Up to 2 minutes, not the page's 30 s: a page of 60 first views decodes and resizes 60 images on the
    API's CPU, which a test training a GAN on the other xdist worker of a 2-core machine shares (30 s
    ran out that way once on a 2-core AVX2-only CPU)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('ul.grid img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=120_000,
    )


def shot(page, name: str) -> None:  # noqa: ANN001
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.mark.timeout(600)  # about a minute on an idle 2-core machine; generous for a shared one
def test_a_designer_signs_in_generates_pages_filters_opens_and_promotes(gallery_stack, model_id, browser):
    base = gallery_stack.api_url
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Signing in: the gallery sends a stranger to the sign-in page, and a wrong key is told so.
    page.goto(f"{base}/ui/jobs")
    assert page.url.startswith(f"{base}/ui/login")
    page.fill("input[name=api_key]", "atl_not-a-key")
    page.click("button[type=submit]")
    assert "unknown or revoked API key" in page.inner_text(".error")
    shot(page, "01-login")
    page.fill("input[name=api_key]", gallery_stack.admin_key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/ui/jobs")
    cookie = next(c for c in context.cookies() if c["name"] == "atelier_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert gallery_stack.admin_key not in cookie["value"]

    # Submitting 500 designs from the form.
    page.goto(f"{base}/ui/generate?model={model_id}")
    for cat, n in COUNTS.items():
        page.fill(f"input[name=n_{cat}]", str(n))
    page.fill("input[name=seed]", "7")
    page.select_option("select[name=format]", "jpeg")
    page.fill("input[name=size]", "256")
    shot(page, "02-generate-form")
    page.click("form.generate button[type=submit]")
    page.wait_for_url(f"{base}/ui/jobs/*")
    job_id = page.url.rsplit("/", 1)[-1]

    # Watching it finish over the event stream: the page updates itself, then shows the results.
    page.wait_for_selector("#job [data-field=status].succeeded", timeout=120_000)
    assert page.inner_text("[data-field=count]") == "500/500"
    assert page.is_visible("text=Manifest (JSONL)")
    shot(page, "03-job-succeeded")
    page.goto(f"{base}/ui/jobs")
    assert job_id in page.inner_text("table.jobs")
    shot(page, "04-jobs")
    # The GPU worker counted its chunks on its own metrics port (prefork children, multiprocess mode).
    scraped = httpx.get(gallery_stack.metrics_urls()["worker-gpu"], timeout=10).text
    done = [
        s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
        if s.name == "atelier_worker_tasks_total"
        and s.labels == {"task": "atelier.generate_chunk", "state": "SUCCESS"}
    ]
    assert done and done[0] >= 2, scraped[-2000:]

    # Paging through thumbnails: small derived images, not the 256 px files scaled by the browser.
    sizes: dict[str, int] = {}
    page.on(
        "response",
        lambda r: (
            sizes.__setitem__(r.url, len(r.body())) if r.status == 200 and "/thumbs/" in r.url else None
        ),
    )
    first = page.goto(f"{base}/ui/jobs/{job_id}/images")
    grid_loaded(page)
    thumbs = page.locator("ul.grid img")
    assert thumbs.count() == 60
    widths = page.eval_on_selector_all(
        "ul.grid img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)"
    )
    assert all(0 < w <= 160 for w in widths), widths
    html_bytes = len(first.body())
    thumb_bytes = sum(sizes.values())
    originals = httpx.get(
        f"{base}/v1/jobs/{job_id}/images",
        params={"limit": 60},
        headers={"Authorization": f"Bearer {gallery_stack.admin_key}"},
    ).json()["items"]
    original_bytes = sum(i["size_bytes"] for i in originals)
    assert len(sizes) == 60 and thumb_bytes < original_bytes / 2, (thumb_bytes, original_bytes)
    (ARTIFACTS / "thumbnail-page.json").write_text(
        json.dumps(
            {"html_bytes": html_bytes, "thumbnails": len(sizes), "thumbnail_bytes": thumb_bytes,
             "original_bytes_of_the_same_60": original_bytes}
        ) + "\n"
    )  # fmt: skip
    shot(page, "05-images-page-1")
    with page.expect_navigation():
        page.click("a[rel=next]")
    grid_loaded(page)
    assert page.locator("ul.grid li span").first.inner_text() == "dress #60"
    shot(page, "06-images-page-2")

    # Filtering to one category: every thumbnail is a hat, in index order from the first hat.
    page.select_option("select[name=category]", "hat")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    grid_loaded(page)
    cats = page.eval_on_selector_all("ul.grid img", "imgs => imgs.map(i => i.dataset.category)")
    assert cats == ["hat"] * 60
    assert page.locator("ul.grid li span").first.inner_text() == "hat #200"
    shot(page, "07-images-hats")

    # Opening one: the full-size file, its provenance and a download link.
    with page.expect_navigation():
        page.locator("ul.grid a").nth(3).click()
    page.wait_for_function("() => document.querySelector('figure.full img').complete")
    facts = page.inner_text("dl.facts")
    assert "hat" in facts and "203" in facts and str(7 + 203) in facts and model_id in facts
    assert page.eval_on_selector("figure.full img", "i => i.naturalWidth") == 256
    assert "response-content-disposition" in page.get_attribute("a[download]", "href")
    shot(page, "08-image")

    # "Variations of this" queues a job of variations of that very image.
    page.click("text=Make variations")
    page.wait_for_url(f"{base}/ui/jobs/*")
    assert page.url.rsplit("/", 1)[-1] != job_id
    page.wait_for_selector("#job [data-field=status].succeeded", timeout=120_000)
    assert page.inner_text("[data-field=count]") == "8/8"
    shot(page, "09-variations-job")

    # Promoting the model (admins only), then the other pages.
    page.goto(f"{base}/ui/models/{model_id}")
    assert page.locator(".badge").count() == 0
    page.click("text=Promote to production")
    page.wait_for_url(f"{base}/ui/models/{model_id}")
    assert page.inner_text("h1 .badge") == "production"
    shot(page, "10-model-promoted")
    for name in ("models", "schedules", "catalogue"):
        page.goto(f"{base}/ui/{name}")
        assert page.locator("h1").count() == 1
        shot(page, f"11-{name}")

    # A form posted without its CSRF token is refused, even with the session cookie.
    refused = page.request.post(f"{base}/ui/models/{model_id}/promote", form={"csrf": "forged"})
    assert refused.status == 403 and "CSRF" in refused.text()
    assert not errors, f"JavaScript errors: {errors}"
    context.close()
