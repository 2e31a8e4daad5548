"""Start-up races: another process takes a port between free_port() choosing it and the child binding it."""

import json
import socket

import httpx
import pytest
import redis

from atelier.cli.stack import Stack

pytestmark = pytest.mark.integration


def test_stack_starts_on_new_ports_when_its_chosen_ports_are_taken(tmp_path):
    stack = Stack(tmp_path / "stack", workers=(), with_beat=False)
    chosen = {name: stack.ports[name] for name in ("redis", "s3.port", "api")}
    squatters = []
    for port in chosen.values():  # what the other process did: bind and listen, never answer
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen()
        squatters.append(sock)
    try:
        stack.start(timeout=60)
        try:
            for name, port in chosen.items():
                assert stack.ports[name] != port, name
            assert httpx.get(f"{stack.api_url}/healthz", timeout=5).status_code == 200
            assert redis.Redis(port=stack.ports["redis"], socket_timeout=5).ping()
            assert httpx.get(stack.s3_url, timeout=5).status_code < 500
            saved = json.loads((stack.data_dir / "stack.json").read_text())["ports"]
            assert saved == stack.ports  # a restart of the same data dir reuses the ports that worked
        finally:
            stack.stop()
    finally:
        for sock in squatters:
            sock.close()


def test_a_worker_whose_metrics_port_is_taken_is_started_again_on_a_new_one(tmp_path):
    stack = Stack(tmp_path / "stack", workers=("cpu",), with_beat=False, with_api=False)
    taken = stack.ports["metrics-worker-cpu"]
    squatter = socket.socket()  # another process bound it first and answers nothing
    squatter.bind(("127.0.0.1", taken))
    squatter.listen()
    try:
        stack.start(timeout=90)
        try:
            url = stack.metrics_urls()["worker-cpu"]
            assert stack.ports["metrics-worker-cpu"] != taken and url.endswith(
                f":{stack.ports['metrics-worker-cpu']}/metrics"
            )
            scraped = httpx.get(url, timeout=10)  # the worker's own exposition, no series before a task
            assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        finally:
            stack.stop()
    finally:
        squatter.close()


def _nice(pid: int) -> int:
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[16])


def test_batch_work_runs_below_the_api_on_shared_cores(stack):
    # the niceness is what keeps 200 pollers' p99 low while a batch encodes images on every core
    assert _nice(stack.children["api"].proc.pid) == 0
    assert _nice(stack.children["worker-control"].proc.pid) == 0
    for name in ("worker-gpu", "worker-cpu", "s3"):
        assert _nice(stack.children[name].proc.pid) == 10, name
