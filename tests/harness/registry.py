"""A real docker-registry (distribution 2.8) on 127.0.0.1 with a random port, and pushing to it."""

from __future__ import annotations

import base64
import json
import re
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.harness.procs import HarnessError, free_port, require_binary, stop, wait_until
from tests.harness.tls import ServerCert

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: {quiet}
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
"""

TLS = """  tls:
    certificate: {cert}
    key: {key}
"""

PROXY = """proxy:
  remoteurl: {url}
"""

HTPASSWD = """auth:
  htpasswd:
    realm: prepull-test
    path: {path}
"""


class Registry:
    def __init__(
        self,
        workdir: Path,
        basic_auth: tuple[str, str] | None = None,
        tls: ServerCert | None = None,
        token_auth: str | None = None,
        proxy_of: str | None = None,
        access_log: bool = False,
    ) -> None:
        """`basic_auth`: (user, password) the registry demands, checked against an htpasswd.
        `tls`: serve HTTPS with this certificate (from a test CA).
        `token_auth`: the registry's `auth:` section for token auth (TokenServer.registry_config);
        pushes then fetch a token with `basic_auth` as the credentials.
        `proxy_of`: a pull-through cache of the registry at this URL (distribution's proxy mode).
        `access_log`: log every request (`requests()` reads them back)."""
        self.proxy_of = proxy_of
        self.access_log = access_log
        self.token_auth = token_auth
        self.workdir = workdir
        self.basic_auth = basic_auth
        self.tls = tls
        self._context = ssl.create_default_context(cafile=str(tls.ca)) if tls else None
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def start(self) -> Registry:
        binary = require_binary("docker-registry", "docker-registry")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.workdir / "config.yml"
        quiet = "false" if self.access_log else "true"
        text = CONFIG.format(root=self.workdir / "data", port=self.port, quiet=quiet)
        if self.proxy_of is not None:
            text += PROXY.format(url=self.proxy_of)
        if self.tls is not None:
            text += TLS.format(cert=self.tls.cert, key=self.tls.key)
        if self.token_auth is not None:
            text += self.token_auth
        elif self.basic_auth is not None:
            import bcrypt

            user, password = self.basic_auth
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(f"{user}:{hashed}\n")
            text += HTPASSWD.format(path=htpasswd)
        config.write_text(text)
        log = self.workdir / "registry.log"
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                [binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
            )
        wait_until(self._answers, 30, "docker-registry", self._proc, log)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop(self._proc)

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request served so far (needs access_log=True)."""
        log = (self.workdir / "registry.log").read_text(errors="replace")
        return re.findall(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) ([^ "]+) HTTP/[0-9.]+"', log)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"{self.url}/v2/", timeout=1, context=self._context
            ) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError as exc:
            return exc.code == 401 and self.basic_auth is not None
        except OSError:
            return False

    # -- the push side of the distribution API, for synthesized test images --

    def push_blob(self, repo: str, data: bytes, digest: str) -> None:
        start = self._request("POST", f"/v2/{repo}/blobs/uploads/", b"", {})
        location = urllib.parse.urljoin(self.url, start.headers["Location"])
        separator = "&" if "?" in location else "?"
        self._request(
            "PUT",
            f"{location}{separator}digest={urllib.parse.quote(digest)}",
            data,
            {"Content-Type": "application/octet-stream"},
        )

    def push_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        resp = self._request(
            "PUT", f"/v2/{repo}/manifests/{reference}", body, {"Content-Type": media_type}
        )
        return str(resp.headers["Docker-Content-Digest"])

    def delete_blob(self, repo: str, digest: str) -> None:
        self._request("DELETE", f"/v2/{repo}/blobs/{digest}", b"", {})

    def tags(self, repo: str) -> list[str]:
        resp = self._request("GET", f"/v2/{repo}/tags/list", None, {})
        return list(json.loads(resp.body)["tags"] or [])

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> _Reply:
        url = path if path.startswith("http") else f"{self.url}{path}"
        basic = None
        if self.basic_auth is not None:
            basic = "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode()
            if self.token_auth is None:
                headers = {**headers, "Authorization": basic}
        try:
            return self._open(method, url, body, headers)
        except urllib.error.HTTPError as exc:
            challenge = exc.headers.get("WWW-Authenticate", "")
            if exc.code != 401 or not challenge.startswith("Bearer") or basic is None:
                detail = exc.read().decode(errors="replace")[:500]
                raise HarnessError(f"{method} {url}: HTTP {exc.code}: {detail}") from None
        # Token auth: ask the realm for a token for the challenged scope, as a client would.
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = urllib.parse.urlencode({"service": params["service"], "scope": params["scope"]})
        token = json.loads(
            self._open("GET", f"{params['realm']}?{query}", None, {"Authorization": basic}).body
        )
        try:
            return self._open(
                method, url, body, {**headers, "Authorization": f"Bearer {token['token']}"}
            )
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise HarnessError(f"{method} {url}: HTTP {exc.code}: {detail}") from None

    def _open(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> _Reply:
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=30, context=self._context) as resp:
            return _Reply(resp.status, dict(resp.headers), resp.read())


class _Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
