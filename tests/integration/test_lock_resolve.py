"""`prepull-agent lock` and `resolve` against a real registry; the lock on a real node."""

from __future__ import annotations

import json
from pathlib import Path

from agent.core.images import platform as platforms
from agent.core.lists import config as configs
from tests.harness.agent import image_status, once, run_agent, write_config
from tests.harness.containerd import Containerd
from tests.harness.images import push_image
from tests.harness.registry import Registry

NODE = str(platforms.detect())


def test_lock_pins_tags_to_the_index_digest_and_keeps_pinned_entries(
    tmp_path: Path, registry: Registry, repo: str
) -> None:
    tagged = push_image(registry, repo, "1.25.3")
    pinned = push_image(registry, f"{repo}-pinned", "2")
    config = tmp_path / "preload.yaml"
    config.write_text(
        "images:\n"
        f"  - {tagged.tagged}\n"
        f"  - {pinned.pinned()}\n"
        f"  - image: {tagged.name}:1.25.3-arm\n"
        "    platforms: [linux/arm64]\n"
        f"registries:\n  {registry.host}:\n    insecure: true\n"
        "concurrency: 2\nresync: 10m\n"
    )
    push_image(registry, repo, "1.25.3-arm", ("linux/arm64",))
    lock = tmp_path / "preload.lock.yaml"

    result = run_agent("lock", "--config", str(config), "--output-file", str(lock))

    assert result.code == 0, result
    locked = configs.load(lock)
    written = [e.written for e in locked.images]
    assert written[0] == f"{tagged.tagged}@{tagged.digest}", "not pinned to the index digest"
    assert written[1] == pinned.pinned(), "an already pinned entry was changed"
    assert written[2].startswith(f"{tagged.name}:1.25.3-arm@sha256:")
    assert [str(p) for p in locked.images[2].platforms] == ["linux/arm64"]
    assert locked.concurrency == 2 and locked.resync_seconds == 600
    assert locked.registry(registry.host).insecure


def test_lock_with_an_unresolvable_tag_writes_nothing(
    tmp_path: Path, registry: Registry, repo: str
) -> None:
    good = push_image(registry, repo, "1")
    missing = f"{registry.host}/{repo}:missing"
    config = write_config(tmp_path / "preload.yaml", registry, [good.tagged, missing])
    lock = tmp_path / "preload.lock.yaml"

    result = run_agent("lock", "--config", str(config), "--output-file", str(lock))

    assert result.code == 1, result
    assert missing in result.stderr and "not found" in result.stderr, result.stderr
    assert not lock.exists(), "a partial lock was written"


def test_lock_taken_before_a_retag_keeps_nodes_on_the_locked_content(
    tmp_path: Path, registry: Registry, fresh_containerd: Containerd, repo: str
) -> None:
    before = push_image(registry, repo, "1.25.3")
    config = write_config(tmp_path / "preload.yaml", registry, [before.tagged])
    lock = tmp_path / "preload.lock.yaml"
    assert run_agent("lock", "--config", str(config), "--output-file", str(lock)).code == 0
    after = push_image(registry, repo, "1.25.3")

    result = once(fresh_containerd, lock)

    assert result.code == 0, result
    present = image_status(fresh_containerd, before.tagged)
    assert present is not None and present.id == before.configs[NODE]
    assert present.id != after.configs[NODE]


def test_resolve_prints_the_index_and_the_platform_manifest(registry: Registry, repo: str) -> None:
    image = push_image(registry, repo, "5", ("linux/amd64", "linux/arm64", "linux/arm/v7"))

    result = run_agent("resolve", "--insecure", image.tagged, "--platform", "linux/arm64")

    assert result.code == 0, result
    assert image.digest in result.stdout
    chosen = result.stdout.splitlines()[-1].split()
    assert chosen == ["linux/arm64", image.manifests["linux/arm64"]], result.stdout


def test_resolve_for_a_platform_the_image_lacks_exits_1(registry: Registry, repo: str) -> None:
    image = push_image(registry, repo, "6", ("linux/amd64",))

    result = run_agent("resolve", "--insecure", image.tagged, "--platform", "linux/s390x")

    assert result.code == 1, result
    assert "no linux/s390x manifest" in result.stdout, result.stdout


def test_resolve_of_an_invalid_reference_exits_2(registry: Registry) -> None:
    result = run_agent("resolve", f"{registry.host}/UPPER/case:1")

    assert result.code == 2, result
    assert "UPPER" in result.stderr


def test_a_missing_repository_and_a_missing_tag_are_told_apart(
    tmp_path: Path, registry: Registry, repo: str
) -> None:
    push_image(registry, repo, "1", (NODE,))
    config = write_config(
        tmp_path / "preload.yaml",
        registry,
        [f"{registry.host}/{repo}:nope", f"{registry.host}/{repo}-absent:1"],
    )

    result = run_agent("lock", "--config", str(config))

    assert result.code == 1, result
    lines = result.stderr.splitlines()
    assert any(
        ":nope" in line and "not found: tag 'nope' (the repository exists)" in line
        for line in lines
    ), result.stderr
    assert any(
        "-absent:1" in line and "not found: the repository does not exist" in line for line in lines
    ), result.stderr
    # resolve (a GET: distribution answers MANIFEST_UNKNOWN for both) tells them apart too.
    missing_tag = run_agent("resolve", f"{registry.host}/{repo}:nope", "--insecure")
    missing_repo = run_agent("resolve", f"{registry.host}/{repo}-absent:1", "--insecure")
    assert missing_tag.code == missing_repo.code == 1
    assert "not found: tag 'nope' (the repository exists)" in missing_tag.stderr, missing_tag
    assert "not found: the repository does not exist" in missing_repo.stderr, missing_repo


def test_https_to_a_plain_http_registry_says_how_to_mark_it_insecure(
    registry: Registry, repo: str
) -> None:
    image = push_image(registry, repo, "1", (NODE,))

    result = run_agent("resolve", image.tagged)  # no --insecure: HTTPS to a plain-HTTP registry

    assert result.code == 1, result
    assert "answers in plain HTTP" in result.stderr, result.stderr
    assert f"registries.{registry.host}.insecure: true" in result.stderr, result.stderr


def test_lock_check_passes_on_a_current_lock_and_names_what_went_stale(
    tmp_path: Path, registry: Registry, repo: str
) -> None:
    tagged = push_image(registry, repo, "1", (NODE,))
    pinned = push_image(registry, f"{repo}-pinned", "2", (NODE,))
    config = write_config(
        tmp_path / "preload.yaml", registry, [f"{tagged.tagged}  # the app", pinned.pinned()]
    )
    lock = tmp_path / "preload.lock.yaml"
    assert run_agent("lock", "--config", str(config), "--output-file", str(lock)).code == 0
    assert "# the app" in lock.read_text(), "the user's comment was lost"
    written = lock.read_text()

    current = run_agent("lock", "--config", str(config), "--output-file", str(lock), "--check")
    assert current.code == 0 and "is current" in current.stdout, current

    push_image(registry, repo, "1", (NODE,))  # the tag is re-pushed
    push_image(registry, f"{repo}-pinned", "2", (NODE,))
    stale = run_agent("lock", "--config", str(config), "--output-file", str(lock), "--check")

    assert stale.code == 1, stale
    assert f"stale    {tagged.tagged} (line 2): the lock has {tagged.digest}" in stale.stdout
    assert f"stale    {pinned.pinned()} (line 3): the tag moved in the registry" in stale.stdout
    assert lock.read_text() == written, "--check must write nothing"


def test_lock_json_is_one_document_naming_each_entry_its_digest_or_error(
    tmp_path: Path, registry: Registry, repo: str
) -> None:
    tagged = push_image(registry, repo, "1", (NODE,))
    pinned = push_image(registry, f"{repo}-pinned", "2", (NODE,))
    config = write_config(tmp_path / "preload.yaml", registry, [tagged.tagged, pinned.pinned()])
    lock = tmp_path / "preload.lock.yaml"

    done = run_agent("lock", "--config", str(config), "--output-file", str(lock), "-o", "json")
    assert done.code == 0, done
    document = json.loads(done.stdout)
    assert (document["lock"], document["written"], document["check"]) == (str(lock), True, False)
    assert document["images"] == [
        {
            "image": tagged.tagged,
            "line": 2,
            "digest": tagged.digest,
            "locked": f"{tagged.tagged}@{tagged.digest}",
            "error": None,
        },
        {
            "image": pinned.pinned(),
            "line": 3,
            "digest": pinned.digest,
            "locked": pinned.pinned(),
            "error": None,
        },
    ]
    assert f"{tagged.tagged}@{tagged.digest}" in lock.read_text()

    push_image(registry, repo, "1", (NODE,))  # the tag is re-pushed
    stale = run_agent(
        "lock", "--config", str(config), "--output-file", str(lock), "--check", "-o", "json"
    )
    assert stale.code == 1, stale
    document = json.loads(stale.stdout)
    assert (document["written"], document["check"], document["current"]) == (False, True, False)
    assert len(document["problems"]) == 1 and tagged.tagged in document["problems"][0]

    missing = write_config(tmp_path / "missing.yaml", registry, [f"{registry.host}/{repo}:nope"])
    failed = run_agent("lock", "--config", str(missing), "-o", "json")
    assert failed.code == 1, failed
    (entry,) = json.loads(failed.stdout)["images"]
    assert entry["digest"] is None and entry["locked"] is None and "nope" in entry["error"]
