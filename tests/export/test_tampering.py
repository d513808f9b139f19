"""Bundles and registries edited, damaged or pointed elsewhere: refused with a message that names the
file, never a traceback, never a path outside the registry (F8-F10 of the hardening issue)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from embrecall.cli import app
from embrecall.errors import BundleError
from embrecall.export import Bundle
from embrecall.export.gate import parse_gate
from embrecall.export.registry import Registry
from embrecall.pipeline import train
from embrecall.serve.app import create_app
from embrecall.serve.settings import ServeConfig
from embrecall.serve.state import ServiceState
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def original(tiny_bundles) -> Path:
    return tiny_bundles[0]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rewrite(bundle: Path, raw: bytes) -> None:
    """Replace the manifest and update its hash, as someone covering their tracks would."""
    (bundle / "manifest.json").write_bytes(raw)
    (bundle / "manifest.sha256").write_text(_sha(bundle / "manifest.json"))


def _edit(bundle: Path, **changes) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    _rewrite(bundle, json.dumps({**manifest, **changes}).encode())


def _replace_file(bundle: Path, name: str, data: bytes) -> None:
    """Swap an artifact for garbage with its hash updated: only opening it can tell."""
    (bundle / name).write_bytes(data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][name] = _sha(bundle / name)
    _rewrite(bundle, json.dumps(manifest).encode())


@pytest.mark.parametrize("version", ["../../x", "/tmp/elsewhere", "..", "a/b", ""])
def test_publish_never_writes_outside_the_registry(bundle, tmp_path, version):
    _edit(bundle, version=version)
    with pytest.raises(BundleError, match="version .* is not a plain name"):
        Registry(tmp_path / "reg").publish(bundle)
    assert not (tmp_path / "x").exists() and not Path("/tmp/elsewhere").exists()


def test_edited_metrics_cannot_pass_a_gate(bundle, tmp_path):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["metrics"]["two_tower"]["HR@10"] = 0.99
    (bundle / "manifest.json").write_text(json.dumps(manifest))  # the hash beside it is left as it was
    with pytest.raises(BundleError, match="manifest.json does not match manifest.sha256"):
        Registry(tmp_path / "reg").publish(bundle, [parse_gate("HR@10>=0.9")])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw[:10] + b"\xff" + raw[11:], "is not UTF-8 JSON"),
        (lambda raw: raw[: len(raw) // 2], "is not UTF-8 JSON"),
        (
            lambda raw: json.dumps({k: v for k, v in json.loads(raw).items() if k != "files"}).encode(),
            "no 'files' table",
        ),
        (lambda raw: json.dumps({**json.loads(raw), "files": {"../../etc/passwd": "0"}}).encode(), "not a plain name"),
        (lambda raw: b"[]", "bundle format None"),
    ],
)
def test_a_damaged_manifest_is_a_message(bundle, damage, message):
    _rewrite(bundle, damage((bundle / "manifest.json").read_bytes()))
    with pytest.raises(BundleError, match=message):
        Bundle.load(bundle)


@pytest.mark.parametrize(
    "name, data",
    [
        ("index.faiss", b"not an index"),
        ("user_tower.onnx", b"\x08\x01garbage"),
        ("items.parquet", b"PAR1 nope"),
        ("encoders.json", b'{"x": 1}'),
    ],
)
def test_publish_opens_every_artifact_first(bundle, tmp_path, name, data):
    reg = Registry(tmp_path / "reg")
    _replace_file(bundle, name, data)
    with pytest.raises(BundleError, match=rf"{name.replace('.', '[.]')} cannot be opened"):
        reg.publish(bundle)
    assert reg.state()["active"] is None
    result = CliRunner().invoke(app, ["publish", str(bundle), "--registry", str(reg.root)])
    assert result.exit_code == 2 and f"{name} cannot be opened" in result.output.replace("\n", "")
    assert "Traceback" not in result.output


def test_publish_runs_the_parts_together(bundle, original, tmp_path):
    """An item tower of another shape opens fine; running it beside the index shows the mismatch."""
    other = train(tiny_config(tmp_path / "other", "model.output_dim=16"), show_progress=False).bundle
    _replace_file(bundle, "item_tower.onnx", (other / "item_tower.onnx").read_bytes())
    with pytest.raises(BundleError, match="parts do not work together"):
        Registry(tmp_path / "reg").publish(bundle)


@pytest.mark.parametrize(
    "active",
    [
        "{not json",
        "[]",
        "null",
        '{"active": "../elsewhere"}',
        '{"active": "/tmp"}',
        '{"active": "v1", "history": ["../../x"]}',
    ],
)
def test_a_bad_active_pointer_is_a_message_at_start(original, tmp_path, active):
    reg = Registry(tmp_path / "reg")
    reg.publish(original)
    reg.pointer.write_text(active)
    with pytest.raises(BundleError, match=r"ACTIVE"):
        ServiceState(reg.root)
    result = CliRunner().invoke(app, ["rollback", "--registry", str(reg.root)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_folder_not_named_after_its_version_is_refused_once(original, tmp_path):
    """Not reloaded every second forever: refused, counted and logged once, the old version serving on."""
    reg = Registry(tmp_path / "reg")
    version = reg.publish(original)
    with TestClient(create_app(ServeConfig(source=reg.root, watch_interval_s=0.02))) as client:
        shutil.copytree(reg.root / version, reg.root / "renamed")
        reg.pointer.write_text(json.dumps({"active": "renamed", "history": [version]}))
        time.sleep(0.5)  # some 25 checks of ACTIVE
        assert client.get("/v1/version").json()["version"] == version
        assert 'embrecall_errors_total{status="swap"} 1.0' in client.get("/metrics").text
    with pytest.raises(BundleError, match="holds version .*, not 'renamed'"):
        ServiceState(reg.root)


@pytest.mark.parametrize(
    "active",
    ["{not json", '{"active": "../elsewhere"}', '{"history": "x"}', b"\xff\xfe"],
)
def test_a_broken_active_is_replaced_by_a_forced_publish_or_rollback(original, tmp_path, active):
    """The tools repair what their messages point at: versions still lists the history, and publish
    or rollback with --force and a reason replace ACTIVE (the reason and the damage recorded)."""
    reg = Registry(tmp_path / "reg")
    first = reg.publish(original, sigma=0)
    second = tmp_path / "v2"
    shutil.copytree(original, second)
    _edit(second, version="v2")
    reg.publish(second, sigma=0)
    broken = (
        (lambda: reg.pointer.write_bytes(active))
        if isinstance(active, bytes)
        else lambda: reg.pointer.write_text(active)
    )
    broken()
    cli, where = CliRunner(), ["--registry", str(reg.root)]
    refused = cli.invoke(app, ["publish", str(second), *where, "--sigma", "0", "--drift-users", "0"])
    assert refused.exit_code == 2 and "--force REASON" in refused.output and "Traceback" not in refused.output
    listed = cli.invoke(app, ["versions", *where])
    assert listed.exit_code == 0 and "ACTIVE" in listed.output and "v2" in listed.output
    rolled = cli.invoke(app, ["rollback", *where, "--force", "ACTIVE damaged by a bad deploy"])
    assert rolled.exit_code == 0, rolled.output
    assert reg.state() == {"active": first, "history": []}
    broken()
    again = cli.invoke(
        app, ["publish", str(second), *where, "--sigma", "0", "--drift-users", "0", "--force", "restore"]
    )
    assert again.exit_code == 0, again.output
    assert reg.state() == {"active": "v2", "history": [first]}
    repaired = [r for r in reg.history() if r.get("repaired")]
    assert [r["forced"] for r in repaired] == ["ACTIVE damaged by a bad deploy", "restore"]
