"""Published versions: which bundle is active, and the ones before it for rollback.

The registry is a folder of bundles with an ``ACTIVE`` JSON file naming the active version and
the history of earlier ones, and ``HISTORY.json``: every publish attempt with the figures the
gate looked at (ranking metrics, daily data volumes, the share of new items), its breaches,
and whether it was published or forced (with the reason given); ``UPDATES.json``: what each
``embrecall update`` run did.  Each file is replaced
atomically (write + rename), so a crash at any moment leaves exactly one complete active
version.  A version is published only if it passes the gates (``embrecall.export.gate``: fixed
thresholds and the 3σ rule against earlier versions) and every part of it opens and runs.
Every name read from ``ACTIVE`` or a manifest is a plain version name resolved inside the
registry, and a version's folder must hold the manifest of that version.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from embrecall.data.log import data_profile
from embrecall.errors import BundleError, ConfigError, GateBreach
from embrecall.export.bundle import Bundle, plain_name
from embrecall.export.gate import VOLUMES, Gate, flat_metrics, sigma_breaches

__all__ = ["Registry"]

HISTORY = "HISTORY.json"
UPDATES = "UPDATES.json"
_REPAIR = "restore it, or replace it with `publish --force REASON` or `rollback --force REASON`"


def _item_ids(folder: Path) -> set[str]:
    return set(pq.read_table(folder / "items.parquet", columns=["item_id"]).column(0).to_pylist())


def _new_share(items: set[str], active: Path) -> float:
    """The share of ``items`` the active version does not have."""
    return len(items - _item_ids(active)) / max(len(items), 1)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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
            raise BundleError(f"{self.pointer} is not UTF-8 JSON ({err}); {_REPAIR}") from None
        if not isinstance(state, dict) or not isinstance(state.get("history", []), list):
            raise BundleError(
                f'{self.pointer} must be an object like {{"active": "<version>", "history": []}}, '
                f"got {str(state)[:80]!r}; {_REPAIR}"
            )
        active = state.get("active")
        try:
            history = [plain_name(v, "version", self.pointer) for v in state.get("history", [])]
            return {
                "active": None if active is None else plain_name(active, "version", self.pointer),
                "history": history,
            }
        except BundleError as err:
            raise BundleError(f"{err}; {_REPAIR}") from None

    def folder(self, version: str) -> Path:
        """The folder of a published version, after checking it holds that version's manifest."""
        path = self.root / plain_name(version, "version", self.pointer)
        found = Bundle.manifest_of(path, verify=False)["version"]
        if found != version:
            raise BundleError(
                f"{path} holds version {found!r}, not {version!r}: a registry folder must be named "
                "after the version it holds (publish bundles instead of copying them)"
            )
        return path

    def active(self) -> Path | None:
        v = self.state()["active"]
        return self.folder(v) if v else None

    def _write(self, state: dict | list, name: str = "ACTIVE") -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(state, indent=None if name == "ACTIVE" else 1))
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / name)

    def _records(self, name: str, what: str, needs: str) -> list[dict]:
        """The list of records in file ``name``, each a dict holding ``needs``."""
        path = self.root / name
        if not path.is_file():
            return []
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BundleError(f"{path} is not UTF-8 JSON ({err}); restore it or remove it") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) and needs in r for r in records):
            raise BundleError(f"{path} must be a list of {what} records; restore it or remove it")
        return records

    def history(self) -> list[dict]:
        """Every publish attempt, oldest first (``HISTORY.json``)."""
        records = self._records(HISTORY, "publish", "figures")
        if not all(isinstance(r["figures"], dict) for r in records):
            raise BundleError(f"{self.root / HISTORY} must be a list of publish records; restore it or remove it")
        return records

    def updates(self) -> list[dict]:
        """Every ``embrecall update`` run, oldest first (``UPDATES.json``): what each one did."""
        return self._records(UPDATES, "update", "outcome")

    def record_update(self, record: dict[str, Any]) -> None:
        self._write([*self.updates(), {"at": _now(), **record}], UPDATES)

    @staticmethod
    def _figures(bundle_dir: Path | str, manifest: dict, active: Path | None) -> dict[str, float]:
        """What the gate compares: ranking metrics, daily volumes, and the share of the candidate's
        items that the active version does not have."""
        profile = manifest.get("data", {}).get("profile", {})
        figures = {
            **flat_metrics(manifest.get("metrics", {})),
            **{k: float(v) for k, v in profile.items() if k != "days" and isinstance(v, (int, float))},
        }
        if active is not None:
            figures["new_item_share"] = _new_share(_item_ids(Path(bundle_dir)), active)
        return figures

    def _active_if_sound(self) -> Path | None:
        """The active version's folder; None when there is none or it is damaged (which must not
        stop a replacement or a check)."""
        try:
            return self.active()
        except BundleError:
            return None

    def published(self, window: int) -> list[dict]:
        """The figures of the last ``window`` published versions, oldest first."""
        return [r["figures"] for r in self.history() if r.get("published")][-window:] if window > 0 else []

    def check_volumes(self, events: pd.DataFrame, sigma: float = 3.0, window: int = 5) -> dict[str, float]:
        """The daily volumes of an incoming log (and the share of its items the active version
        lacks) against the last ``window`` published versions' (DeWu watches data fluctuations
        before anything is trained); raises ``GateBreach`` naming each volume more than ``sigma``
        off their mean.  Returns the log's figures."""
        figures = {k: v for k, v in data_profile(events).items() if k in VOLUMES}
        active = self._active_if_sound()
        if active is not None:
            figures["new_item_share"] = _new_share(set(events["item_id"].astype(str).unique()), active)
        breaches = sigma_breaches(figures, self.published(window), sigma)
        if breaches:
            raise GateBreach(
                "the incoming log is out of line with the published versions' training logs: " + "; ".join(breaches),
                breaches,
            )
        return figures

    def publish(
        self,
        bundle_dir: Path | str,
        gates: Sequence[Gate] = (),
        sigma: float = 3.0,
        window: int = 5,
        force: str | None = None,
        compare: Callable[[Bundle, Path], dict] | None = None,
    ) -> str:
        """Make a bundle the active version (copied into the registry if it lives elsewhere) if it
        passes the fixed ``gates`` and, with ``sigma`` > 0, the 3σ rule against the last ``window``
        published versions; ``force`` (a reason) publishes despite breaches.  Every attempt is
        recorded in ``HISTORY.json``; a refusal names each breach.  A published version's record
        holds ``compare(candidate, active)``, its drift report against the version it replaces (the
        service's ``serve.drift.drift_report``: this package reads bundles and serves none)."""
        if force is not None and not force.strip():
            raise ConfigError("--force needs a reason, recorded with the version")
        manifest = Bundle.manifest_of(bundle_dir)  # manifest and every file checked against their hashes
        version = str(manifest["version"])
        active = self._active_if_sound()
        figures = self._figures(bundle_dir, manifest, active)
        earlier = self.published(window)
        breaches = [why for g in gates if (why := g.check(manifest.get("metrics", {})))]
        breaches += sigma_breaches(figures, earlier, sigma) if sigma > 0 else []
        record: dict[str, Any] = {
            "version": version,
            "at": _now(),
            "figures": figures,
            "breaches": breaches,
            "forced": force,
            "published": not breaches or force is not None,
        }
        if breaches and force is None:
            self._write([*self.history(), record], HISTORY)
            raise GateBreach(
                f"version {version} not published: "
                + "; ".join(breaches)
                + " (publish --force REASON overrides, and records the reason)",
                breaches,
            )
        candidate = Bundle.load(bundle_dir, verify=False)
        candidate.check()  # every artifact opened and run once: refused now, not when served
        if active is not None and compare is not None:
            try:
                record["drift"] = compare(candidate, active)
            except Exception as err:  # a report that cannot be made is said, and does not hold the version back
                record["drift"] = {"error": f"{type(err).__name__}: {err}"}
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / version
        if Path(bundle_dir).resolve() != target.resolve():
            if not target.exists():
                tmp = self.root / f".tmp-publish-{version}"
                shutil.rmtree(tmp, ignore_errors=True)  # left by a publish killed while copying
                shutil.copytree(bundle_dir, tmp)
                os.replace(tmp, target)
        self.folder(version)  # a folder already there must hold this very version
        state = self._state_or_repair(force, record)
        if state["active"] and state["active"] != version:
            state["history"].append(state["active"])
        state["active"] = version
        self._write(state)
        self._write([*self.history(), record], HISTORY)
        return version

    def rollback(self, force: str | None = None) -> str:
        """Re-activate the previous version. ``force`` (a reason) replaces a broken ``ACTIVE``:
        the versions are then read from ``HISTORY.json`` (the last published one taken as active)."""
        record: dict[str, Any] = {"at": _now(), "figures": {}, "breaches": [], "forced": force, "published": False}
        state = self._state_or_repair(force, record)
        if not state["history"]:
            raise BundleError(f"nothing to roll back to in {self.root}: no earlier published version")
        previous = state["history"].pop()
        self.folder(previous)  # still there and intact
        state["active"] = previous
        self._write(state)
        if "repaired" in record:
            self._write([*self.history(), {**record, "version": previous, "rollback": True}], HISTORY)
        return previous

    def _state_or_repair(self, force: str | None, record: dict[str, Any]) -> dict:
        """``ACTIVE``'s state; when it is broken and ``force`` gives a reason, the state
        ``HISTORY.json`` implies instead (published versions in order, the last one active), the
        damage noted in ``record``."""
        try:
            return self.state()
        except BundleError as err:
            if force is None or not force.strip():
                raise
            record["repaired"] = str(err)
        published = list(dict.fromkeys(reversed([r["version"] for r in self.history() if r.get("published")])))[::-1]
        intact = [v for v in published if self._intact(v)]
        return {"active": intact[-1] if intact else None, "history": intact[:-1]}

    def _intact(self, version: object) -> bool:
        try:
            self.folder(str(version))
            return True
        except BundleError:
            return False
