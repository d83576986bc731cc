"""A real containerd (Debian 1.6, CRI v1) run as root in a temp dir, trusting the test registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.harness.procs import HarnessError, require_binary, stop, wait_until

# Own root/state/sockets so several instances (the demo's two "nodes") coexist with
# each other and with a system containerd; the native snapshotter works on any filesystem.
CONFIG = """\
version = 2
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

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  sandbox_image = "{sandbox_image}"
  # The CRI plugin gives pause containers oom_score_adj -998; lowering a score needs
  # CAP_SYS_RESOURCE, which root lacks in these VMs, and runc then dies with "can't get final
  # child's PID from pipe". Clamping to containerd's own score lets real pods start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs_d}"
"""


class Containerd:
    def __init__(self, workdir: Path, sandbox_image: str = "registry.k8s.io/pause:3.6") -> None:
        self.workdir = workdir
        self.sandbox_image = sandbox_image
        """The pause image pods need; the tests push a runnable one to their registry."""
        # Unix socket paths must stay under ~100 characters: keep them in a short /tmp dir.
        self._sockdir = Path(tempfile.mkdtemp(prefix="pp-", dir="/tmp"))
        self.socket = self._sockdir / "c.sock"
        self.certs_d = workdir / "certs.d"
        self._proc: subprocess.Popen[bytes] | None = None

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
        binary = require_binary("containerd", "containerd")
        require_binary("runc", "runc")
        self.certs_d.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.toml"
        config.write_text(
            CONFIG.format(
                root=self.workdir / "root",
                state=self._sockdir / "state",
                socket=self.socket,
                certs_d=self.certs_d,
                sandbox_image=self.sandbox_image,
            )
        )
        log = self.workdir / "containerd.log"
        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                [binary, "--config", str(config), "--log-level", "warn"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._cri_answers, 60, "containerd", self._proc, log)
        return self

    def _cri_answers(self) -> bool:
        if not self.socket.exists():
            return False
        ctr = shutil.which("ctr") or "ctr"
        probe = subprocess.run(
            [ctr, "--address", str(self.socket), "-n", "k8s.io", "images", "ls", "-q"],
            capture_output=True,
            timeout=10,
        )
        return probe.returncode == 0

    def ctr(self, *args: str) -> str:
        """Run containerd's own CLI against this instance, in the CRI namespace."""
        result = subprocess.run(
            ["ctr", "--address", str(self.socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise HarnessError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            from tests.harness.pods import remove_all_pods

            try:
                remove_all_pods(self.endpoint)
            except Exception as exc:  # cleanup must go on to stop containerd
                print(f"warning: could not remove pods of {self.endpoint}: {exc}")
        if self._proc is not None:
            stop(self._proc)
        shutil.rmtree(self._sockdir, ignore_errors=True)
