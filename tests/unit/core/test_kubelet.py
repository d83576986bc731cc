"""What the kubelet makes of a preload list (agent.core.doctor.kubelet), from kubelet config files
in the formats kubeadm and EKS write for kubelet 1.30 to 1.36 (tests/data/kubelet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.core.doctor import kubelet
from agent.core.doctor.kubelet import Tenancy, allowlist_problem, allowlisted, duration_seconds
from agent.core.doctor.pullpath import Finding
from agent.core.errors import ConfigError
from agent.core.lists.config import parse as parse_list

DATA = Path(__file__).parents[2] / "data" / "kubelet"


def read(name: str) -> kubelet.KubeletConfig:
    return kubelet.parse((DATA / name).read_text(), name)


def listing(*images: str, extra: str = "") -> str:
    return "images:\n" + "".join(f"  - {image}\n" for image in images) + extra


def settings(found: list[Finding]) -> list[str]:
    return [f.setting for f in found]


def test_each_version_s_file_is_read_with_kubelet_s_defaults_for_what_it_leaves_out() -> None:
    old, alpha, beta, new, eks = (
        read(n)
        for n in (
            "kubeadm-1.30.yaml",
            "kubeadm-1.33-alpha.yaml",
            "kubeadm-1.35.yaml",
            "kubeadm-1.36.yaml",
            "eks-1.32.json",
        )
    )
    assert (old.verification, old.gc_high, old.gc_low, old.serialize_pulls) == (
        "NeverVerifyPreloadedImages",
        85,
        80,
        True,
    )
    assert old.max_gc_age_seconds == 0
    assert alpha.verification == "NeverVerifyAllowlistedImages"
    assert alpha.allowlist == ("registry.example/public/*", "docker.io/library/nginx")
    assert (alpha.serialize_pulls, alpha.max_parallel_pulls) == (False, 4)
    assert (beta.verification, beta.gc_high, beta.gc_low) == ("AlwaysVerify", 90, 70)
    assert beta.max_gc_age_seconds == 168 * 3600
    assert new.verification == "NeverVerifyPreloadedImages"
    assert (eks.gc_low, eks.serialize_pulls, eks.max_parallel_pulls) == (75, False, None)


def test_the_verification_gate_turned_off_means_nothing_is_verified() -> None:
    text = (DATA / "kubeadm-1.35.yaml").read_text() + (
        "featureGates:\n  KubeletEnsureSecretPulledImages: false\n"
    )
    assert kubelet.parse(text, "k.yaml").verification is None


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("kind: KubeletConfiguration\n", "kind: expected KubeletConfiguration"),
        ("imageGCLowThresholdPercent: 90\n", "90 is above the high threshold 85"),
        ("imageGCHighThresholdPercent: 101\n", "expected a percentage from 0 to 100"),
        ("imagePullCredentialsVerificationPolicy: Sometimes\n", "expected one of NeverVerify"),
        ("imageMaximumGCAge: a week\n", "expected a duration such as 168h"),
        ("serializeImagePulls: maybe\n", "expected true or false"),
        ("maxParallelImagePulls: 0\n", "expected a number from 1 up"),
        ("preloadedImagesVerificationAllowlist: nginx\n", "expected a list of image names"),
    ],
)
def test_what_kubelet_would_refuse_is_named_with_its_file_and_line(line: str, said: str) -> None:
    base = "apiVersion: kubelet.config.k8s.io/v1beta1\n"
    text = base + ("kind: KubeletConfiguration\n" if not line.startswith("kind") else "") + line
    if line.startswith("kind"):
        text = base + "kind: Kubelet\n"
    with pytest.raises(ConfigError) as caught:
        kubelet.parse(text, "/var/lib/kubelet/config.yaml")
    assert said in str(caught.value), caught.value
    assert caught.value.file == "/var/lib/kubelet/config.yaml"
    assert caught.value.line == 3 if not line.startswith("kind") else 2


def test_go_durations_are_read_as_kubelet_reads_them() -> None:
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("0s") == duration_seconds("0") == 0
    assert duration_seconds("1.5h") == 5400
    assert duration_seconds("90") is None and duration_seconds("1d") is None
    assert duration_seconds(3600) is None


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("docker.io/library/nginx", None),
        ("registry.example/team/*", None),
        ("registry.example/*", None),
        ("nginx", "written as kubelet normalizes it: docker.io/library/nginx"),
        ("docker.io/nginx", "written as kubelet normalizes it: docker.io/library/nginx"),
        ("registry.example/app:1", "written as kubelet normalizes it: registry.example/app"),
        ("registry.example/team*", "a `*` only as a whole last path segment"),
        ("registry.example/*/app", "a `*` only as a whole last path segment"),
        ("/*", "a registry host is needed"),
        ("", "empty"),
        (" registry.example/app", "leading or trailing spaces"),
        ("Registry.example/App", "not an image name"),
    ],
)
def test_allowlist_entries_follow_kubelet_s_rules(pattern: str, problem: str | None) -> None:
    found = allowlist_problem(pattern)
    assert (found is None) == (problem is None), found
    if problem is not None:
        assert found is not None and problem in found


def test_allowlist_matching_is_on_the_normalized_name_as_from_kubelet_1_36() -> None:
    allowlist = ["docker.io/library/nginx", "registry.example/team/*", "nginx"]
    assert allowlisted("docker.io/library/nginx", allowlist)
    assert allowlisted("registry.example/team/app", allowlist)
    assert allowlisted("registry.example/team/sub/app", allowlist)
    assert not allowlisted("registry.example/teammate/app", allowlist)
    assert not allowlisted("docker.io/library/redis", allowlist)


def test_images_kubelet_verifies_are_named_and_only_public_ones_offered_for_the_allowlist() -> None:
    config = parse_list(
        listing("nginx:1.27", "registry.example/team/private:1", "registry.example/public/app:2")
    )
    tenancy = Tenancy(private=lambda name: name.startswith("registry.example/team/"))

    (finding,) = [
        f
        for f in kubelet.findings(read("kubeadm-1.35.yaml"), config, tenancy)
        if f.setting == "kubelet.imagePullCredentialsVerificationPolicy"
    ]

    assert "AlwaysVerify: 3 of 3 listed images are not counted as preloaded" in str(finding.current)
    assert finding.recommended is not None
    assert "docker.io/library/nginx, registry.example/public/app]" in str(finding.recommended)
    assert "registry.example/team/private" not in str(finding.recommended)
    assert "imagePullPolicy: Never" in finding.impact and "1 are private" in finding.impact


def test_an_allowlist_that_misses_listed_images_is_a_finding_naming_them() -> None:
    config = parse_list(
        listing("nginx:1.27", "registry.example/public/app:2", "registry.example/other/tool:3")
    )

    found = kubelet.findings(read("kubeadm-1.33-alpha.yaml"), config)

    (finding,) = [f for f in found if f.setting == kubelet.ALLOWLIST_SETTING]
    assert "1 of 3 listed images" in str(finding.current)
    assert "registry.example/other/tool" in str(finding.current)
    assert "before kubelet 1.36" in finding.impact


def test_an_allowlist_covering_the_list_and_parallel_pulls_are_no_finding() -> None:
    config = parse_list(
        listing("nginx:1.27", "registry.example/public/app:2", extra="maxDiskUsagePercent: 70\n")
    )

    assert kubelet.findings(read("kubeadm-1.33-alpha.yaml"), config) == []


def test_an_allowlist_entry_kubelet_refuses_is_a_finding_of_its_own() -> None:
    text = (DATA / "kubeadm-1.36.yaml").read_text() + (
        "preloadedImagesVerificationAllowlist:\n- nginx\n"
    )

    found = kubelet.findings(kubelet.parse(text, "k.yaml"), None)

    assert [(f.setting, f.current) for f in found if f.recommended] == [
        (kubelet.ALLOWLIST_SETTING, "nginx")
    ]


def test_private_images_under_the_default_policy_are_a_change_only_on_a_shared_pool() -> None:
    config = parse_list(listing("registry.example/team/private:1", "nginx:1.27"))
    private = Tenancy(private=lambda name: "private" in name)
    shared = Tenancy(shared=True, private=private.private)

    single = [f for f in kubelet.findings(read("kubeadm-1.36.yaml"), config, private)]
    many = [f for f in kubelet.findings(read("kubeadm-1.36.yaml"), config, shared)]

    (alone,) = [f for f in single if f.setting == "kubelet.imagePullCredentialsVerificationPolicy"]
    (tenants,) = [f for f in many if f.setting == "kubelet.imagePullCredentialsVerificationPolicy"]
    assert alone.recommended is None and "--multi-tenant" in alone.impact
    assert "any namespace can run these private images" in tenants.impact
    assert tenants.recommended is not None
    assert "[docker.io/library/nginx]" in str(tenants.recommended)
    public = kubelet.findings(read("kubeadm-1.36.yaml"), parse_list(listing("nginx")), shared)
    assert "kubelet.imagePullCredentialsVerificationPolicy" not in settings(public)


def test_a_budget_not_below_the_gc_low_threshold_is_a_finding_with_the_number_to_use() -> None:
    at_default = parse_list(listing("nginx:1.27"))
    below = parse_list(listing("nginx:1.27", extra="maxDiskUsagePercent: 70\n"))
    unpinned = parse_list(listing("nginx:1.27", extra="pin: false\n"))

    (finding,) = [
        f
        for f in kubelet.findings(read("kubeadm-1.36.yaml"), at_default)
        if f.setting == "kubelet.imageGCLowThresholdPercent"
    ]
    assert finding.recommended == "maxDiskUsagePercent: 75 in the list"
    assert "FreeDiskSpaceFailed" in finding.impact
    assert "kubelet.imageGCLowThresholdPercent" not in settings(
        kubelet.findings(read("kubeadm-1.36.yaml"), below)
    )
    (thrash,) = [
        f
        for f in kubelet.findings(read("kubeadm-1.36.yaml"), unpinned)
        if f.setting == "kubelet.imageGCLowThresholdPercent"
    ]
    assert "restores them on its next pass" in thrash.impact
    eks = kubelet.findings(read("eks-1.32.json"), at_default)
    assert [f.recommended for f in eks if f.setting == "kubelet.imageGCLowThresholdPercent"] == [
        "maxDiskUsagePercent: 70 in the list"
    ]


def test_a_maximum_gc_age_matters_only_for_images_kubelet_may_collect() -> None:
    pinned = parse_list(listing("nginx:1.27", extra="maxDiskUsagePercent: 60\n"))
    unpinned = parse_list(listing("nginx:1.27", extra="maxDiskUsagePercent: 60\npin: false\n"))
    beta = read("kubeadm-1.35.yaml")

    assert "kubelet.imageMaximumGCAge" not in settings(kubelet.findings(beta, pinned))
    (age,) = [f for f in kubelet.findings(beta, unpinned) if f.setting.endswith("MaximumGCAge")]
    assert (age.current, age.recommended) == ("168h", "pin: true in the list")
    (ignored,) = [
        f
        for f in kubelet.findings(beta, pinned, pins_honoured=False)
        if f.setting.endswith("MaximumGCAge")
    ]
    assert ignored.recommended is None and "ignores pins" in ignored.impact


def test_serialized_pulls_are_said_as_what_a_missed_image_costs_without_a_change() -> None:
    found = kubelet.findings(read("kubeadm-1.30.yaml"), None)
    eks = kubelet.findings(read("eks-1.32.json"), None)

    assert [(f.setting, f.recommended) for f in found] == [("kubelet.serializeImagePulls", None)]
    assert "waits behind every pull queued before it" in found[0].impact
    assert [(f.setting, f.recommended) for f in eks] == [("kubelet.maxParallelImagePulls", None)]
