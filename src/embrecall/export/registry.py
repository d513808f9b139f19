"""Published versions: which bundle is active, and the ones before it for rollback.

The registry is a folder of bundles with an ``ACTIVE`` JSON file naming the active version and
the history of earlier ones.  ``ACTIVE`` is replaced atomically (write + rename), so a crash at
any moment leaves exactly one complete active version.  A version is published only if its
offline metrics pass the gate.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from embrecall.errors import BundleError, ConfigError
from embrecall.export.bundle import Bundle

__all__ = ["Registry", "Gate", "parse_gate"]

_GATE = re.compile(r"^\s*(?:(\w+)\.)?([\w@]+)\s*(>=|<=|>|<)\s*([0-9.eE+-]+)\s*$")


@dataclass(frozen=True)
class Gate:
    """``channel.metric op value``, e.g. ``two_tower.HR@10 >= 0.15`` (channel defaults to two_tower)."""

    channel: str
    metric: str
    op: str
    value: float

    def check(self, metrics: dict) -> str | None:
        """None when passed, else why not."""
        got = metrics.get(self.channel, {}).get(self.metric)
        if got is None:
            return f"{self.channel}.{self.metric} is not in the bundle's metrics"
        ok = {">=": got >= self.value, "<=": got <= self.value, ">": got > self.value, "<": got < self.value}[self.op]
        return None if ok else f"{self.channel}.{self.metric} = {got:.4f}, gate needs {self.op} {self.value}"


def parse_gate(text: str) -> Gate:
    m = _GATE.match(text)
    if not m:
        raise ConfigError(f"gate {text!r} is not of the form [channel.]metric >= value, e.g. 'HR@10>=0.15'")
    return Gate(m.group(1) or "two_tower", m.group(2), m.group(3), float(m.group(4)))


class Registry:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.pointer = self.root / "ACTIVE"

    def state(self) -> dict:
        if not self.pointer.is_file():
            return {"active": None, "history": []}
        return json.loads(self.pointer.read_text())

    def active(self) -> Path | None:
        v = self.state()["active"]
        return self.root / v if v else None

    def _write(self, state: dict) -> None:
        tmp = self.root / f".ACTIVE.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(state))
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.pointer)

    def publish(self, bundle_dir: Path | str, gates: list[Gate] = ()) -> str:
        """Make a bundle the active version (copied into the registry if it lives elsewhere)."""
        manifest = Bundle.manifest_of(bundle_dir)  # every file checked against its hash; nothing loaded
        version = str(manifest["version"])
        failed = [why for g in gates if (why := g.check(manifest.get("metrics", {})))]
        if failed:
            raise BundleError(f"version {version} not published: " + "; ".join(failed))
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / version
        if Path(bundle_dir).resolve() != target.resolve():
            if not target.exists():
                tmp = self.root / f".tmp-publish-{version}"
                shutil.rmtree(tmp, ignore_errors=True)  # left by a publish killed while copying
                shutil.copytree(bundle_dir, tmp)
                os.replace(tmp, target)
        state = self.state()
        if state["active"] and state["active"] != version:
            state["history"].append(state["active"])
        state["active"] = version
        self._write(state)
        return version

    def rollback(self) -> str:
        """Re-activate the previous version."""
        state = self.state()
        if not state["history"]:
            raise BundleError(f"nothing to roll back to in {self.root}: no earlier published version")
        state["active"] = state["history"].pop()
        self._write(state)
        return state["active"]
