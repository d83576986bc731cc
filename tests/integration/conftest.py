"""Session fixtures: a real docker-registry and a real containerd, never skipped (CI must fail)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from agent.core.images import platform as platforms
from tests.harness.agent import start_node
from tests.harness.containerd import RUNNING, Containerd
from tests.harness.daemon import ConfigMapVolume, DaemonProc
from tests.harness.images import push_runnable
from tests.harness.procs import HarnessError
from tests.harness.registry import Registry

T = TypeVar("T")
NODE = str(platforms.detect())


@pytest.fixture(autouse=True)
def _containerd_survives() -> Iterator[None]:
    """After every test, every containerd it could have touched must still be running: an
    agent that crashes the runtime it serves fails the test that did it."""
    yield
    for node in list(RUNNING):
        try:
            node.check_alive()
        except HarnessError as exc:
            RUNNING.discard(node)
            pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    try:
        reg = Registry(tmp_path_factory.mktemp("registry")).start()
    except HarnessError as exc:
        pytest.fail(f"cannot start docker-registry: {exc}", pytrace=False)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def pause_image(registry: Registry) -> str:
    """A pause image that really runs (busybox), so tests can start real pods."""
    try:
        image = push_runnable(registry, "test/pause", "1", ["/bin/busybox", "sleep", "86400"])
    except (HarnessError, OSError) as exc:
        pytest.fail(f"cannot build the pause image (needs busybox-static): {exc}", pytrace=False)
    return image.tagged


@pytest.fixture(scope="session")
def containerd(
    tmp_path_factory: pytest.TempPathFactory, registry: Registry, pause_image: str
) -> Iterator[Containerd]:
    node = start_node(tmp_path_factory.mktemp("containerd"), registry, pause_image)
    yield node
    node.stop()


@pytest.fixture
def fresh_containerd(tmp_path: Path, registry: Registry, pause_image: str) -> Iterator[Containerd]:
    """A node of its own, for tests that need to know everything on it."""
    node = start_node(tmp_path / "node", registry, pause_image)
    yield node
    node.stop()


@pytest.fixture
def repo() -> str:
    """A repository name no other test uses, so tests can share one containerd."""
    return f"test/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def volume(tmp_path: Path) -> ConfigMapVolume:
    return ConfigMapVolume(tmp_path / "config")


@pytest.fixture
def start_daemon(containerd: Containerd) -> Iterator:  # type: ignore[type-arg]
    """Start `prepull-agent run` processes on the session containerd; all end with the test."""
    started: list[DaemonProc] = []

    def start(config: Path, *extra: str) -> DaemonProc:
        daemon = DaemonProc(config, containerd.endpoint, *extra)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.terminate()
