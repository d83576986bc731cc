"""Registry settings shared with containerd: hosts.toml, custom-CA TLS, mirrors, for real."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.core.images import platform as platforms
from tests.harness.agent import image_status, once_with_hosts_dir, run_agent
from tests.harness.containerd import Containerd
from tests.harness.daemon import DaemonProc
from tests.harness.faults import RateLimitingProxy
from tests.harness.images import push_image
from tests.harness.procs import HarnessError, free_port
from tests.harness.registry import Registry
from tests.harness.tls import ServerCert, make_ca_and_server

NODE = str(platforms.detect())


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, ServerCert]]:
    folder = tmp_path_factory.mktemp("tls-registry")
    cert = make_ca_and_server(folder / "pki")
    try:
        registry = Registry(folder / "registry", tls=cert).start()
    except HarnessError as exc:
        pytest.fail(f"cannot start the TLS registry: {exc}", pytrace=False)
    yield registry, cert
    registry.stop()


def plain_list(path: Path, images: list[str], extra: str = "") -> Path:
    path.write_text("images:\n" + "".join(f"  - {i}\n" for i in images) + extra)
    return path


def test_plain_http_registry_configured_only_in_hosts_toml(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    config = plain_list(tmp_path / "preload.yaml", [image.tagged])  # no registries: at all

    result = once_with_hosts_dir(containerd, config)

    assert result.code == 0, result
    assert image_status(containerd, image.tagged) is not None


def test_custom_ca_registry_through_containerds_hosts_toml(
    tmp_path: Path, tls_registry: tuple[Registry, ServerCert], containerd: Containerd, repo: str
) -> None:
    registry, cert = tls_registry
    containerd.trust_tls_registry(registry.host, cert.ca)
    image = push_image(registry, repo, "1", (NODE,))
    config = plain_list(tmp_path / "preload.yaml", [image.tagged])

    result = once_with_hosts_dir(containerd, config)

    assert result.code == 0, result
    assert image_status(containerd, image.tagged) is not None


def test_custom_ca_from_the_preload_list(
    tmp_path: Path, tls_registry: tuple[Registry, ServerCert], repo: str
) -> None:
    registry, cert = tls_registry
    image = push_image(registry, repo, "1", (NODE,))
    config = plain_list(
        tmp_path / "preload.yaml",
        [image.tagged],
        f"registries:\n  {registry.host}:\n    ca: {cert.ca}\n",
    )

    result = run_agent(
        "lock", "--config", str(config), "--containerd-hosts-dir", str(tmp_path / "none")
    )

    assert result.code == 0, result
    assert f"{image.tagged}@{image.digest}" in result.stdout


def test_a_wrong_ca_is_a_clear_certificate_error_naming_the_host(
    tmp_path: Path, tls_registry: tuple[Registry, ServerCert], repo: str
) -> None:
    registry, _ = tls_registry
    other = make_ca_and_server(tmp_path / "other-pki", name="someone-else")
    image = push_image(registry, repo, "1", (NODE,))
    config = plain_list(
        tmp_path / "preload.yaml",
        [image.tagged],
        f"registries:\n  {registry.host}:\n    ca: {other.ca}\n",
    )

    started = time.monotonic()
    result = run_agent("lock", "--config", str(config))

    assert result.code == 1, result
    assert f"TLS with {registry.host} failed" in result.stderr, result.stderr
    assert "certificate verify failed" in result.stderr and ".ca" in result.stderr
    assert time.monotonic() - started < 10, "a certificate error must not be retried"


def test_a_mirror_that_is_down_is_skipped_for_the_registry_itself(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    down = f"http://127.0.0.1:{free_port()}"
    config = plain_list(
        tmp_path / "preload.yaml",
        [image.tagged],
        f"registries:\n  {registry.host}:\n    insecure: true\n    mirrors: [{down}]\n",
    )

    result = run_agent("-v", "once", "--config", str(config), "--cri-endpoint", containerd.endpoint)

    assert result.code == 0, result
    assert f"mirror {down} failed" in result.stderr, result.stderr


def test_a_mirror_is_asked_before_the_registry(
    tmp_path: Path, registry: Registry, repo: str
) -> None:
    mirror = Registry(tmp_path / "mirror").start()
    try:
        # Only the mirror has this tag: resolving it proves the mirror was asked.
        image = push_image(mirror, repo, "mirrored", (NODE,))
        upstream_name = f"{registry.host}/{repo}:mirrored"
        config = plain_list(
            tmp_path / "preload.yaml",
            [upstream_name],
            f"registries:\n  {registry.host}:\n    insecure: true\n    mirrors: [{mirror.url}]\n",
        )

        result = run_agent("lock", "--config", str(config))
    finally:
        mirror.stop()

    assert result.code == 0, result
    assert f"{upstream_name}@{image.digest}" in result.stdout


def test_429_with_retry_after_is_honoured_and_the_quota_is_exported(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    push_image(registry, repo, "1", (NODE,))
    proxy = RateLimitingProxy(registry.url, refuse_first=2, remaining=42).start()
    try:
        name = f"{proxy.host}/{repo}:1"
        config = plain_list(
            tmp_path / "preload.yaml", [name], f"registries:\n  {proxy.host}:\n    insecure: true\n"
        )
        started = time.monotonic()
        result = run_agent("lock", "--config", str(config))
        took = time.monotonic() - started

        assert result.code == 0, result
        assert proxy.answers[:3] == [429, 429, 200], proxy.answers
        assert took >= 2, f"Retry-After: 1 twice, yet done in {took:.1f}s"

        containerd.trust_http_registry(proxy.host)
        daemon = DaemonProc(config, containerd.endpoint)
        try:
            daemon.wait_for(
                lambda: (
                    daemon.metric("prepull_registry_ratelimit_remaining", registry=proxy.host) == 42
                ),
                30,
                "the registry's remaining quota",
            )
        finally:
            daemon.terminate()
    finally:
        proxy.stop()
