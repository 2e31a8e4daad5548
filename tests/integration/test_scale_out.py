"""Scale-out across a real network: one control host and two worker hosts in network namespaces
(veth pairs on a bridge), each worker host running `atelier worker --role gpu` under its own hostname
with the settings `atelier up --listen` prints. A batch is shared by both hosts; host a's link goes
down mid-batch and host b finishes it; the job ends `succeeded` with exactly its images (expected ==
listed == S3 keys == rows); the link comes back, host a rejoins (a later batch gets a share from it)
and the units it held at the cut stay finished by host b, whatever it wrote late.

The database is PostgreSQL when ATELIER_TEST_DATABASE_URL is set (reached from the namespaces through
the control host's relay, as a worker host would reach it), else one SQLite file that the namespaces
share through the filesystem: there the cut host keeps its file access, so its in-flight chunk comes
back through its S3 retries running out (ATELIER_INFRA_RETRY_SECONDS) rather than a stale heartbeat.
The full form with 10,000 images is `atelier bench scale --json`."""

from __future__ import annotations

import pytest

from atelier.cli.netns import unavailable
from tests.conftest import _backends, new_database_url

pytestmark = [pytest.mark.integration, pytest.mark.one_backend("postgresql")]  # the cut is real only there

IMAGES, CHUNK = 600, 40


@pytest.fixture(params=_backends())
def database_url(request, tmp_path, postgres):  # noqa: ANN001, ANN201
    return new_database_url(request.param, tmp_path, postgres)


def test_a_batch_across_two_hosts_survives_one_host_cut_off(tmp_path, database_url):
    if why := unavailable():
        pytest.skip(why)
    from atelier.cli.bench.scale import run_scale_out

    result = run_scale_out(
        tmp_path, images=IMAGES, chunk_size=CHUNK, database_url=database_url, measure_rates=False, timeout=180
    )
    print(result)
    cut, rejoin = result["cut"], result["rejoin"]
    a, b = result["hosts"]
    # both hosts made a real share before the cut, and b finished the job
    assert cut["status"] == "succeeded", cut
    assert cut["share"].get(a, 0) > 0 and cut["share"].get(b, 0) > 0, cut["share"]
    assert sum(cut["share"].values()) == IMAGES, cut["share"]
    assert cut["counts"] == {"listed": IMAGES, "unique_indexes": IMAGES, "s3_keys": IMAGES, "rows": IMAGES}
    assert cut["units_held_by_cut_host"], "host a held no unit at the cut"
    # host a rejoined: a later batch got a share from it
    assert rejoin["later_batch"]["status"] == "succeeded" and rejoin["later_batch"]["share"].get(a, 0) > 0
    # what host a still wrote after the link came back was fenced: its units stay finished by b, and the
    # cut job keeps exactly its images. On SQLite the cut host keeps its file access and its lease: a unit
    # whose images were in S3 before the cut is one commit from done, and host a may finish it itself.
    if not database_url.startswith("sqlite"):
        assert {"status": "succeeded", "host": b} in rejoin["held_units_now"], rejoin["held_units_now"]
    assert all(u["status"] == "succeeded" for u in rejoin["held_units_now"]), rejoin["held_units_now"]
    assert rejoin["cut_job_status"] == "succeeded"
    assert rejoin["cut_job_counts"] == cut["counts"]
