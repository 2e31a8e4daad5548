"""A training segment across two hosts: two network namespaces joined by a veth pair, one rank each.

    netns <ctl>  10.R.S.1/30 (veth <a>)  ── veth ──  (veth <b>) 10.R.S.2/30  netns <gpu>
    `atelier gan train --nnodes 2 --node-rank 0`          `atelier gan train --nnodes 2 --node-rank 1`
    rank 0: data, TCP store on 10.R.S.1:P, checkpoint      rank 1: no data, no files but its log

The control host serves the torchrun-style rendezvous (master_addr = its veth address); the other host
has nothing but the code: it gets the settings, the weights and the data from rank 0 over the group,
and each step's gradient all-reduce crosses the veth (its byte counters show it). Needs root and
`ip netns` (as in CI); elsewhere it skips, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

STEPS = 6
PG_TIMEOUT_S = "60"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _counter(ns: str, dev: str, name: str) -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/statistics/{name}"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout)


@pytest.fixture
def two_hosts():
    """Two namespaces and a veth pair between them, with unique names; all of it deleted afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2's `ip netns` to make the two hosts")
    tag = uuid.uuid4().hex[:6]
    ctl, gpu = f"atl-ctl-{tag}", f"atl-gpu-{tag}"
    a, b = f"vtc{tag}", f"vtg{tag}"  # interface names: 15 characters at most
    net = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
    made: list[str] = []
    try:
        for ns in (ctl, gpu):
            try:
                _ip("netns", "add", ns)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"`ip netns add` refused here: {exc.stderr.strip()}")
            made.append(ns)
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        _ip("link", "set", a, "netns", ctl)
        _ip("link", "set", b, "netns", gpu)
        for ns, dev, addr in ((ctl, a, f"{net}.1"), (gpu, b, f"{net}.2")):
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield {"ctl": (ctl, a, f"{net}.1"), "gpu": (gpu, b, f"{net}.2")}
    finally:
        for ns in made:  # deleting a namespace deletes its end of the veth, and with it the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _catalogue(folder: Path) -> None:
    from atelier.catalogue.synthetic import make_catalogue

    for category, name, blob in make_catalogue(6, ("dress", "hat", "pants"), seed=3):
        (folder / category).mkdir(parents=True, exist_ok=True)
        (folder / category / name).write_bytes(blob)


def test_a_training_segment_spans_two_network_namespace_hosts(two_hosts, tmp_path):
    from atelier.gan.training import checkpoint_from_bytes

    ctl, a, master = two_hosts["ctl"]
    gpu, b, _ = two_hosts["gpu"]
    data, out = tmp_path / "catalogue", tmp_path / "run"
    _catalogue(data)
    atelier = str(Path(sys.executable).with_name("atelier"))
    port = "29517"
    common = ["--nproc", "1", "--nnodes", "2", "--master-addr", master, "--master-port", port]
    common += ["--device", "cpu"]
    small = ["--set", "channel_base=256", "--set", "channel_max=32", "--set", "z_dim=16", "--set", "w_dim=32"]
    tx_before = _counter(ctl, a, "tx_bytes")
    procs: list[subprocess.Popen] = []
    started = time.monotonic()
    try:
        for ns, dev, args in (
            (
                ctl,
                a,
                ["--node-rank", "0", "--data", str(data), "--out", str(out), "--resolution", "16"]
                + ["--steps", str(STEPS), "--set", "batch_size=8", "--no-sweep", "--checkpoint-every", "2"]
                + small,
            ),
            (gpu, b, ["--node-rank", "1"]),
        ):
            # each host's ranks talk over its veth, never its own loopback
            env = {**os.environ, "GLOO_SOCKET_IFNAME": dev}
            procs.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", ns, atelier, "gan", "train", *common, *args],
                    env=env,
                    cwd=tmp_path,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=10)
    seconds = time.monotonic() - started
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    node0 = json.loads(outputs[0][0].strip().splitlines()[-1])
    node1 = json.loads(outputs[1][0].strip().splitlines()[-1])
    assert node0["step"] == STEPS and node0["ranks"] == 2
    assert node1["node_rank"] == 1 and node1["ranks"] == [1]
    assert checkpoint_from_bytes((out / "checkpoint.pt").read_bytes())["step"] == STEPS
    rank1_log = (Path(node1["workdir"]) / "rank-1.log").read_text()
    shutil.rmtree(node1["workdir"], ignore_errors=True)  # the other host's temp folder: only its log
    assert "rank 1 of 2" in rank1_log
    sent = _counter(ctl, a, "tx_bytes") - tx_before
    dataset_bytes = 18 * 3 * 16 * 16  # at least the prepared images went to the other host
    assert sent > dataset_bytes
    print(
        json.dumps(
            {
                "hosts": {ctl: f"{master} ({a})", gpu: f"{two_hosts['gpu'][2]} ({b})"},
                "master": f"{master}:{port}",
                "node0": node0,
                "node1": node1,
                "ctl_veth_tx_bytes": sent,
                "ctl_veth_rx_bytes": _counter(ctl, a, "rx_bytes"),
                "seconds": round(seconds, 1),
            }
        )
    )
