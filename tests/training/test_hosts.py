"""torchrun across two hosts (network namespaces joined by veth, a TCP rendezvous between their
addresses) trains what two ranks on one host train, on a shared shard folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.hosts import torchrun_across, two_hosts, why_no_hosts
from embrecall.data.shards import prepare_shards
from tests.conftest import sharded_config

NO_HOSTS = why_no_hosts()
pytestmark = pytest.mark.skipif(NO_HOSTS is not None, reason=f"two hosts cannot be made here: {NO_HOSTS}")


def _manifest(out: Path) -> tuple[dict, Path]:
    bundles = [p for p in out.iterdir() if (p / "manifest.json").is_file()]
    assert len(bundles) == 1  # rank 0 alone writes it
    return json.loads((bundles[0] / "manifest.json").read_text()), bundles[0]


def test_two_hosts_train_what_two_ranks_on_one_host_train(tmp_path):
    cfg = sharded_config(
        tmp_path,
        "model.sparse_ids=true",
        "train.refit=false",
        "train.epochs=1",
        f"data.shards.folder={tmp_path / 'shards'}",
    )
    prepare_shards(cfg)  # the shared folder both hosts read
    config = tmp_path / "config.yaml"
    config.write_text(cfg.model_dump_json())  # JSON is YAML
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def train(out: Path) -> list[str]:
        return ["embrecall.cli", "train", "--config", str(config), "--out", str(out), "--no-progress"]

    one_host = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    done = subprocess.run([*one_host, *train(tmp_path / "one")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with two_hosts() as hosts:
        nodes = torchrun_across(hosts, train(tmp_path / "two"), env, timeout_s=300)
        sent = [host.sent_bytes() for host in hosts]
    for node in nodes:
        assert node.returncode == 0, node.stderr[-3000:]
    assert min(sent) > 100_000  # the gradients and gathered candidates crossed the link both ways

    (one, one_bundle), (two, two_bundle) = _manifest(tmp_path / "one"), _manifest(tmp_path / "two")
    assert [e["epoch"] for e in two["training"]["log"]] == [1]
    for a, b in zip(one["training"]["log"], two["training"]["log"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
    same, other = (load_file(b / "weights.safetensors") for b in (one_bundle, two_bundle))
    for name, weights in same.items():
        torch.testing.assert_close(other[name], weights, msg=f"{name} differs between two hosts and one")
