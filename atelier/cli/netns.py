"""Test hosts on one machine: Linux network namespaces joined by veth pairs to a bridge (root only).

    root namespace: bridge BR, ADDR = 10.A.B.1/24        <- the control plane binds ADDR
      ├─ veth r0 ══ n0 in namespace H0, 10.A.B.2/24      <- worker host 0 (hostname set with unshare)
      └─ veth r1 ══ n1 in namespace H1, 10.A.B.3/24      <- worker host 1

`cut(i)` takes host i's link down (`ip link set r_i down`): its packets go nowhere, as when a host's
cable or switch port fails; `restore(i)` brings it back. Every name carries a random tag, so runs
side by side never meet, and `close()` removes all of it (also after a failure).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess


def unavailable() -> str | None:
    """Why namespace hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "`ip` (iproute2) and `unshare` (util-linux) are needed"
    probe = f"atp{secrets.token_hex(3)}"
    try:
        subprocess.run(["ip", "netns", "add", probe], check=True, capture_output=True, timeout=10)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"`ip netns add` failed: {exc}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10).stdout


class NetHosts:
    def __init__(self, count: int):
        self.tag = secrets.token_hex(3)
        n = int(self.tag, 16)
        self.subnet = f"10.{200 + n % 50}.{(n >> 8) % 256}"
        self.address = f"{self.subnet}.1"  # the control host's address on the bridge
        self.bridge = f"atb{self.tag}"
        self.namespaces = [f"ath{self.tag}{i}" for i in range(count)]
        self.root_links = [f"atr{self.tag}{i}" for i in range(count)]
        self.made: list[tuple[str, str]] = []
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def host_address(self, i: int) -> str:
        return f"{self.subnet}.{i + 2}"

    def _make(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self.made.append(("link", self.bridge))
        _ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, (ns, root) in enumerate(zip(self.namespaces, self.root_links, strict=True)):
            inner = f"atn{self.tag}{i}"
            _ip("netns", "add", ns)
            self.made.append(("netns", ns))
            _ip("link", "add", root, "type", "veth", "peer", "name", inner)
            self.made.append(("link", root))
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", root, "master", self.bridge)
            _ip("link", "set", root, "up")
            _ip("-n", ns, "addr", "add", f"{self.host_address(i)}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def argv(self, i: int, hostname: str, command: list[str]) -> list[str]:
        """`command` run on host i: in its namespace, under its own hostname (a UTS namespace)."""
        inner = " ".join(_quote(a) for a in command)
        return ["ip", "netns", "exec", self.namespaces[i], "unshare", "--uts", "sh", "-c",
                f"hostname {_quote(hostname)} && exec {inner}"]  # fmt: skip

    def pids(self, i: int) -> list[int]:
        """The processes on host i: everything in its network namespace, whatever session each runs in."""
        return [int(p) for p in _ip("netns", "pids", self.namespaces[i]).split()]

    def cut(self, i: int) -> None:
        _ip("link", "set", self.root_links[i], "down")

    def restore(self, i: int) -> None:
        _ip("link", "set", self.root_links[i], "up")

    def close(self) -> None:
        for kind, name in reversed(self.made):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                if kind == "netns":
                    _ip("netns", "del", name)
                else:
                    _ip("link", "del", name)
        self.made.clear()

    def __enter__(self) -> NetHosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
