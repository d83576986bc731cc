"""kubectl's conventions, through the real binary: `-o` is the output format on every verb,
files have `--output-file`, tables take `--no-headers`, `status` takes the daemon's address as
its `--listen` is written."""

from __future__ import annotations

import argparse
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from agent.cli.parser import parser

STRUCTURED = ("once", "lock", "resolve", "status", "doctor", "from-manifests", "suggest")


def agent(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "agent", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.mark.parametrize("verb", STRUCTURED)
def test_every_verb_with_output_takes_the_format_as_o_and_json(verb: str) -> None:
    (commands,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    sub = commands.choices[verb]
    output = next(a for a in sub._actions if "-o" in a.option_strings)
    assert output.dest == "format" and output.option_strings == ["-o", "--output"]
    assert output.type("json") == "json"
    with pytest.raises(Exception, match="unknown output format"):
        output.type("preload.yaml")


def test_a_file_given_to_o_is_refused_with_the_flag_that_writes_it(tmp_path: Path) -> None:
    config = tmp_path / "preload.yaml"
    config.write_text("images:\n  - registry.invalid/a/b:1\n")
    lock = tmp_path / "preload.lock.yaml"

    done = agent("lock", "--config", str(config), "-o", str(lock))

    assert done.returncode == 2, done
    assert f"write a file with --output-file {lock}" in done.stderr
    assert not lock.exists()


MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    spec:
      containers:
        - name: web
          image: registry.example/shop/web:1.2
          imagePullPolicy: IfNotPresent
"""


def test_generators_print_yaml_or_json_and_write_files_with_output_file(tmp_path: Path) -> None:
    as_yaml = agent("from-manifests", "-", stdin=MANIFEST)
    as_json = agent("from-manifests", "-", "-o", "json", stdin=MANIFEST)
    written = tmp_path / "preload.yaml"
    to_file = agent("from-manifests", "-", "--output-file", str(written), stdin=MANIFEST)

    assert as_yaml.returncode == as_json.returncode == to_file.returncode == 0
    listed = yaml.safe_load(as_yaml.stdout)
    assert listed["images"] == ["registry.example/shop/web:1.2"]
    assert json.loads(as_json.stdout) == listed
    assert to_file.stdout == "" and written.read_text() == as_yaml.stdout


STATUS = {
    "ready": True,
    "node_platform": "linux/amd64",
    "runtime": {"name": "containerd", "version": "2.1.9"},
    "last_reconcile": None,
    "images": [
        {"image": "r.example/a:1", "state": "ready", "digest": "sha256:" + "a" * 64,
         "bytes": 1024, "pinned": True, "last_pull_seconds": 1.5},
    ],
}  # fmt: skip


@pytest.fixture
def daemon() -> Iterator[str]:
    """A stand-in for the daemon's /status, at host:port as its --listen is written."""

    class Status(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(STATUS).encode()
            self.send_response(200 if self.path == "/status" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_status_reads_host_port_and_prints_rows_without_headers(daemon: str) -> None:
    table = agent("status", "--endpoint", daemon)
    rows = agent("status", "--endpoint", daemon, "--no-headers")
    as_yaml = agent("status", "--endpoint", f"http://{daemon}/", "-o", "yaml")

    assert table.returncode == rows.returncode == as_yaml.returncode == 0, table.stderr
    assert table.stdout.splitlines()[1].split()[:2] == ["IMAGE", "STATE"]
    (row,) = rows.stdout.splitlines()
    assert row.split()[:2] == ["r.example/a:1", "ready"] and row in table.stdout
    assert yaml.safe_load(as_yaml.stdout) == STATUS


def test_status_refuses_an_address_the_daemon_cannot_serve() -> None:
    done = agent("status", "--endpoint", "ftp://127.0.0.1:9410")
    assert done.returncode == 2 and "serves http://" in done.stderr, done


def test_from_manifests_reads_a_stream_of_json_documents() -> None:
    as_json = json.dumps(yaml.safe_load(MANIFEST))
    done = agent("from-manifests", "-", "-o", "json", stdin=f"{as_json}\n{as_json}\n")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["images"] == ["registry.example/shop/web:1.2"]


def test_every_problem_of_a_list_is_reported_with_its_line(tmp_path: Path) -> None:
    """A list is fixed in one go: not one error per run."""
    config = tmp_path / "preload.yaml"
    config.write_text(
        "images:\n"
        "  - r.io/a/good:1\n"
        "  - r.io/a/UPPER:1\n"  # 3: not a reference
        "  - r.io/a/good:1\n"  # 4: listed twice
        "concurrency: many\n"  # 5: not a number
        "platfroms: []\n"  # 6: unknown key
    )

    done = agent("check", "--config", str(config))

    assert done.returncode == 2, done
    lines = done.stderr.splitlines()
    assert [line.removeprefix("prepull-agent: ").split(": ")[0] for line in lines] == [
        f"{config}:{n}" for n in (3, 4, 5, 6)
    ], done.stderr
    assert "UPPER" in lines[0] and "listed twice" in lines[1] and "platfroms" in lines[3]


def test_a_line_names_the_digest_once() -> None:
    """`name:tag@sha256:…` already says the digest: piped, the 64 hex digits once, not twice."""
    from agent.cli.converge import format_outcome
    from agent.core.lists.config import parse
    from agent.core.ports import Outcome, Status

    digest = "sha256:" + "a" * 64
    pinned, tagged = parse(f"images:\n  - r.io/app:1@{digest}\n  - r.io/web:2\n").images
    line = format_outcome(Outcome(pinned, Status.PULLED, "absent", digest, "id", 5500, 0.1))
    assert line.count("a" * 64) == 1 and "5.5 kB in 0.1s" in line, line
    assert format_outcome(Outcome(tagged, Status.HIT, "", digest)).count("a" * 64) == 1
