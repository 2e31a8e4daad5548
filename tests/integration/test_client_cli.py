"""The `atelier` client commands against the real stack, as a script author sees them: stdout is
clean JSON (progress goes to stderr), errors are one line without a traceback, and downloads resume."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest
from click.testing import CliRunner

from atelier.cli.client import Client
from atelier.cli.generation_cmds import download_job
from atelier.cli.main import cli, main
from tests.integration.test_generation import model  # noqa: F401 - the tiny 16 px model fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def run(stack, monkeypatch):  # noqa: ANN001, ANN201
    monkeypatch.setenv("ATELIER_API_URL", stack.api_url)
    monkeypatch.setenv("ATELIER_API_KEY", stack.admin_key)
    runner = CliRunner()

    def invoke(*args: str):  # noqa: ANN202
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        return result

    return invoke


def test_generate_wait_prints_only_json_on_stdout_and_jobs_commands_work(run, model, stack, tmp_path):  # noqa: F811
    result = run("submit", "generate", "--model", model, "--count", "30", "--seed", "3", "--wait")
    assert result.exit_code == 0, result.stderr
    job = json.loads(result.stdout)  # `| jq .status` sees exactly this
    assert job["status"] == "succeeded" and job["progress"]["done"] == 30
    assert f"generate {job['id']}: succeeded 30/30" in result.stderr

    listed = json.loads(run("jobs", "list", "--kind", "generate", "--limit", "500").stdout)
    assert job["id"] in [j["id"] for j in listed] and all(j["kind"] == "generate" for j in listed)
    events = [json.loads(line) for line in run("jobs", "events", job["id"]).stdout.splitlines()]
    assert events[0]["kind"] == "created" and events[-1]["kind"] == "succeeded"

    # Downloads resume: a half-written file is completed with a Range request and verified.
    with Client(stack.api_url, stack.admin_key) as client:
        first = download_job(client, job["id"], tmp_path)
        assert first["downloaded"] == 30 and first["failed"] == 0
        image = next(client.images(job["id"]))
        path = tmp_path / image["key"].rsplit("/", 1)[-1]
        whole = path.read_bytes()
        path.unlink()
        path.with_name(path.name + ".part").write_bytes(whole[: len(whole) // 2])
        again = download_job(client, job["id"], tmp_path)
    assert (again["downloaded"], again["skipped"]) == (1, 29)
    assert again["bytes"] == len(whole) - len(whole) // 2, "only the missing half was fetched"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == image["sha256"]


def test_a_4xx_is_one_line_on_stderr_without_a_traceback(stack, monkeypatch, capsys):
    monkeypatch.setenv("ATELIER_API_URL", stack.api_url)
    monkeypatch.setenv("ATELIER_API_KEY", stack.admin_key)
    for argv, code in [
        (["jobs", "cancel", "no-such-job"], "404"),
        (["submit", "generate", "--count", "0"], "422"),
    ]:
        monkeypatch.setattr(sys, "argv", ["atelier", *argv])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        assert exit_info.value.code == 1 and out == ""
        assert err.startswith("error: ") and code in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
