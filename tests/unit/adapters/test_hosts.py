from __future__ import annotations

from pathlib import Path

import pytest

from agent.adapters.registry.hosts import Endpoint, HostsDirectory, endpoints_for, parse_hosts_toml
from agent.core.errors import ConfigError
from agent.core.lists.config import RegistrySettings

HOSTS = """\
server = "https://registry.example.com"

[host."https://mirror-a.example.com"]
  capabilities = ["pull", "resolve"]
  ca = "mirror-ca.pem"

[host."http://blobs-only.example.com"]
  capabilities = ["pull"]

[host."mirror-b.example.com:5000"]
  skip_verify = true
"""


def test_mirrors_in_order_then_the_server() -> None:
    endpoints = parse_hosts_toml(HOSTS, "/etc/containerd/certs.d/r/hosts.toml", "https://r")
    assert endpoints == (
        Endpoint(
            "https://mirror-a.example.com",
            ("/etc/containerd/certs.d/r/mirror-ca.pem",),
            mirror=True,
        ),
        Endpoint("https://mirror-b.example.com:5000", skip_verify=True, mirror=True),
        Endpoint("https://registry.example.com"),
    ), "pull-only hosts cannot resolve tags and are left out"


def test_without_a_server_the_upstream_is_the_registry() -> None:
    (only,) = parse_hosts_toml("", "x/hosts.toml", "https://r.io")
    assert only == Endpoint("https://r.io")


def test_bad_toml_names_the_file() -> None:
    with pytest.raises(ConfigError, match=r"hosts\.toml: invalid TOML"):
        parse_hosts_toml("server = ", "certs.d/r/hosts.toml", "https://r")


@pytest.mark.parametrize("folder", ["127.0.0.1_5000_", "127.0.0.1:5000", "_default"])
def test_lookup_order_finds_each_folder_name(tmp_path: Path, folder: str) -> None:
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "hosts.toml").write_text('server = "http://127.0.0.1:5000"\n')
    endpoints = HostsDirectory(tmp_path).endpoints("127.0.0.1:5000", "https://127.0.0.1:5000")
    assert endpoints == (Endpoint("http://127.0.0.1:5000"),)


def test_the_preload_list_overrides_hosts_toml(tmp_path: Path) -> None:
    (tmp_path / "r.io").mkdir()
    (tmp_path / "r.io" / "hosts.toml").write_text(HOSTS)
    hosts = HostsDirectory(tmp_path)
    settings = RegistrySettings(insecure=True, ca="/ca.pem", mirrors=("http://m.local",))

    endpoints = endpoints_for("r.io", settings, hosts)

    assert endpoints == (
        Endpoint("http://m.local", mirror=True),
        Endpoint("http://r.io", ("/ca.pem",)),
    )


def test_docker_hub_and_no_hosts_dir() -> None:
    hosts = HostsDirectory(None)
    assert endpoints_for("docker.io", RegistrySettings(), hosts) == (
        Endpoint("https://registry-1.docker.io"),
    )
