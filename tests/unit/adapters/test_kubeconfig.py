"""The kubeconfig as kubectl reads it (agent.adapters.kube.kubeconfig): which files, merged how, the
context chosen, its credentials — and never a credential in an error."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from agent.adapters.kube import kubeconfig
from agent.core.errors import AgentError, InputError
from tests.harness.tls import client_cert, make_ca_and_server


def config(
    path: Path, user: dict[str, Any], current: str | None = "c1", server: str = "https://k:6443"
) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "k", "cluster": {"server": server, "certificate-authority": "ca.pem"}}
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c1", "context": {"cluster": "k", "user": "u", "namespace": "ops"}}],
    }
    if current:
        document["current-context"] = current
    path.write_text(json.dumps(document))
    return path


def test_paths_follow_kubectls_order() -> None:
    assert kubeconfig.paths("/x") == [Path("/x")]
    listed = kubeconfig.paths(None, {"KUBECONFIG": f"/a{os.pathsep}/b", "HOME": "/h"})
    assert listed == [Path("/a"), Path("/b")]
    assert kubeconfig.paths(None, {"HOME": "/h"}) == [Path("/h/.kube/config")]


def test_kubeconfig_files_merge_first_wins_and_paths_are_relative_to_their_file(
    tmp_path: Path,
) -> None:
    first = tmp_path / "one" / "config"
    first.parent.mkdir()
    config(first, {"token": "t1"}, current=None)
    second = config(tmp_path / "two", {"token": "t2"}, current="c1")
    environ = {"KUBECONFIG": f"{tmp_path / 'absent'}{os.pathsep}{first}{os.pathsep}{second}"}
    loaded = kubeconfig.load(None, None, environ)
    assert (loaded.context, loaded.server, loaded.namespace) == ("c1", "https://k:6443", "ops")
    assert loaded.token == "t1", "the first file to name a user wins"
    assert loaded.ca_file == first.parent / "ca.pem"
    assert "t1" not in repr(loaded)


@pytest.mark.parametrize(
    ("user", "said"),
    [
        ({"auth-provider": {"name": "gcp"}}, "auth-provider 'gcp'"),
        ({"username": "admin", "password": "hunter2"}, "basic auth"),
        ({"client-certificate": "c.pem"}, "not both"),
        ({"client-key-data": "%%%"}, "not base64"),
        (
            {"exec": {"command": "x", "apiVersion": "client.authentication.k8s.io/v1alpha1"}},
            "v1alpha1",
        ),
    ],
)
def test_users_it_cannot_serve_are_named_without_their_secrets(
    tmp_path: Path, user: dict[str, Any], said: str
) -> None:
    path = config(tmp_path / "config", user)
    with pytest.raises(InputError) as raised:
        kubeconfig.load(str(path))
    assert said in str(raised.value) and str(path) in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_a_missing_file_or_context_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the kubeconfig"):
        kubeconfig.load(str(tmp_path / "nothing"))
    with pytest.raises(InputError, match="no kubeconfig at"):
        kubeconfig.load(None, None, {"KUBECONFIG": str(tmp_path / "nothing")})
    path = config(tmp_path / "config", {"token": "t"}, current=None)
    with pytest.raises(InputError, match="no current-context; give --context"):
        kubeconfig.load(str(path))
    with pytest.raises(InputError, match="no context 'prod'"):
        kubeconfig.load(str(path), "prod")


def test_in_a_pod_without_a_kubeconfig_its_service_account_is_used(tmp_path: Path) -> None:
    environ = {
        "KUBECONFIG": str(tmp_path / "nothing"),
        "KUBERNETES_SERVICE_HOST": "fd00::1",
        "KUBERNETES_SERVICE_PORT": "443",
    }
    loaded = kubeconfig.load(None, None, environ)
    assert (loaded.server, loaded.context) == ("https://[fd00::1]:443", "in-cluster")
    assert loaded.token_file == Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    with pytest.raises(InputError, match="no kubeconfig"):
        kubeconfig.load(None, "prod", environ)  # a context names a kubeconfig's


def test_credentials_are_never_sent_in_the_clear_nor_with_forged_header_lines(
    tmp_path: Path,
) -> None:
    plain = kubeconfig.load(str(config(tmp_path / "a", {"token": "t"}, server="http://k:8080")))
    with pytest.raises(InputError, match="never sent over plain http"):
        asyncio.run(kubeconfig.access(plain))
    forged = kubeconfig.load(str(config(tmp_path / "b", {"token": "t\r\nX-Evil: 1"})))
    with pytest.raises(InputError) as raised:
        asyncio.run(kubeconfig.access(forged))
    assert "X-Evil" not in str(raised.value)


def plugin(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "plugin"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def exec_user(command: str, **extra: Any) -> dict[str, Any]:
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": command, **extra}}


def test_an_exec_plugin_token_is_presented_and_the_plugin_told_it_is_not_interactive(
    tmp_path: Path,
) -> None:
    ca = make_ca_and_server(tmp_path / "pki")
    (tmp_path / "ca.pem").write_bytes(ca.ca.read_bytes())
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": "from-plugin"}}  # fmt: skip
    seen = f'echo "$KUBERNETES_EXEC_INFO" > {tmp_path}/info; echo "$GREETING" > {tmp_path}/env\n'
    plugin(tmp_path, f"{seen}echo '{json.dumps(credential)}'\n")
    user = exec_user("./plugin", env=[{"name": "GREETING", "value": "hello"}])
    access = asyncio.run(kubeconfig.access(kubeconfig.load(str(config(tmp_path / "config", user)))))
    assert access.headers() == {"Authorization": "Bearer from-plugin"}
    info = json.loads((tmp_path / "info").read_text())
    assert info["kind"] == "ExecCredential" and info["spec"]["interactive"] is False
    assert (tmp_path / "env").read_text() == "hello\n"


def test_an_exec_plugin_client_certificate_is_loaded(tmp_path: Path) -> None:
    ca = make_ca_and_server(tmp_path / "pki")
    (tmp_path / "ca.pem").write_bytes(ca.ca.read_bytes())
    cert, key = client_cert(ca, "someone")
    status = {"clientCertificateData": cert.decode(), "clientKeyData": key.decode()}
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": status}  # fmt: skip
    (tmp_path / "out.json").write_text(json.dumps(credential))
    plugin(tmp_path, f"cat {tmp_path / 'out.json'}\n")
    path = config(tmp_path / "config", exec_user(str(tmp_path / "plugin")))
    access = asyncio.run(kubeconfig.access(kubeconfig.load(str(path))))
    assert access.headers() == {} and access.ssl is not True and access.ssl is not False


def test_inline_client_certificates_load_and_a_bad_key_is_named_not_shown(tmp_path: Path) -> None:
    ca = make_ca_and_server(tmp_path / "pki")
    (tmp_path / "ca.pem").write_bytes(ca.ca.read_bytes())
    cert, key = client_cert(ca, "someone")
    user = {
        "client-certificate-data": base64.b64encode(cert).decode(),
        "client-key-data": base64.b64encode(key).decode(),
    }
    path = config(tmp_path / "config", user)
    assert asyncio.run(kubeconfig.access(kubeconfig.load(str(path)))).headers() == {}
    user["client-key-data"] = base64.b64encode(
        b"-----BEGIN PRIVATE KEY-----\nsecretstuff\n"
    ).decode()
    path = config(tmp_path / "config", user)
    with pytest.raises(InputError, match="cannot load its certificates") as raised:
        asyncio.run(kubeconfig.access(kubeconfig.load(str(path))))
    assert "secretstuff" not in str(raised.value)


@pytest.mark.parametrize(
    ("script", "said"),
    [
        ("exit 3\n", "exited 3"),
        ("echo not json\n", "no ExecCredential JSON"),
        ("echo '{\"status\": {}}'\n", "neither a token nor a client certificate"),
        ("head -c 2000000 /dev/zero | tr '\\0' ' '\n", "printed more than 1048576 bytes"),
    ],
)
def test_a_failing_exec_plugin_is_reported(tmp_path: Path, script: str, said: str) -> None:
    plugin(tmp_path, script)
    path = config(tmp_path / "config", exec_user(str(tmp_path / "plugin")))
    with pytest.raises(AgentError, match=said):
        asyncio.run(kubeconfig.access(kubeconfig.load(str(path))))


def test_a_credential_after_much_output_is_read_whole(tmp_path: Path) -> None:
    # 200 kB of padding first: more than a pipe holds, so it comes in many reads.
    (tmp_path / "ca.pem").write_bytes(make_ca_and_server(tmp_path / "pki").ca.read_bytes())
    plugin(
        tmp_path,
        "head -c 200000 /dev/zero | tr '\\0' ' '\necho '{\"status\": {\"token\": \"t\"}}'\n",
    )
    path = config(tmp_path / "config", exec_user(str(tmp_path / "plugin")))
    access = asyncio.run(kubeconfig.access(kubeconfig.load(str(path))))
    assert access.headers() == {"Authorization": "Bearer t"}


def test_a_missing_exec_plugin_gives_its_install_hint(tmp_path: Path) -> None:
    user = exec_user("no-such-plugin-here", installHint="install it with: apt install x")
    path = config(tmp_path / "config", user)
    with pytest.raises(InputError, match="install it with: apt install x"):
        asyncio.run(kubeconfig.access(kubeconfig.load(str(path))))


def test_the_credential_is_taken_when_the_plugin_exits_though_a_child_holds_its_output(
    tmp_path: Path,
) -> None:
    (tmp_path / "ca.pem").write_bytes(make_ca_and_server(tmp_path / "pki").ca.read_bytes())
    # A child in the background keeps the plugin's stdout open for 30 s after it exits.
    plugin(tmp_path, 'sleep 30 &\necho \'{"status": {"token": "t"}}\'\nexit 0\n')
    path = config(tmp_path / "config", exec_user(str(tmp_path / "plugin")))
    started = time.monotonic()
    access = asyncio.run(kubeconfig.access(kubeconfig.load(str(path))))
    assert access.headers() == {"Authorization": "Bearer t"}
    assert time.monotonic() - started < kubeconfig.EXEC_TIMEOUT / 2, "waited for the child"


def test_a_plugin_whose_child_left_its_group_still_ends_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kubeconfig, "EXEC_TIMEOUT", 1.0)
    plugin(tmp_path, "setsid sleep 5 &\nsleep 5\n")
    path = config(tmp_path / "config", exec_user(str(tmp_path / "plugin")))
    started = time.monotonic()
    with pytest.raises(AgentError, match="gave no credential in 1s"):
        asyncio.run(kubeconfig.access(kubeconfig.load(str(path))))
    assert time.monotonic() - started < 4, "the deadline held"


def test_a_relative_command_runs_from_the_kubeconfigs_folder_never_from_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ca.pem").write_bytes(make_ca_and_server(tmp_path / "pki").ca.read_bytes())
    plugin(tmp_path, 'echo \'{"status": {"token": "beside"}}\'\n')
    decoy = tmp_path / "bin"
    decoy.mkdir()
    (decoy / "plugin").write_text('#!/bin/sh\necho \'{"status": {"token": "from-path"}}\'\n')
    (decoy / "plugin").chmod(0o755)
    monkeypatch.setenv("PATH", f"{decoy}{os.pathsep}{os.environ['PATH']}")
    config(tmp_path / "config", exec_user("./plugin"))
    monkeypatch.chdir(tmp_path)
    access = asyncio.run(kubeconfig.access(kubeconfig.load("config")))
    assert access.headers() == {"Authorization": "Bearer beside"}
