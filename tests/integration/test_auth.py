"""Private registries with the real docker-registry: credentials from a dockerconfigjson reach both
the registry API and containerd, and never show up anywhere."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.core.images import platform as platforms
from tests.harness.agent import image_status, once, once_with_hosts_dir, run_agent
from tests.harness.containerd import Containerd
from tests.harness.daemon import DaemonProc
from tests.harness.faults import FaultProxy
from tests.harness.images import push_image
from tests.harness.procs import HarnessError
from tests.harness.registry import Registry
from tests.harness.tokens import TokenServer

NODE = str(platforms.detect())
USER, PASSWORD = "preloader", "Pa55-w0rd-that-must-never-leak"
LEAKS = (PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    try:
        registry = Registry(tmp_path_factory.mktemp("private"), basic_auth=(USER, PASSWORD)).start()
    except HarnessError as exc:
        pytest.fail(f"cannot start the htpasswd registry: {exc}", pytrace=False)
    yield registry
    registry.stop()


def write_secret(folder: Path, host: str, password: str = PASSWORD) -> Path:
    folder.mkdir(exist_ok=True)
    secret = folder / ".dockerconfigjson"
    auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
    secret.write_text(json.dumps({"auths": {f"http://{host}/v2/": {"auth": auth}}}))
    return secret


def write_config(path: Path, registry: Registry, images: list[str], secret: str | None) -> Path:
    text = "images:\n" + "".join(f"  - {i}\n" for i in images)
    text += f"registries:\n  {registry.host}:\n    insecure: true\n"
    if secret:
        text += f"credentials:\n  - {secret}\n"
    path.write_text(text)
    return path


def test_basic_auth_registry_preloads_with_a_pull_secret(
    tmp_path: Path, private_registry: Registry, containerd: Containerd, repo: str
) -> None:
    containerd.trust_http_registry(private_registry.host)
    image = push_image(private_registry, repo, "1", (NODE,))
    write_secret(tmp_path / "secrets", private_registry.host)
    # A relative path: relative to the config file, as a mounted Secret beside it would be.
    config = write_config(
        tmp_path / "preload.yaml", private_registry, [image.tagged], "secrets/.dockerconfigjson"
    )

    result = once(containerd, config)

    assert result.code == 0, result
    assert result.line_for(image.tagged).startswith("pulled")
    assert image_status(containerd, image.tagged) is not None
    locked = run_agent("lock", "--config", str(config))
    assert locked.code == 0 and f"{image.tagged}@{image.digest}" in locked.stdout, locked


def test_without_credentials_the_refusal_says_none_were_sent(
    tmp_path: Path, private_registry: Registry, containerd: Containerd, repo: str
) -> None:
    image = push_image(private_registry, repo, "1", (NODE,))
    config = write_config(tmp_path / "preload.yaml", private_registry, [image.tagged], None)

    result = once(containerd, config, "--strict")  # failed for good: --strict exits 1

    assert result.code == 1, result
    line = result.line_for(image.tagged)
    assert "HTTP 401" in line and "no credentials were sent" in line, line
    assert private_registry.host in line and repo in line


def test_a_wrong_password_is_refused_by_name_and_never_printed(
    tmp_path: Path, private_registry: Registry, containerd: Containerd, repo: str
) -> None:
    image = push_image(private_registry, repo, "1", (NODE,))
    wrong = "Wrong-Pa55-that-must-never-leak"
    secret = write_secret(tmp_path / "secrets", private_registry.host, wrong)
    config = write_config(tmp_path / "preload.yaml", private_registry, [image.tagged], str(secret))

    result = once(containerd, config, "--strict")  # failed for good: --strict exits 1

    assert result.code == 1, result
    line = result.line_for(image.tagged)
    assert "credentials were sent" in line and "no credentials" not in line, line
    assert wrong not in result.stdout + result.stderr


def test_no_secret_in_any_output_of_a_run_that_used_it(
    tmp_path: Path, private_registry: Registry, containerd: Containerd, repo: str
) -> None:
    containerd.trust_http_registry(private_registry.host)
    good = push_image(private_registry, repo, "1", (NODE,))
    missing = f"{private_registry.host}/{repo}:missing"
    secret = write_secret(tmp_path / "secrets", private_registry.host)
    config = write_config(
        tmp_path / "preload.yaml", private_registry, [good.tagged, missing], str(secret)
    )
    lock = tmp_path / "preload.lock.yaml"
    outputs = []
    for args in (
        ["-v", "once", "--config", str(config), "--cri-endpoint", containerd.endpoint],
        ["-v", "lock", "--config", str(config), "--output-file", str(lock)],
        ["-v", "resolve", good.tagged, "--config", str(config)],
    ):
        result = run_agent(*args)
        outputs.append(result.stdout + result.stderr)
    if lock.exists():
        outputs.append(lock.read_text())
    daemon = DaemonProc(config, containerd.endpoint)
    try:
        daemon.wait_for(
            lambda: daemon.metric("prepull_reconcile_duration_seconds_count") == 1, 30, "a pass"
        )
        outputs += [daemon.get(path)[1] for path in ("/status", "/metrics", "/readyz", "/healthz")]
    finally:
        daemon.terminate()
    outputs.append(daemon.log())

    assert any(good.tagged in text for text in outputs), "the outputs are not about this run"
    for text in outputs:
        for leak in LEAKS:
            assert leak not in text, f"a secret leaked into:\n{text[:2000]}"


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Registry, TokenServer]]:
    folder = tmp_path_factory.mktemp("token-auth")
    tokens = TokenServer(folder / "tokens", USER, PASSWORD).start()
    try:
        registry = Registry(
            folder / "registry", basic_auth=(USER, PASSWORD), token_auth=tokens.registry_config()
        ).start()
    except HarnessError as exc:
        tokens.stop()
        pytest.fail(f"cannot start the token-auth registry: {exc}", pytrace=False)
    yield registry, tokens
    registry.stop()
    tokens.stop()


def test_token_auth_with_jwts_the_registry_verifies(
    tmp_path: Path, token_registry: tuple[Registry, TokenServer], containerd: Containerd, repo: str
) -> None:
    registry, tokens = token_registry
    containerd.trust_http_registry(registry.host)
    image = push_image(registry, repo, "1", (NODE,))
    secret = write_secret(tmp_path / "secrets", registry.host)
    config = write_config(tmp_path / "preload.yaml", registry, [image.tagged], str(secret))
    issued_before = len(tokens.issued)

    result = once(containerd, config)

    assert result.code == 0, result
    assert image_status(containerd, image.tagged) is not None
    pulls = [c for c in tokens.issued[issued_before:] if c["access"][0]["name"] == repo]  # type: ignore[index]
    assert len(pulls) >= 2, "both the agent and containerd should have fetched tokens"


def test_token_service_refusing_the_credentials_is_reported(
    tmp_path: Path, token_registry: tuple[Registry, TokenServer], containerd: Containerd, repo: str
) -> None:
    registry, tokens = token_registry
    image = push_image(registry, repo, "1", (NODE,))
    secret = write_secret(tmp_path / "secrets", registry.host, "not-the-password")
    config = write_config(tmp_path / "preload.yaml", registry, [image.tagged], str(secret))
    refused_before = tokens.refused

    result = once(containerd, config, "--strict")  # failed for good: --strict exits 1

    assert result.code == 1, result
    assert tokens.refused > refused_before
    line = result.line_for(image.tagged)
    assert "token service" in line and "refused the credentials" in line, line
    assert "not-the-password" not in result.stdout + result.stderr


def test_a_rotated_pull_secret_is_used_without_a_restart(
    tmp_path: Path, private_registry: Registry, containerd: Containerd, repo: str
) -> None:
    containerd.trust_http_registry(private_registry.host)
    image = push_image(private_registry, repo, "1", (NODE,))
    secret = write_secret(tmp_path / "secrets", private_registry.host, "expired-password")
    config = write_config(tmp_path / "preload.yaml", private_registry, [image.tagged], str(secret))
    config.write_text(config.read_text() + "resync: 1s\n")
    daemon = DaemonProc(config, containerd.endpoint)
    try:
        daemon.wait_for(
            lambda: daemon.metric("prepull_image_ready", image=image.tagged) == 0,
            30,
            "a failed pass",
        )
        write_secret(tmp_path / "secrets", private_registry.host)  # the Secret is rotated

        # (A refused password is a permanent failure: /readyz does not wait for it.)
        daemon.wait_for(
            lambda: daemon.metric("prepull_image_ready", image=image.tagged) == 1,
            30,
            "the new password to be used",
        )
    finally:
        daemon.terminate()
    assert image_status(containerd, image.tagged) is not None


def test_credentials_never_go_to_a_mirror_they_were_not_issued_for(
    tmp_path: Path, private_registry: Registry, containerd: Containerd, repo: str
) -> None:
    """A sniffing mirror in front of the authenticated registry, configured both for the agent
    (registries.mirrors) and for containerd (hosts.toml): the secret is for the registry only,
    so neither the agent nor containerd may show it to the mirror."""
    mirror = FaultProxy(private_registry.url).start()
    try:
        image = push_image(private_registry, repo, "1", (NODE,))
        folder = containerd.certs_d / private_registry.host
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts.toml").write_text(
            f'server = "http://{private_registry.host}"\n\n'
            f'[host."{mirror.url}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        secret = write_secret(tmp_path / "secrets", private_registry.host)
        config = tmp_path / "preload.yaml"
        config.write_text(
            f"images:\n  - {image.tagged}\ncredentials: [{secret}]\n"
            f"registries:\n  {private_registry.host}:\n    insecure: true\n"
            f"    mirrors: [{mirror.url}]\n"
        )

        result = once_with_hosts_dir(containerd, config)
    finally:
        mirror.stop()
        containerd.trust_http_registry(private_registry.host)

    assert result.code == 0, result  # through the registry itself, after the mirror refused
    assert image_status(containerd, image.tagged) is not None
    agents = [h for _, _, h in mirror.seen if not h.get("User-Agent", "").startswith("containerd")]
    runtimes = [h for _, _, h in mirror.seen if h.get("User-Agent", "").startswith("containerd")]
    assert agents and runtimes, "both the agent and containerd should have asked the mirror"
    for headers in agents + runtimes:
        assert "Authorization" not in headers, headers.get("User-Agent")
