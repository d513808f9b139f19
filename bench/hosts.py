"""Two hosts on this machine: Linux network namespaces joined by a veth pair (needs root and iproute2).

Each host has its own network stack (its own loopback, its own address on a /24 of 10.77.x.0), so
a process in one reaches the other only over the veth link, as two machines on one network do;
the file system stays shared, as a shared data folder between machines would be.  Used by the
two-host torchrun test and `bench/distributed.py --hosts`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Host", "on_this_host", "torchrun_across", "two_hosts", "why_no_hosts"]


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str
    interface: str  # the veth end inside the namespace (gloo's GLOO_SOCKET_IFNAME)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run on this host."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def sent_bytes(self) -> int:
        """Bytes this host has sent over its link."""
        shown = subprocess.run(
            ["ip", "-n", self.namespace, "-j", "-s", "link", "show", "dev", self.interface],
            check=True,
            capture_output=True,
            text=True,
        )
        return int(json.loads(shown.stdout)[0]["stats64"]["tx"]["bytes"])


def why_no_hosts() -> str | None:
    """Why two hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "making network namespaces (ip netns) needs root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"embrecall-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode:
        return f"`ip netns add` failed here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def two_hosts() -> Iterator[tuple[Host, Host]]:
    """Two hosts joined by one link, removed (with their link) on leaving."""
    tag = os.getpid() % 100_000  # names unique per process; interface names stay within 15 characters
    subnet = f"10.77.{tag % 250}"
    a, b = (Host(f"embrecall-{n}{tag}", f"{subnet}.{i}", f"er{n}{tag}") for i, n in ((1, "a"), (2, "b")))
    made: list[str] = []
    linked = False
    try:
        for host in (a, b):
            _ip("netns", "add", host.namespace)
            made.append(host.namespace)
        _ip("link", "add", a.interface, "type", "veth", "peer", "name", b.interface)
        linked = True
        for host in (a, b):
            _ip("link", "set", host.interface, "netns", host.namespace)
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", host.interface)
            _ip("-n", host.namespace, "link", "set", host.interface, "up")
            _ip("-n", host.namespace, "link", "set", "lo", "up")
        yield a, b
    finally:
        if linked:  # still outside the namespaces when moving it failed
            subprocess.run(["ip", "link", "del", a.interface], capture_output=True)
        for namespace in made:  # deleting a namespace deletes the veth end in it, and so the pair
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def on_this_host(ranks: int) -> list[str]:
    """The start of a command that runs a script or ``-m module`` as ``ranks`` processes of this
    host: plain Python for one, a standalone torchrun node for more."""
    if ranks == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]


def torchrun_across(
    hosts: tuple[Host, ...], argv: list[str], env: dict[str, str], port: int = 29400, timeout_s: float = 600
) -> list[subprocess.CompletedProcess[str]]:
    """``python -m argv...`` under one torchrun node per host (one process each), the c10d
    rendezvous (TCP) on the first host's address; each node's result, once all have ended."""
    nodes = []
    for i, host in enumerate(hosts):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            str(len(hosts)),
            "--nproc-per-node",
            "1",
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            f"{hosts[0].address}:{port}",
            "--rdzv-id",
            "embrecall-hosts",
            "--rdzv-conf",
            f"is_host={int(i == 0)},join_timeout=120",  # one hostname for all namespaces: say who hosts
            "--local-addr",
            host.address,  # what the other hosts reach this one at (the shared hostname names neither)
            "-m",
            *argv,
        ]
        own = {**env, "GLOO_SOCKET_IFNAME": host.interface}  # gloo talks over the link, not loopback
        nodes.append(
            subprocess.Popen(host.command(cmd), env=own, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    results = []
    for node in nodes:
        try:
            out, err = node.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            node.kill()
            out, err = node.communicate()
        results.append(subprocess.CompletedProcess(node.args, node.returncode, out, err))
    return results
