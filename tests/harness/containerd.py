"""A real containerd run as root in a temp dir, trusting the test registry.

Every release line nodes run is here (scripts/fetch-containerd.sh): 1.6 (Debian bookworm),
1.7 (trixie) and 2.x (unstable) are unpacked into .cache/containerd, each checked to be the line
its name says before it starts, and an arm64 build runs under qemu-aarch64-static.
PREPULL_CONTAINERD picks the line the tests use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.core.images.platform import detect
from tests.harness.procs import HarnessError, require_binary, stop, tail, wait_until

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "containerd"
LINE_VARIABLE = "PREPULL_CONTAINERD"
LINES = ("1.6", "1.7", "2")
_CHECKED: set[str] = set()
"""The lines whose binary has been seen to be of that line in this run."""


@dataclass(frozen=True)
class Release:
    """One containerd build: where its binaries are, and how to run them."""

    line: str
    bin_dir: Path
    """Where scripts/fetch-containerd.sh unpacked it (never the machine's own containerd)."""
    sysroot: Path | None = None
    """Set for the arm64 build: run under qemu-aarch64-static with this sysroot."""

    @property
    def honours_pins(self) -> bool:
        """Seen: Debian's 1.6.20 ignores the pin label; 1.7.24 and 2.1.x report pinned."""
        return self.line not in ("1.6", "arm64")

    @property
    def races_on_parallel_pulls(self) -> bool:
        """containerd#8742: Debian's 1.6.20 (amd64 and arm64) predates the fix in 1.6.22."""
        return self.line in ("1.6", "arm64")

    @property
    def mounts_image_volumes(self) -> bool:
        """Image volumes (KEP-4639) came in containerd 2.1; seen: 1.6.20 and 1.7.24 fail
        CreateContainer with an image mount ("failed to mkdir \"\""), 2.1.9 mounts it."""
        return self.line == "2"

    def binary(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            raise HarnessError(f"{path} is missing: run scripts/fetch-containerd.sh (make deps)")
        return str(path)

    def command(self) -> list[str]:
        if self.sysroot is None:
            return [self.binary("containerd")]
        qemu = require_binary("qemu-aarch64-static", "qemu-user-static")
        return [qemu, "-L", str(self.sysroot), self.binary("containerd")]

    def check_version(self) -> None:
        """HarnessError unless the binary is of the line its name says (tests tie behaviour,
        such as 1.6's ignored pins, to the name): checked once per line and run."""
        if self.line in _CHECKED:
            return
        said = subprocess.run(
            [*self.command(), "--version"], capture_output=True, text=True, check=False
        ).stdout
        line = "1.6" if self.line == "arm64" else self.line
        if f" {line}." not in said:
            raise HarnessError(f"containerd {self.line!r} is not that line: {said.strip()!r}")
        _CHECKED.add(self.line)

    def ctr(self) -> str:
        """An x86 ctr for this node; any line's ctr speaks to any (the API is stable)."""
        return release_of(LINES[0]).binary("ctr") if self.sysroot else self.binary("ctr")


def release_of(line: str) -> Release:
    if line in LINES:
        return Release(line, CACHE / line / "usr" / "bin")
    if line == "arm64":
        return Release(line, CACHE / "arm64" / "usr" / "bin", sysroot=CACHE / "arm64")
    raise HarnessError(f"{LINE_VARIABLE}={line!r}: choose one of {', '.join(LINES)} or arm64")


def selected_release() -> Release:
    """The line the test run uses: $PREPULL_CONTAINERD, 1.6 if unset."""
    return release_of(os.environ.get(LINE_VARIABLE, LINES[0]))


RUNNING: set[Containerd] = set()
"""Every containerd started and not yet stopped: the tests check after each that all still run."""


# Own root/state/sockets so several instances (the demo's two "nodes") coexist with each other
# and with a system containerd. overlayfs is what real nodes use.
COMMON = """\
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""
"""
# The CRI plugin gives pause containers oom_score_adj -998; lowering a score needs
# CAP_SYS_RESOURCE, which root lacks in these VMs, and runc then dies with "can't get final
# child's PID from pipe". restrict_oom_score_adj clamps to containerd's own score.
# With registry headers set, containerd before 1.6.22/1.7.3 shares one headers map between
# concurrent pulls (containerd#8742): the tests can ask for that setup.
CONFIG_V2 = """\
version = 2
{common}
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs_d}"
{headers}"""
HEADERS_V2 = """\
    [plugins."io.containerd.grpc.v1.cri".registry.headers]
      X-Prepull-Test = ["1"]
"""
# containerd 2.x's own format: the CRI plugin is split into images and runtime plugins. (2.x
# migrates a version 2 file, but drops its CRI snapshotter setting: overlayfs whatever it said.)
CONFIG_V3 = """\
version = 3
{common}
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.cri.v1.runtime"]
  disable_apparmor = true
  restrict_oom_score_adj = true

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "{snapshotter}"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{sandbox_image}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{certs_d}"
{headers}{unpack}"""
HEADERS_V3 = """\
    [plugins."io.containerd.cri.v1.images".registry.headers]
      X-Prepull-Test = ["1"]
"""
# 2.x pulls for CRI through its transfer service, whose default unpack configuration names only
# overlayfs (containerd plugins/transfer/plugin.go): with another CRI snapshotter, pulls fail
# with "unable to initialize unpacker: no unpack platforms defined". Name the snapshotter.
UNPACK = """\
[[plugins."io.containerd.transfer.v1.local".unpack_config]]
  platform = "{platform}"
  snapshotter = "{snapshotter}"
"""


def render_config(release: Release, **values: object) -> str:
    """The config file for `release`: version 3 for 2.x, version 2 before."""
    common = COMMON.format(**values)
    if release.line == "2":
        unpack = "" if values["snapshotter"] == "overlayfs" else UNPACK.format(**values)
        headers = HEADERS_V3 if values["headers"] else ""
        return CONFIG_V3.format(
            **{**values, "common": common, "headers": headers, "unpack": unpack}
        )
    headers = HEADERS_V2 if values["headers"] else ""
    return CONFIG_V2.format(**{**values, "common": common, "headers": headers})


class Containerd:
    def __init__(
        self,
        workdir: Path,
        sandbox_image: str = "registry.k8s.io/pause:3.6",
        release: Release | None = None,
        snapshotter: str = "overlayfs",
        registry_headers: bool = False,
        edit_config: Callable[[str], str] = lambda text: text,
        environment: Mapping[str, str] | None = None,
        path_first: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.edit_config = edit_config
        self.environment = dict(environment or {})
        """Added to containerd's environment (e.g. CONTAINERD_DISABLE_PIGZ)."""
        self.path_first = path_first
        """A folder containerd's PATH searches first (e.g. stand-ins for unpigz or igzip)."""
        """Applied to the config file's text before containerd reads it (a setting under test)."""
        self.sandbox_image = sandbox_image
        """The pause image pods need; the tests push a runnable one to their registry."""
        self.release = release or selected_release()
        self.snapshotter = snapshotter
        self.registry_headers = registry_headers
        # Unix socket paths must stay under ~100 characters: keep them in a short /tmp dir.
        self._sockdir = Path(tempfile.mkdtemp(prefix="pp-", dir="/tmp"))
        self.socket = self._sockdir / "c.sock"
        self.certs_d = workdir / "certs.d"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        return self.workdir / "config.toml"

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def trust_http_registry(self, host: str) -> None:
        """Tell containerd to reach `host` over plain HTTP (containerd docs/hosts.md)."""
        folder = self.certs_d / host
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts.toml").write_text(
            f'server = "http://{host}"\n\n'
            f'[host."http://{host}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        )

    def trust_tls_registry(self, host: str, ca: Path) -> None:
        """Tell containerd to reach `host` over HTTPS, trusting `ca` (containerd docs/hosts.md)."""
        folder = self.certs_d / host
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts.toml").write_text(
            f'server = "https://{host}"\n\n'
            f'[host."https://{host}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
            f'  ca = "{ca}"\n'
        )

    def start(self) -> Containerd:
        if os.geteuid() != 0:
            raise HarnessError("containerd needs root: run the tests as root (sudo make test)")
        command = self.release.command()
        self.release.check_version()
        require_binary("runc", "runc")
        self.certs_d.mkdir(parents=True, exist_ok=True)
        config = self.config_file
        config.write_text(
            self.edit_config(
                render_config(
                    self.release,
                    root=self.workdir / "root",
                    state=self._sockdir / "state",
                    socket=self.socket,
                    certs_d=self.certs_d,
                    sandbox_image=self.sandbox_image,
                    snapshotter=self.snapshotter,
                    headers=self.registry_headers,
                    platform=detect(),
                )
            )
        )
        # containerd finds its shim on PATH: this line's own, next to its binary.
        env = dict(os.environ)
        env["PATH"] = f"{self.release.bin_dir}:{env.get('PATH', '')}"
        if self.path_first is not None:
            env["PATH"] = f"{self.path_first}:{env['PATH']}"
        env.update(self.environment)
        log = self.workdir / "containerd.log"
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                [*command, "--config", str(config), "--log-level", "warn"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Under qemu an arm64 containerd takes several seconds to start.
        wait_until(self._cri_answers, 120, f"containerd {self.release.line}", self._proc, log)
        RUNNING.add(self)
        return self

    @property
    def log(self) -> Path:
        return self.workdir / "containerd.log"

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def check_alive(self) -> None:
        """Fail loudly if containerd died (a panic or fatal error is the worst agent defect)."""
        if self._proc is not None and not self.alive():
            raise HarnessError(
                f"containerd {self.release.line} exited with {self._proc.returncode}:\n"
                f"{crash_report(self.log)}"
            )

    def _cri_answers(self) -> bool:
        if not self.socket.exists():
            return False
        probe = subprocess.run(
            [
                self.release.ctr(),
                "--address",
                str(self.socket),
                "-n",
                "k8s.io",
                "images",
                "ls",
                "-q",
            ],
            capture_output=True,
            timeout=10,
        )
        return probe.returncode == 0

    def ctr(self, *args: str, timeout: float = 60) -> str:
        """Run containerd's own CLI against this instance, in the CRI namespace."""
        result = subprocess.run(
            [self.release.ctr(), "--address", str(self.socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise HarnessError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def restart(self, edit_config: Callable[[str], str] | None = None) -> Containerd:
        """Stop containerd and start it again on the same root and socket, as a node operator
        does to apply a changed config (`edit_config` replaces the edit, when given)."""
        if self._proc is not None:
            stop(self._proc)
        if edit_config is not None:
            self.edit_config = edit_config
        return self.start()

    def stop(self) -> None:
        RUNNING.discard(self)
        if self._proc is not None and self._proc.poll() is None:
            from tests.harness.pods import remove_all_pods

            try:
                remove_all_pods(self.endpoint)
            except Exception as exc:  # cleanup must go on to stop containerd
                print(f"warning: could not remove pods of {self.endpoint}: {exc}")
        if self._proc is not None:
            stop(self._proc)
        shutil.rmtree(self._sockdir, ignore_errors=True)


def crash_report(log: Path) -> str:
    """The panic or fatal error in a containerd log, with the goroutine that raised it."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    for index, line in enumerate(lines):
        if line.startswith(("panic:", "fatal error:")):
            return "\n".join(lines[index : index + 40])
    return tail(log)
