"""The short chaos run: small batches through worker kills, S3 hung, crashed and down, and a locked
SQLite file, on a stack of its own (faults restart services, which other tests must not meet).
`atelier bench chaos` is the full run."""

import json

import pytest

from atelier.cli.bench.chaos import Options, run_chaos

pytestmark = pytest.mark.integration

# s3-down-long is s3-down for longer: the full run (`atelier bench chaos`) covers it. The broker's
# short hang and restart is the one that left every worker without its queue consumer (3 runs of 3)
# until atelier/workers/consumer_watchdog.py restarted them.
SHORT_FAULTS = ["worker-kill", "s3-hang", "s3-crash", "s3-down", "broker-hang", "sqlite-lock"]
BIG_SUBMIT = 2_000  # submitted while the broker hangs


@pytest.fixture
def chaos_stack(tmp_path_factory):  # noqa: ANN001, ANN201
    from tests.conftest import new_database_url
    from tests.integration.conftest import running_stack

    data_dir = tmp_path_factory.mktemp("chaos")
    with running_stack(data_dir, new_database_url("sqlite", data_dir, None)) as s:
        yield s


@pytest.mark.timeout(900)  # ~4 min on a quiet machine; a shared one can be several times slower
def test_short_chaos_run_loses_and_doubles_no_image(chaos_stack):
    opts = Options(
        images=120, kills=2, s3_hang_seconds=5, s3_down_seconds=8, sqlite_lock_seconds=5,
        broker_hang_seconds=5, big_submit=BIG_SUBMIT, job_timeout=180, resolution=16, training=False,
    )  # fmt: skip
    result = run_chaos(SHORT_FAULTS, opts, stack=chaos_stack)
    try:
        check_rows(result)
    except AssertionError:
        # what the services said is the only trace of a fault that left work waiting: keep it
        print(warnings_logged(chaos_stack.data_dir / "logs"))
        raise


def check_rows(result: dict) -> None:
    rows = {row["fault"]: row for row in result["faults"]}
    assert list(rows) == SHORT_FAULTS
    for fault, row in rows.items():
        expected = 120 + (BIG_SUBMIT if fault == "broker-hang" else 0)
        assert "error" not in row, (fault, row)
        assert row["jobs"] == {"succeeded": 2 if fault == "broker-hang" else 1}, (fault, row)
        assert row["images_expected"] == expected and row["listed"] == expected, (fault, row)
        assert row["lost"] == 0 and row["unfinished"] == 0 and row["doubled"] == 0, (fault, row)
        # polling kept answering while the fault lasted
        assert row["polls_during_fault"] > 0 and row["failed_polls_during_fault"] == {}, (fault, row)
        assert row["worst_poll_ms"] < 5000, (fault, row)
    # the submit made while the broker hung was answered at once (the rows first, the send later)
    assert rows["broker-hang"]["big_submit_error"] is None
    assert rows["broker-hang"]["big_submit_ms"] < 5000, rows["broker-hang"]


def warnings_logged(logs_dir, per_file: int = 30) -> str:  # noqa: ANN001
    """The last warning and error lines of each service log (JSON lines; other lines are kept whole)."""
    out = []
    for path in sorted(logs_dir.glob("*.log")):
        lines = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                level = json.loads(line).get("level")
            except ValueError:
                level = "text"
            if level in ("warning", "error", "critical", "text"):
                lines.append(line[:400])
        out += [f"== {path.name}", *lines[-per_file:]]
    return "\n".join(out)
