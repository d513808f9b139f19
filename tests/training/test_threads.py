"""Training threads: the setting wins; otherwise no more than this process may use."""

from __future__ import annotations

from embrecall.training import threads


def test_setting_wins(monkeypatch):
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 0)
    assert threads.training_threads(3) == 3


def test_default_respects_omp_num_threads_and_busy_cores(monkeypatch):
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 0)
    assert threads.training_threads(None) == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert threads.training_threads(None) == 4
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 3)
    assert threads.training_threads(None) == 1
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 9)
    assert threads.training_threads(None) == 1


def test_cgroup_quota_caps_the_count(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads._cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads._cgroup_quota(tmp_path) is None
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1.5)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.usable_cpus() == 1
