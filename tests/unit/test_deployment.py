"""The deployment engine's own logic, without a deployment: Flower's waits capped."""

import time


def test_idle_nodes_back_off_and_any_work_makes_them_fast_again(monkeypatch):
    """The SuperNode's empty-poll sleep: capped while it had work lately, IDLE_POLL_S after
    IDLE_AFTER_S without; a reply wait (work) makes it fast again. Real sleeps, shorter constants."""
    from fedfuse.deploy import flower_patches

    monkeypatch.setattr(flower_patches, "IDLE_AFTER_S", 0.3)
    monkeypatch.setattr(flower_patches, "IDLE_POLL_S", 0.2)
    monkeypatch.setattr(flower_patches, "BUSY_GAP_S", 0.25)
    clock = flower_patches.CappedSleep(0.01)

    def timed(seconds: float) -> float:
        started = time.monotonic()
        clock.sleep(seconds)
        return time.monotonic() - started

    assert timed(flower_patches.NODE_IDLE_SLEEP_S) < 0.1  # fresh: fast
    time.sleep(0.5)  # a pause longer than a request between two empty polls: the node had work
    assert timed(flower_patches.NODE_IDLE_SLEEP_S) < 0.1
    while time.monotonic() - clock.backoff.last_work < 0.3:
        timed(flower_patches.NODE_IDLE_SLEEP_S)
    assert 0.19 < timed(flower_patches.NODE_IDLE_SLEEP_S) < 0.5  # idle: backed off
    assert timed(0.5) < 0.1  # a reply wait: capped, and it counts as work
    assert timed(flower_patches.NODE_IDLE_SLEEP_S) < 0.1


def test_the_patches_know_which_flower_they_were_tested_on(monkeypatch, caplog):
    import flwr

    from fedfuse.deploy import flower_patches

    assert flower_patches.version_guard() == flwr.__version__.startswith(flower_patches.TESTED_FLOWER + ".")
    monkeypatch.setattr(flwr, "__version__", "9.9.0")
    monkeypatch.setattr(flower_patches.version_guard, "warned", False, raising=False)
    assert not flower_patches.version_guard()
    assert "Flower 9.9.0: its waits are capped as on Flower" in caplog.text


def test_a_port_in_use_is_named_with_its_holder_before_anything_is_written(tmp_path):
    import os
    import socket

    import pytest

    from fedfuse.deploy.local import LocalDeployment
    from fedfuse.plugins.config import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"port {port} on 127.0.0.1 cannot be used .* \(pid {os.getpid()}\); choose"):
            LocalDeployment(tmp_path / "out", 1, tls=True, port=port)
    assert not (tmp_path / "out").exists()  # no certificate made, nothing started
