"""Published versions: which bundle is active, and the ones before it for rollback.

The registry is a folder of bundles with an ``ACTIVE`` JSON file naming the active version and
the history of earlier ones.  ``ACTIVE`` is replaced atomically (write + rename), so a crash at
any moment leaves exactly one complete active version.  A version is published only if its
offline metrics pass the gate and every part of it opens and runs.  Every name read from
``ACTIVE`` or a manifest is a plain version name resolved inside the registry, and a version's
folder must hold the manifest of that version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from embrecall.errors import BundleError, ConfigError
from embrecall.export.bundle import Bundle, plain_name

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
        """``{"active": name or None, "history": [names]}`` as ``ACTIVE`` holds it, every name checked."""
        if not self.pointer.is_file():
            return {"active": None, "history": []}
        try:
            state = json.loads(self.pointer.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BundleError(f"{self.pointer} is not UTF-8 JSON ({err}); restore it, or publish a version again") from None
        if not isinstance(state, dict) or not isinstance(state.get("history", []), list):
            raise BundleError(f"{self.pointer} must be an object like {{\"active\": \"<version>\", \"history\": []}}, "
                              f"got {str(state)[:80]!r}; restore it, or publish a version again")
        active = state.get("active")
        history = [plain_name(v, "version", self.pointer) for v in state.get("history", [])]
        return {"active": None if active is None else plain_name(active, "version", self.pointer), "history": history}

    def folder(self, version: str) -> Path:
        """The folder of a published version, after checking it holds that version's manifest."""
        path = self.root / plain_name(version, "version", self.pointer)
        found = Bundle.manifest_of(path, verify=False)["version"]
        if found != version:
            raise BundleError(f"{path} holds version {found!r}, not {version!r}: a registry folder must be named "
                              "after the version it holds (publish bundles instead of copying them)")
        return path

    def active(self) -> Path | None:
        v = self.state()["active"]
        return self.folder(v) if v else None

    def _write(self, state: dict) -> None:
        tmp = self.root / f".ACTIVE.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(state))
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.pointer)

    def publish(self, bundle_dir: Path | str, gates: list[Gate] = ()) -> str:
        """Make a bundle the active version (copied into the registry if it lives elsewhere)."""
        manifest = Bundle.manifest_of(bundle_dir)  # manifest and every file checked against their hashes
        version = str(manifest["version"])
        failed = [why for g in gates if (why := g.check(manifest.get("metrics", {})))]
        if failed:
            raise BundleError(f"version {version} not published: " + "; ".join(failed))
        Bundle.load(bundle_dir, verify=False).check()  # every artifact opened and run once: refused now, not when served
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / version
        if Path(bundle_dir).resolve() != target.resolve():
            if not target.exists():
                tmp = self.root / f".tmp-publish-{version}"
                shutil.rmtree(tmp, ignore_errors=True)  # left by a publish killed while copying
                shutil.copytree(bundle_dir, tmp)
                os.replace(tmp, target)
        self.folder(version)  # a folder already there must hold this very version
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
        previous = state["history"].pop()
        self.folder(previous)  # still there and intact
        state["active"] = previous
        self._write(state)
        return previous
