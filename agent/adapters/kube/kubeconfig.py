"""The user's kubeconfig, read the way kubectl reads it: `--kubeconfig`, else every file in
KUBECONFIG (merged: the first file to name a cluster, user or context wins, and the first to set
current-context), else ~/.kube/config; paths in a file relative to that file. What it yields is
the chosen context's server, the TLS context to reach it with, and the credentials to present:
a bearer token (inline, a token file, or an exec plugin's; client.authentication.k8s.io v1 and
v1beta1) or a client certificate (files, inline data, or an exec plugin's).

Credentials are read, never echoed: errors name the file, the context and the field."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import select
import signal
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.adapters.http import fits_header
from agent.adapters.kube.access import MAX_TOKEN_BYTES, service_url
from agent.adapters.kube.client import Access
from agent.core import files
from agent.core.defaults import SERVICE_ACCOUNT
from agent.core.errors import ConfigError, CredentialPluginFailed, InputError
from agent.core.lists import yamlsafe

MAX_KUBECONFIG_BYTES = 4 * 1024 * 1024
MAX_EXEC_OUTPUT = 1024 * 1024
EXEC_TIMEOUT = 60.0
EXEC_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


@dataclass(frozen=True)
class ExecPlugin:
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = EXEC_VERSIONS[0]
    install_hint: str = ""


@dataclass(frozen=True)
class Kubeconfig:
    """One context of the user's kubeconfig, resolved."""

    source: str
    """The file(s) it was read from, for messages."""
    context: str
    server: str
    namespace: str | None
    ca_file: Path | None = None
    ca_data: bytes | None = field(default=None, repr=False)
    insecure: bool = False
    tls_server_name: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    cert: tuple[Path | bytes, Path | bytes] | None = field(default=None, repr=False)
    """(certificate, key): each a file or the PEM itself."""
    exec_plugin: ExecPlugin | None = None


def paths(explicit: str | None, environ: dict[str, str] | None = None) -> list[Path]:
    """The files kubectl would read, in its order of precedence."""
    environ = dict(os.environ) if environ is None else environ
    if explicit:
        return [Path(explicit)]
    listed = [Path(p) for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return listed
    return [Path(environ.get("HOME", "~")).expanduser() / ".kube" / "config"]


def load(explicit: str | None, context: str | None = None, environ: Any = None) -> Kubeconfig:
    """The context `context` (None: current-context) of the kubeconfig kubectl would read;
    InputError (ConfigError with the file) saying what is missing or wrong."""
    candidates = paths(explicit, environ)
    merged: dict[str, dict[str, tuple[Path, dict[str, Any]]]] = {
        "clusters": {},
        "users": {},
        "contexts": {},
    }
    current: str | None = None
    read = []
    for path in candidates:
        if not path.exists() and not explicit:
            continue  # kubectl skips the KUBECONFIG entries that do not exist
        document = _document(path)
        read.append(str(path))
        for section, entries in merged.items():
            for name, body in _named(document, section, path):
                entries.setdefault(name, (path, body))
        if current is None and isinstance(document.get("current-context"), str):
            current = document["current-context"] or None
    source = ", ".join(read) or ", ".join(map(str, candidates))
    if not read and not explicit and context is None:
        in_pod = in_cluster(dict(os.environ) if environ is None else environ)
        if in_pod is not None:
            return in_pod
    if not read:
        raise InputError(
            f"no kubeconfig at {source}: give --kubeconfig, set KUBECONFIG, or write ~/.kube/config"
        )
    chosen = context or current
    if not chosen:
        raise InputError(f"{source}: no current-context; give --context")
    if chosen not in merged["contexts"]:
        raise InputError(f"{source}: no context {chosen!r}")
    where, ctx = merged["contexts"][chosen]
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if cluster_name not in merged["clusters"]:
        raise ConfigError(str(where), None, f"context {chosen!r} names no known cluster")
    cluster_file, cluster = merged["clusters"][cluster_name]
    user_file, user = merged["users"].get(user_name, (where, {})) if user_name else (where, {})
    namespace = ctx.get("namespace")
    return Kubeconfig(
        source=source,
        context=chosen,
        server=_server(cluster, cluster_file, chosen),
        namespace=namespace if isinstance(namespace, str) and namespace else None,
        ca_file=_path(cluster, "certificate-authority", cluster_file),
        ca_data=_data(cluster, "certificate-authority-data", cluster_file),
        insecure=cluster.get("insecure-skip-tls-verify") is True,
        tls_server_name=_string(cluster, "tls-server-name", cluster_file),
        **_user(user, user_file, chosen),
    )


def in_cluster(environ: dict[str, str]) -> Kubeconfig | None:
    """In a pod without a kubeconfig, kubectl uses the pod's service account (its token, CA and
    namespace, where kubelet mounts them) and the API server the environment names."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return Kubeconfig(
        source="the pod's service account",
        context="in-cluster",
        server=service_url(host, port),
        namespace=None,
        ca_file=SERVICE_ACCOUNT / "ca.crt",
        token_file=SERVICE_ACCOUNT / "token",
    )


def _document(path: Path) -> dict[str, Any]:
    try:
        text = files.read_text(path, MAX_KUBECONFIG_BYTES)
    except files.UnreadableFile as exc:
        raise InputError(
            f"cannot read the kubeconfig {path}: {exc}"
        ) from None  # the message carries the cause's own words
    found = yamlsafe.documents(text, str(path))
    document = found[0] if found else {}
    if not isinstance(document, dict):
        raise ConfigError(str(path), None, "a kubeconfig is a mapping (kind: Config)")
    return document


def _named(document: dict[str, Any], section: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The entries of `clusters`, `users` or `contexts`: (name, its body)."""
    singular = section[:-1]
    entries = document.get(section) or []
    if not isinstance(entries, list):
        raise ConfigError(str(path), None, f"`{section}` is not a list")
    named = []
    for entry in entries:
        name = entry.get("name") if isinstance(entry, dict) else None
        body = entry.get(singular) if isinstance(entry, dict) else None
        if not isinstance(name, str) or not isinstance(body, dict):
            raise ConfigError(str(path), None, f"an entry of `{section}` has no name or {singular}")
        named.append((name, body))
    return named


def _server(cluster: dict[str, Any], path: Path, context: str) -> str:
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise ConfigError(str(path), None, f"the cluster of context {context!r} has no server URL")
    return server.rstrip("/")


def _user(user: dict[str, Any], path: Path, context: str) -> dict[str, Any]:
    """The credential fields of a kubeconfig user, checked."""
    if "auth-provider" in user:
        provider = user["auth-provider"]
        name = provider.get("name") if isinstance(provider, dict) else "?"
        raise ConfigError(
            str(path),
            None,
            f"the user of context {context!r} uses auth-provider {name!r}, which kubectl "
            "dropped too (1.26): use its exec plugin (the provider's docs name it)",
        )
    if "username" in user or "password" in user:
        raise ConfigError(
            str(path),
            None,
            f"the user of context {context!r} uses basic auth, which no API server since 1.19 "
            "accepts: use a token, a client certificate or an exec plugin",
        )
    cert = _path(user, "client-certificate", path) or _data(user, "client-certificate-data", path)
    key = _path(user, "client-key", path) or _data(user, "client-key-data", path)
    if (cert is None) != (key is None):
        raise ConfigError(
            str(path), None, f"the user of context {context!r} has a client certificate or key "
            "but not both",
        )  # fmt: skip
    return {
        "token": _string(user, "token", path),
        "token_file": _path(user, "tokenFile", path),
        "cert": (cert, key) if cert is not None and key is not None else None,
        "exec_plugin": _exec(user.get("exec"), path) if "exec" in user else None,
    }


def _exec(spec: Any, path: Path) -> ExecPlugin:
    if not isinstance(spec, dict) or not isinstance(spec.get("command"), str):
        raise ConfigError(str(path), None, "`exec` names no command")
    version = spec.get("apiVersion", EXEC_VERSIONS[0])
    if version not in EXEC_VERSIONS:
        raise ConfigError(
            str(path), None, f"exec apiVersion {version!r}: {' or '.join(EXEC_VERSIONS)} only"
        )
    args = spec.get("args") or []
    env = spec.get("env") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(str(path), None, "exec `args` is not a list of strings")
    if not isinstance(env, list) or not all(
        isinstance(e, dict) and isinstance(e.get("name"), str) for e in env
    ):
        raise ConfigError(str(path), None, "exec `env` is not a list of name/value")
    command = spec["command"]
    if os.sep in command and not os.path.isabs(command):
        # Relative to the kubeconfig's folder, as kubectl does; made absolute, so that `./x`
        # beside a kubeconfig named without a folder is never looked for on PATH.
        command = str(path.parent.absolute() / command)
    return ExecPlugin(
        command,
        tuple(args),
        tuple((e["name"], str(e.get("value", ""))) for e in env),
        version,
        str(spec["installHint"]) if isinstance(spec.get("installHint"), str) else "",
    )


def _string(body: dict[str, Any], key: str, path: Path) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(str(path), None, f"`{key}` is not a string")
    return value


def _path(body: dict[str, Any], key: str, path: Path) -> Path | None:
    value = _string(body, key, path)
    return None if value is None else (path.parent / Path(value).expanduser())


def _data(body: dict[str, Any], key: str, path: Path) -> bytes | None:
    value = _string(body, key, path)
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(str(path), None, f"`{key}` is not base64") from None  # a secret's text


# -- from the kubeconfig to a request's credentials --------------------------------------------


async def access(config: Kubeconfig) -> Access:
    """The TLS context and headers for `config`'s API server, an exec plugin run if it names
    one; InputError for what the user must fix, AgentError for a plugin that failed."""
    token, cert = config.token, config.cert
    if config.token_file is not None:
        try:
            token = files.read_text(config.token_file, MAX_TOKEN_BYTES).strip()
        except files.UnreadableFile as exc:
            raise InputError(
                f"cannot read the token file {config.token_file}: {exc}"
            ) from None  # the message carries the cause's own words
    if config.exec_plugin is not None:
        token, cert = await _run_exec(config.exec_plugin, config)
    headers = {}
    if token:
        if not fits_header(token):
            raise InputError(
                f"the token of context {config.context!r} holds spaces or control characters"
            )
        headers["Authorization"] = f"Bearer {token}"
    if config.server.startswith("http://"):
        if headers or cert:
            # kubectl refuses to send credentials in the clear as well.
            raise InputError(f"{config.server}: credentials are never sent over plain http://")
        return Access(config.server, False, lambda: headers)
    return Access(config.server, _tls(config, cert), lambda: headers, config.tls_server_name)


def _tls(config: Kubeconfig, cert: tuple[Path | bytes, Path | bytes] | None) -> ssl.SSLContext:
    # The inline CA wins over the file, as in kubectl; insecure-skip-tls-verify ignores both.
    cadata = config.ca_data.decode(errors="replace") if config.ca_data is not None else None
    cafile = str(config.ca_file) if config.ca_file is not None and cadata is None else None
    try:
        if config.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cafile=cafile, cadata=cadata)
        if cert is not None:
            _load_cert(context, *cert)
    except (OSError, ssl.SSLError, ValueError) as exc:
        # The reason is the ssl module's (a file or a PEM error), never the key itself.
        raise InputError(
            f"{config.source}: context {config.context!r}: cannot load its certificates: {exc}"
        ) from None  # the cause may quote a key
    return context


def _load_cert(context: ssl.SSLContext, cert: Path | bytes, key: Path | bytes) -> None:
    """ssl reads certificates from files only: inline ones go through a private directory that
    is gone as soon as they are loaded."""
    with tempfile.TemporaryDirectory(prefix="prepull-kube-") as folder:
        named = []
        for name, item in (("cert.pem", cert), ("key.pem", key)):
            if isinstance(item, Path):
                named.append(str(item))
                continue
            written = Path(folder) / name
            written.touch(mode=0o600)
            written.write_bytes(item)
            named.append(str(written))
        context.load_cert_chain(named[0], named[1])


async def _run_exec(
    plugin: ExecPlugin, config: Kubeconfig
) -> tuple[str | None, tuple[Path | bytes, Path | bytes] | None]:
    """Run an exec credential plugin (never interactive: stdin is closed) and read the
    ExecCredential it prints: a token, or a client certificate and key."""
    info = {
        "apiVersion": plugin.api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": False},
    }
    env = {**os.environ, **dict(plugin.env), "KUBERNETES_EXEC_INFO": json.dumps(info)}
    named = f"exec plugin {plugin.command!r} of context {config.context!r}"
    argv = [plugin.command, *plugin.args]
    try:
        code, output = await asyncio.to_thread(_run_plugin, argv, env, named)
    except OSError as exc:
        hint = f" ({plugin.install_hint.strip()})" if plugin.install_hint.strip() else ""
        raise InputError(
            f"cannot run the {named}: {exc.strerror or exc}{hint}"
        ) from None  # the message carries the cause's own words
    if code != 0:
        raise CredentialPluginFailed(f"the {named} exited {code}")
    return _credential(output, named)


def _run_plugin(argv: list[str], env: dict[str, str], named: str) -> tuple[int, bytes]:
    """Run the plugin in its own process group; its exit code and what it printed by then.

    The credential is what it printed when it exited: its children may hold its stdout open
    (one that left the group with setsid even outlives the group's kill), so the end of the
    output is never waited for. Every wait is bounded by EXEC_TIMEOUT."""
    deadline = time.monotonic() + EXEC_TIMEOUT
    process = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, process_group=0
    )
    assert process.stdout is not None
    fd = process.stdout.fileno()
    os.set_blocking(fd, False)
    output = bytearray()
    try:
        open_ = True
        while True:
            exited = process.poll() is not None
            left = deadline - time.monotonic()
            if left <= 0 and not exited:
                raise CredentialPluginFailed(
                    f"the {named} gave no credential in {EXEC_TIMEOUT:.0f}s"
                )
            ready = open_ and select.select([fd], [], [], 0 if exited else min(left, 0.05))[0]
            if ready:
                chunk = os.read(fd, 64 * 1024)
                open_ = bool(chunk)
                output += chunk
                if len(output) > MAX_EXEC_OUTPUT:
                    raise CredentialPluginFailed(
                        f"the {named} printed more than {MAX_EXEC_OUTPUT} bytes"
                    )
            elif exited:
                return process.returncode, bytes(output)
            elif not open_:
                time.sleep(0.05)  # its output ended; wait for it to exit
    finally:
        # Its whole group: a shell's children would block writing what is not read.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.stdout.close()
        process.wait()


def _credential(
    output: bytes, named: str
) -> tuple[str | None, tuple[Path | bytes, Path | bytes] | None]:
    try:
        document = json.loads(output)
    except (ValueError, RecursionError):
        raise CredentialPluginFailed(
            f"the {named} printed no ExecCredential JSON"
        ) from None  # it may hold a token
    status = document.get("status") if isinstance(document, dict) else None
    if not isinstance(status, dict):
        raise CredentialPluginFailed(f"the {named} printed an ExecCredential without status")
    token = status.get("token")
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if isinstance(cert, str) and isinstance(key, str) and cert and key:
        return (token if isinstance(token, str) else None), (cert.encode(), key.encode())
    if isinstance(token, str) and token:
        return token, None
    raise CredentialPluginFailed(
        f"the {named} gave neither a token nor a client certificate and key"
    )
