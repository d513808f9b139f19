"""Signed bundles: with a key configured, an edited manifest whose hash was recomputed, an unsigned
bundle and one signed under another key are refused by publish, rollback and serve; keys rotate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embrecall.cli import app
from embrecall.errors import BundleError
from embrecall.export import Bundle
from embrecall.export.gate import parse_gate
from embrecall.export.registry import Registry
from embrecall.pipeline import train
from embrecall.serve.service import ServingVersion
from tests.conftest import tiny_config
from tests.export.test_tampering import _edit

KEY_A, KEY_B = "a" * 16 + "-first-key", "b" * 16 + "-second-key"


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    """A bundle trained under KEY_A (``bundle``, in conftest, hands each test a copy)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EMBRECALL_BUNDLE_KEYS", KEY_A)
        return train(tiny_config(tmp_path_factory.mktemp("signed")), show_progress=False).bundle


def test_training_with_a_key_signs_the_bundle_and_it_publishes(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBRECALL_BUNDLE_KEYS", KEY_A)
    assert json.loads((bundle / "manifest.sig").read_text())["hmac_sha256"]
    assert Registry(tmp_path / "reg").publish(bundle, sigma=0) == Bundle.manifest_of(bundle)["version"]
    ServingVersion(tmp_path / "reg" / bundle.name)  # serve reads it


def test_edited_metrics_with_a_recomputed_hash_fail_the_signature(bundle, tmp_path, monkeypatch):
    """What the outside test did: HR@10 set to 0.99, manifest.sha256 recomputed, published through a gate."""
    monkeypatch.setenv("EMBRECALL_BUNDLE_KEYS", KEY_A)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["metrics"]["two_tower"]["HR@10"] = 0.99
    _edit(bundle, metrics=manifest["metrics"])
    with pytest.raises(BundleError, match="signature does not match the manifest"):
        Registry(tmp_path / "reg").publish(bundle, [parse_gate("HR@10>=0.9")], sigma=0)
    with pytest.raises(BundleError, match="signature does not match"):
        ServingVersion(bundle)
    monkeypatch.delenv("EMBRECALL_BUNDLE_KEYS")  # without a key nothing is checked: the hash alone passes
    assert Bundle.manifest_of(bundle)


def test_unsigned_or_foreign_bundles_are_refused_and_keys_rotate(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBRECALL_BUNDLE_KEYS", KEY_B)  # signed under A, only B accepted
    with pytest.raises(BundleError, match="under any configured key"):
        Bundle.manifest_of(bundle)
    monkeypatch.setenv("EMBRECALL_BUNDLE_KEYS", f"{KEY_B},{KEY_A}")  # rotation: B signs, A still accepted
    Bundle.manifest_of(bundle)
    run = CliRunner().invoke(app, ["sign", str(bundle)])
    assert run.exit_code == 0, run.output
    monkeypatch.setenv("EMBRECALL_BUNDLE_KEYS", KEY_B)  # A dropped: the bundle signed again under B passes
    Bundle.manifest_of(bundle)
    (bundle / "manifest.sig").unlink()
    with pytest.raises(BundleError, match="the bundle is not signed"):
        Registry(tmp_path / "reg").publish(bundle, sigma=0)
    monkeypatch.setenv("EMBRECALL_BUNDLE_KEYS", "short")
    run = CliRunner().invoke(app, ["sign", str(bundle)])
    assert run.exit_code == 2 and "shorter than 16 characters" in run.output


def test_rollback_refuses_a_version_whose_signature_fails(bundle, original, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBRECALL_BUNDLE_KEYS", KEY_A)
    reg = Registry(tmp_path / "reg")
    reg.publish(bundle, sigma=0)
    second = tmp_path / "second" / "v2"
    shutil.copytree(original, second)
    _edit(second, version="v2")
    CliRunner().invoke(app, ["sign", str(second)])
    reg.publish(second, sigma=0)
    _edit(tmp_path / "reg" / bundle.name, description="edited in the registry")  # hash recomputed, not signed
    with pytest.raises(BundleError, match="signature does not match"):
        reg.rollback()
    assert reg.state()["active"] == "v2"
