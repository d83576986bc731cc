"""`prepull-agent once` against a real containerd and docker-registry."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import yaml

from agent.core.images import platform as platforms
from tests.harness.agent import image_status, once, run_agent, write_config
from tests.harness.containerd import Containerd
from tests.harness.images import push_image, push_single
from tests.harness.registry import Registry
from tests.harness.slowproxy import SlowProxy

NODE = str(platforms.detect())
OTHER = "linux/arm64" if NODE != "linux/arm64" else "linux/amd64"


def test_tag_entry_is_found_by_imagestatus_as_written(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    image = push_image(registry, repo, "1.0", (NODE, OTHER))
    config = write_config(tmp_path / "preload.yaml", registry, [image.tagged])

    first = once(containerd, config)

    assert first.code == 0, first
    assert first.line_for(image.tagged).startswith("pulled"), first.stdout
    present = image_status(containerd, image.tagged)
    assert present is not None, "kubelet's ImageStatus does not find the preloaded tag"
    assert present.id == image.configs[NODE], "the node holds another platform's image"
    assert image.by_digest() in present.repo_digests

    second = once(containerd, config)
    assert second.code == 0, second
    assert second.line_for(image.tagged).startswith("hit"), second.stdout


def test_pinned_tag_survives_registry_retag(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    locked = push_image(registry, repo, "1.25.3", (NODE, OTHER))
    # The tag is re-pushed with other content after the pin was taken.
    repushed = push_image(registry, repo, "1.25.3", (NODE, OTHER))
    config = write_config(tmp_path / "preload.yaml", registry, [locked.pinned()])

    result = once(containerd, config)

    assert result.code == 0, result
    on_node = image_status(containerd, locked.tagged)
    assert on_node is not None, "the pinned tag is not visible to kubelet"
    assert on_node.id == locked.configs[NODE], "the tag names the re-pushed content, not the pin"
    assert on_node.id != repushed.configs[NODE]
    as_written = image_status(containerd, locked.pinned())
    assert as_written is not None and as_written.id == locked.configs[NODE]


def test_pinned_entry_moves_a_drifted_tag_onto_the_pin(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    old = push_image(registry, repo, "2.0", (NODE,))
    once(containerd, write_config(tmp_path / "plain.yaml", registry, [old.tagged]))
    new = push_image(registry, repo, "2.0", (NODE,))
    # The new content arrives by digest first, so only the tag has to move.
    once(containerd, write_config(tmp_path / "digest.yaml", registry, [new.by_digest()]))
    assert image_status(containerd, new.tagged).id == old.configs[NODE]  # type: ignore[union-attr]

    result = once(containerd, write_config(tmp_path / "pinned.yaml", registry, [new.pinned()]))

    assert result.code == 0, result
    assert result.line_for(new.pinned()).startswith("bound"), result.stdout
    assert image_status(containerd, new.tagged).id == new.configs[NODE]  # type: ignore[union-attr]


def test_moved_tag_pulls_the_new_content_and_moves_the_tag(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    config = write_config(tmp_path / "preload.yaml", registry, [f"{registry.host}/{repo}:3"])
    old = push_image(registry, repo, "3", (NODE, OTHER))
    assert once(containerd, config).code == 0
    new = push_image(registry, repo, "3", (NODE, OTHER))

    result = once(containerd, config)

    assert result.code == 0, result
    line = result.line_for(new.tagged)
    assert line.startswith("pulled") and "tag moved" in line, line
    assert new.digest in line
    present = image_status(containerd, new.tagged)
    assert present is not None and present.id == new.configs[NODE]
    assert present.id != old.configs[NODE]


def test_digest_entries_are_found_by_the_same_digest(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    image = push_image(registry, repo, None, (NODE, OTHER))
    per_platform = image.by_digest(image.manifests[NODE])
    config = write_config(tmp_path / "preload.yaml", registry, [image.by_digest(), per_platform])

    result = once(containerd, config)

    assert result.code == 0, result
    for reference in (image.by_digest(), per_platform):
        found = image_status(containerd, reference)
        assert found is not None, f"a pod using {reference} would pull"
        assert found.id == image.configs[NODE]


def test_missing_platform_is_reported_and_the_others_still_preload(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    foreign = push_image(registry, f"{repo}-foreign", "1", (OTHER,))
    good = push_image(registry, repo, "1", (NODE,))
    config = write_config(tmp_path / "preload.yaml", registry, [foreign.tagged, good.tagged])

    result = once(containerd, config)

    assert result.code == 0, result  # refused for this platform: ready by the daemon's rule
    line = result.line_for(foreign.tagged)
    assert line.startswith("refused") and f"no {NODE} manifest in" in line, line
    assert OTHER in line
    assert image_status(containerd, foreign.tagged) is None
    assert image_status(containerd, good.tagged) is not None, "one failure stopped the others"


def test_single_platform_image_of_another_architecture_is_refused_before_pulling(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    foreign = push_single(registry, repo, "1", OTHER)
    config = write_config(tmp_path / "preload.yaml", registry, [foreign.by_digest()])

    result = once(containerd, config)

    assert result.code == 0, result
    line = result.line_for(foreign.by_digest())
    assert "refused before pulling" in line and OTHER in line, line
    assert image_status(containerd, foreign.by_digest()) is None, "it was pulled anyway"


def test_entry_for_other_platforms_is_skipped_and_counts_as_converged(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    config = tmp_path / "preload.yaml"
    config.write_text(
        f"images:\n  - image: {registry.host}/{repo}:never-pushed\n    platforms: [{OTHER}]\n"
    )

    result = once(containerd, config)

    assert result.code == 0, result
    assert result.line_for(f"{registry.host}/{repo}:never-pushed").startswith("skipped")


def test_missing_tag_names_registry_and_repository_and_the_others_preload(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    good = push_image(registry, repo, "1", (NODE,))
    missing = f"{registry.host}/{repo}:does-not-exist"
    config = write_config(tmp_path / "preload.yaml", registry, [missing, good.tagged])

    result = once(containerd, config, "--strict")  # failed for good: --strict exits 1

    assert result.code == 1, result
    line = result.line_for(missing)
    assert registry.host in line and repo in line and "not found" in line, line
    assert image_status(containerd, good.tagged) is not None


def test_a_pull_that_containerd_cannot_finish_is_reported_and_the_others_preload(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    broken = push_image(registry, f"{repo}-broken", "1", (NODE,))
    registry.delete_blob(broken.repo, broken.layers[NODE])
    good = push_image(registry, repo, "1", (NODE,))
    config = write_config(tmp_path / "preload.yaml", registry, [broken.tagged, good.tagged])

    result = once(containerd, config, "--strict")

    assert result.code == 1, result
    line = result.line_for(broken.tagged)
    assert line.startswith("failed") and "pull failed" in line, line
    assert broken.layers[NODE] in line, "the error should say what containerd could not fetch"
    assert image_status(containerd, broken.tagged) is None
    assert image_status(containerd, good.tagged) is not None


def test_bad_config_exits_2_with_file_and_line_and_pulls_nothing(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    good = push_image(registry, repo, "1", (NODE,))
    config = tmp_path / "preload.yaml"
    config.write_text(f"images:\n  - {good.tagged}\n  - {registry.host}/{repo}:bad tag\n")

    result = once(containerd, config)

    assert result.code == 2, result
    assert f"{config}:3:" in result.stderr, result.stderr
    assert image_status(containerd, good.tagged) is None, "something was pulled from a bad config"


def test_unreachable_cri_endpoint_is_named(tmp_path: Path, registry: Registry) -> None:
    config = write_config(tmp_path / "preload.yaml", registry, [f"{registry.host}/x/y:1"])
    endpoint = f"unix://{tmp_path}/no-such.sock"

    result = run_agent("once", "--config", str(config), "--cri-endpoint", endpoint)

    assert result.code == 1, result
    assert endpoint in result.stderr, result.stderr


def test_endpoint_from_environment(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str, monkeypatch
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    config = write_config(tmp_path / "preload.yaml", registry, [image.tagged])
    monkeypatch.setenv("PREPULL_CRI_ENDPOINT", containerd.endpoint)

    result = run_agent("once", "--config", str(config))

    assert result.code == 0, result
    assert image_status(containerd, image.tagged) is not None


def test_preloaded_images_carry_the_pinned_label(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    config = write_config(tmp_path / "preload.yaml", registry, [image.pinned()])

    assert once(containerd, config).code == 0

    listing = containerd.ctr("images", "ls")
    line = next((row for row in listing.splitlines() if row.startswith(image.tagged + " ")), "")
    assert "io.cri-containerd.pinned=pinned" in line, f"{image.tagged} not labelled:\n{listing}"
    # One labelled record pins the image, whatever name kubelet asks about.
    for name in (image.tagged, image.by_digest()):
        seen = image_status(containerd, name)
        assert seen is not None
        # What kubelet's image GC asks: honoured from 1.6.22/1.7.3, ignored by Debian's 1.6.20.
        assert seen.pinned is containerd.release.honours_pins, name


def test_pin_false_leaves_images_unlabelled(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    config = write_config(tmp_path / "preload.yaml", registry, [image.tagged], "pin: false\n")

    assert once(containerd, config).code == 0

    line = next(
        r for r in containerd.ctr("images", "ls").splitlines() if r.startswith(image.tagged)
    )
    assert "io.cri-containerd.pinned" not in line


def test_json_output_is_one_document_scripts_can_read(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    good = push_image(registry, repo, "1", (NODE,))
    config = write_config(
        tmp_path / "preload.yaml", registry, [good.pinned(), f"{registry.host}/{repo}:absent"]
    )

    result = once(containerd, config, "-o", "json")

    assert result.code == 0, result  # the missing tag fails for good: reported, not waited for
    document = json.loads(result.stdout)
    assert document["node"] == NODE and document["converged"] is False and document["ready"]
    by_image = {image["image"]: image for image in document["images"]}
    pulled = by_image[good.pinned()]
    assert pulled["status"] == "pulled" and pulled["digest"] == good.digest and pulled["line"] == 2
    assert pulled["bytes"] > 0 and pulled["image_id"].startswith("sha256:")
    failed = by_image[f"{registry.host}/{repo}:absent"]
    assert failed["status"] == "failed" and failed["permanent"] is True
    assert "not found: tag 'absent' (the repository exists)" in failed["detail"]


def _once_on_a_terminal(node: Containerd, config: Path) -> tuple[int, str]:
    """Run `once` with its output on a pseudo-terminal; its exit code and what it drew."""
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "agent", "once", "--config", str(config)]
    command += ["--cri-endpoint", node.endpoint]
    proc = subprocess.Popen(command, stdout=follower, stderr=subprocess.DEVNULL)
    os.close(follower)
    output = b""
    with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
        while chunk := os.read(leader, 4096):
            output += chunk
    os.close(leader)
    return proc.wait(120), output.decode()


def test_on_a_terminal_digests_are_short_and_whole_with_no_trunc(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    config = write_config(tmp_path / "preload.yaml", registry, [image.pinned()])
    code, text = _once_on_a_terminal(containerd, config)
    assert code == 0, text
    assert f"{image.digest[:19]}…" in text and image.digest not in text, text
    whole = once(containerd, config, "--no-trunc")  # not a terminal: whole digests anyway
    assert image.digest in whole.line_for(image.pinned())


def test_dry_run_prints_the_plan_and_does_none_of_it(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    present = push_image(registry, f"{repo}-present", "1", (NODE,))
    absent = push_image(registry, f"{repo}-absent", "1", (NODE,))
    assert once(containerd, write_config(tmp_path / "a.yaml", registry, [present.tagged])).code == 0
    config = write_config(tmp_path / "b.yaml", registry, [present.tagged, absent.pinned()])

    result = once(containerd, config, "--dry-run")

    assert result.code == 1, result
    assert result.line_for(present.tagged).startswith("hit ")
    line = result.line_for(absent.pinned())
    assert line.startswith("pull ") and absent.by_digest() in line, line
    assert image_status(containerd, absent.by_digest()) is None, "a dry run pulled"
    assert once(containerd, config).code == 0
    assert once(containerd, config, "--dry-run").code == 0, "nothing left to do"


def test_a_refused_entry_leaves_a_dry_run_nothing_to_do(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    """As its --help says: 0 when a pass would pull or bind nothing; the refusal is listed."""
    present = push_image(registry, f"{repo}-present", "1", (NODE,))
    foreign = push_image(registry, f"{repo}-foreign", "1", ("linux/s390x",))
    assert once(containerd, write_config(tmp_path / "a.yaml", registry, [present.tagged])).code == 0
    config = write_config(tmp_path / "b.yaml", registry, [present.tagged, foreign.pinned()])

    result = once(containerd, config, "--dry-run")

    assert result.code == 0, result
    assert result.line_for(foreign.pinned()).startswith("refused "), result.stdout
    assert once(containerd, config, "--strict").code == 1, "a strict pass is still not converged"


def test_yaml_output_and_rows_without_headers(
    tmp_path: Path, registry: Registry, containerd: Containerd, repo: str
) -> None:
    image = push_image(registry, repo, "1", (NODE,))
    config = write_config(tmp_path / "preload.yaml", registry, [image.pinned()])

    rows = once(containerd, config, "--no-headers")
    as_yaml = once(containerd, config, "-o", "yaml")
    as_json = once(containerd, config, "--format", "json")  # the flag before -o still works

    assert rows.code == 0 and rows.stdout.splitlines() == [rows.line_for(image.pinned())], rows
    assert "converged on" not in rows.stdout
    document, same = yaml.safe_load(as_yaml.stdout), json.loads(as_json.stdout)
    assert as_yaml.code == as_json.code == 0
    assert document["converged"] is same["converged"] is True
    assert [(i["image"], i["status"], i["digest"]) for i in document["images"]] == [
        (image.pinned(), "hit", image.digest)
    ]
    assert document.keys() == same.keys()


def test_on_a_terminal_pulls_in_flight_are_drawn_and_redrawn_until_they_finish(
    tmp_path: Path, registry: Registry, fresh_containerd: Containerd, repo: str
) -> None:
    # 3 MiB through a proxy that holds every 16 KiB for 20 ms: several seconds of pulling.
    proxy = SlowProxy(registry.port, delay=0.02).start()
    try:
        image = push_single(registry, repo, "1", NODE, 3 << 20)
        fresh_containerd.trust_http_registry(proxy.host)
        slow = image.pinned().replace(registry.host, proxy.host)
        config = tmp_path / "preload.yaml"
        config.write_text(
            f"images:\n  - {slow}\nregistries:\n  {proxy.host}:\n    insecure: true\n"
        )
        code, text = _once_on_a_terminal(fresh_containerd, config)
    finally:
        proxy.stop()
    assert code == 0, text
    # Each redraw: `pulling   <bytes> of <total> (<percent>), <rate>/s, <seconds>  <image>`.
    amounts = [
        line.partition("pulling ")[2].strip().partition(" of ")[0]
        for line in text.splitlines()
        if "pulling " in line and " of " in line and "/s, " in line
    ]
    assert len(set(amounts)) >= 2, f"the bytes so far should grow between redraws: {text}"
    assert "\x1b[1F\x1b[J" in text, "the progress line is erased before each redraw"
    # The result comes after the progress, and the block is gone at the end.
    assert text.rindex("pulling ") < text.index("pulled "), text
    assert text.rstrip().endswith("(1 pulled)"), text
