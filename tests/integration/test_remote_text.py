"""Text from outside reaches no person raw: a registry's error message carrying escape and
control sequences, line breaks and bidi overrides is escaped in every sink — `once`'s lines, the
daemon's text log, /readyz, /status (JSON keeps it as JSON escapes it) and the `status` verb —
on real containerd."""

from __future__ import annotations

import json
from pathlib import Path

from agent.core.images import platform as platforms
from tests.harness.agent import once, run_agent
from tests.harness.containerd import Containerd
from tests.harness.daemon import ConfigMapVolume
from tests.harness.faults import RAW_CONTROLS, HostileErrorText
from tests.harness.images import push_image
from tests.harness.registry import Registry

NODE = str(platforms.detect())


def raw(text: str) -> list[str]:
    return [c for c in RAW_CONTROLS if c in text]


def test_a_registrys_hostile_error_text_is_escaped_in_every_sink(
    tmp_path: Path,
    volume: ConfigMapVolume,
    registry: Registry,
    containerd: Containerd,
    repo: str,
    start_daemon,
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    proxy = HostileErrorText(registry.url).start()
    try:
        ref = f"{proxy.host}/{image.repo}@{image.digest}"
        text = f"images:\n  - {ref}\nregistries:\n  {proxy.host}:\n    insecure: true\n"
        config = tmp_path / "preload.yaml"
        config.write_text(text)

        result = once(containerd, config, "--strict")

        assert result.code == 1, result
        assert "\\x1b]0;pwned\\x07" in result.stdout, result.stdout  # said, escaped
        assert not raw(result.stdout + result.stderr), raw(result.stdout + result.stderr)
        assert len(result.stdout.splitlines()) == 2, result.stdout  # the image's line, the summary
        document = json.loads(once(containerd, config, "-o", "json").stdout)
        assert not raw(json.dumps(document, ensure_ascii=False)), "JSON holds it escaped too"

        volume.write(text + "resync: 1h\n")
        daemon = start_daemon(volume.path, "--log-format", "text")
        daemon.wait_for(
            lambda: "pwned" in daemon.get("/status")[1], 60, "the failure to be reported"
        )
        status = json.loads(daemon.get("/status")[1])
        error = status["images"][0]["last_error"]
        assert "pwned" in error and not raw(error), error
        log = daemon.log()
        assert "pwned" in log and not raw(log), raw(log)
        assert not any(line.startswith("NODE  READY") for line in log.splitlines())
        # Denied for good: reported, not waited for, once the first pass has ended (the image's
        # outcome reaches /status before the pass's end reaches /readyz).
        daemon.wait_for(lambda: daemon.get("/readyz")[0] == 200, 60, "the first pass to end")
        code, readyz = daemon.get("/readyz")
        assert code == 200 and "pwned" in readyz and not raw(readyz), readyz
        shown = run_agent("status", "--endpoint", daemon.url)
        assert "pwned" in shown.stdout and not raw(shown.stdout + shown.stderr), shown
    finally:
        proxy.stop()
