"""The scale-out commands as a user meets them before anything starts: `atelier up --listen` refuses
SQLite, `atelier worker` refuses to start without the control host's settings, and the settings a
worker host is given name the listen address, a Redis password, an S3 key and the relayed database."""

from __future__ import annotations

import stat

from click.testing import CliRunner

from atelier.cli.main import cli
from atelier.cli.stack import ROLE_QUEUES, Stack
from atelier.cli.worker_cmds import WorkerHost


def test_listen_refuses_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("ATELIER_DATABASE_URL", raising=False)
    result = CliRunner().invoke(cli, ["up", "--data-dir", str(tmp_path), "--listen", "10.9.9.1"])
    assert result.exit_code == 2 and "SQLite file cannot be shared across hosts" in result.output
    monkeypatch.setenv("ATELIER_DATABASE_URL", f"sqlite:///{tmp_path}/x.db")
    result = CliRunner().invoke(cli, ["up", "--data-dir", str(tmp_path), "--listen", "10.9.9.1"])
    assert result.exit_code == 2 and "ATELIER_DATABASE_URL=postgresql" in result.output


def test_worker_needs_the_control_hosts_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("ATELIER_BROKER_URL", raising=False)
    monkeypatch.delenv("ATELIER_DATABASE_URL", raising=False)
    result = CliRunner().invoke(cli, ["worker", "--role", "gpu", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "ATELIER_BROKER_URL and ATELIER_DATABASE_URL must name the control host" in result.output
    result = CliRunner().invoke(cli, ["worker", "--role", "cpu"])
    assert result.exit_code == 2 and "'cpu' is not one of 'gpu', 'io', 'control'" in result.output


def test_a_listening_stack_gives_worker_hosts_its_address_and_secrets(tmp_path):
    stack = Stack(tmp_path, listen="10.9.9.1", database_url="postgresql+psycopg://u:pw@127.0.0.1:5432/a")
    env = stack.worker_env
    password = (tmp_path / "redis.password").read_text().strip()
    assert env["ATELIER_BROKER_URL"] == f"redis://:{password}@10.9.9.1:{stack.ports['redis']}/0"
    assert env["ATELIER_S3_ENDPOINT_URL"].startswith("http://10.9.9.1:")
    assert env["ATELIER_S3_SECRET_KEY"] == (tmp_path / "s3.secret").read_text().strip()
    # a loopback PostgreSQL is relayed on the listen address; its own credentials pass through
    assert env["ATELIER_DATABASE_URL"] == f"postgresql+psycopg://u:pw@10.9.9.1:{stack.ports['sql']}/a"
    for name in ("redis.password", "s3.secret"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    again = Stack(tmp_path, listen="10.9.9.1", database_url="postgresql+psycopg://u:pw@db.internal/a")
    assert again.redis_password == password  # kept across restarts
    assert again.worker_env["ATELIER_DATABASE_URL"] == "postgresql+psycopg://u:pw@db.internal/a"  # reachable


def test_a_loopback_stack_stays_on_loopback_without_passwords(tmp_path):
    stack = Stack(tmp_path)
    assert stack.broker_url == f"redis://127.0.0.1:{stack.ports['redis']}/0"
    assert not (tmp_path / "redis.password").exists() and "sql" not in stack.ports


def test_each_role_starts_only_its_queues(tmp_path):
    gpu = WorkerHost("gpu", tmp_path, gpus=2).specs()
    assert [name for name, _, _ in gpu] == ["worker-gpu-0", "worker-gpu-1"]
    assert [env for _, _, env in gpu] == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert all(argv[argv.index("-Q") + 1] == ROLE_QUEUES["gpu"] for _, argv, _ in gpu)
    control = WorkerHost("control", tmp_path).specs()
    assert [name for name, _, _ in control] == ["worker-control", "beat"]
    assert [name for name, _, _ in WorkerHost("control", tmp_path, with_beat=False).specs()] == [
        "worker-control"
    ]
    io = WorkerHost("io", tmp_path).specs()
    assert io[0][1][io[0][1].index("-Q") + 1] == "io"
