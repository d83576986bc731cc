"""What the node's kubelet will do with what the agent preloaded, read from its
KubeletConfiguration (kubelet.config.k8s.io/v1beta1, the file its `--config` names): whether it
counts the images as preloaded (KEP-2535 credential verification), whether its image GC and the
disk budget fight, and what a pod pays for an image the list misses. Findings in the doctor's
shape (agent.core.doctor.pullpath.Finding), `setting` = `kubelet.<field>`. Pure: the file's text
and the list come in.

Upstream: kubernetes/kubernetes pkg/kubelet/apis/config/v1beta1 (fields, defaults),
pkg/kubelet/images/pullmanager/image_pull_policies.go (the policies; allowlist patterns and their
matching), pkg/kubelet/images/image_gc_manager.go (pinned images are never collected, by size or
by age)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.core.doctor.pullpath import Finding
from agent.core.errors import ConfigError, InputError
from agent.core.images import reference as references
from agent.core.lists import yamlsafe
from agent.core.lists.config import PreloadConfig

KIND = "KubeletConfiguration"
API_VERSIONS = ("kubelet.config.k8s.io/v1beta1", "kubelet.config.k8s.io/v1")
NEVER_VERIFY = "NeverVerify"
NEVER_VERIFY_PRELOADED = "NeverVerifyPreloadedImages"
NEVER_VERIFY_ALLOWLISTED = "NeverVerifyAllowlistedImages"
ALWAYS_VERIFY = "AlwaysVerify"
POLICIES = (NEVER_VERIFY, NEVER_VERIFY_PRELOADED, NEVER_VERIFY_ALLOWLISTED, ALWAYS_VERIFY)
ALLOWLIST_SETTING = "kubelet.preloadedImagesVerificationAllowlist"
VERIFICATION_GATE = "KubeletEnsureSecretPulledImages"
"""Beta and on by default from 1.35 (alpha, off, in 1.33 and 1.34)."""
GC_HIGH, GC_LOW = 85, 80
"""imageGCHighThresholdPercent, imageGCLowThresholdPercent: kubelet's defaults."""
BUDGET_MARGIN = 5
"""Points between the disk budget and the GC's low threshold the doctor recommends."""

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclasses.dataclass(frozen=True)
class KubeletConfig:
    source: str
    verification: str | None
    """The credential verification policy; None when its feature gate is off in the file."""
    allowlist: tuple[str, ...]
    gc_high: int
    gc_low: int
    max_gc_age: str
    """As written ("0s" when unset: off)."""
    max_gc_age_seconds: float
    serialize_pulls: bool
    max_parallel_pulls: int | None
    lines: Mapping[str, int] = dataclasses.field(default_factory=dict, compare=False)
    """The line of each top-level field in the file."""


def parse(text: str, source: str) -> KubeletConfig:
    """The settings that matter here, with kubelet's defaults for those left out; ConfigError
    naming `source` and the line of what kubelet itself would refuse."""
    documents = yamlsafe.documents(text, source)
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise ConfigError(source, None, f"not a {KIND}: expected one YAML or JSON mapping")
    document: dict[str, Any] = documents[0]
    lines = _key_lines(text, source)

    def problem(key: str, message: str) -> ConfigError:
        return ConfigError(source, lines.get(key), f"{key}: {message}")

    if document.get("kind") != KIND:
        raise problem("kind", f"expected {KIND}, found {document.get('kind')!r}")
    if document.get("apiVersion") not in API_VERSIONS:
        raise problem("apiVersion", f"expected {API_VERSIONS[0]}")

    def integer(key: str, default: int) -> int:
        value = document.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise problem(key, f"expected a percentage from 0 to 100, found {value!r}")
        return value

    high, low = (
        integer("imageGCHighThresholdPercent", GC_HIGH),
        integer("imageGCLowThresholdPercent", GC_LOW),
    )
    if low > high:
        raise problem("imageGCLowThresholdPercent", f"{low} is above the high threshold {high}")
    policy = document.get("imagePullCredentialsVerificationPolicy", NEVER_VERIFY_PRELOADED)
    if policy not in POLICIES:
        raise problem(
            "imagePullCredentialsVerificationPolicy",
            f"expected one of {', '.join(POLICIES)}, found {policy!r}",
        )
    gates = document.get("featureGates") or {}
    if not isinstance(gates, dict):
        raise problem("featureGates", "expected a mapping of gate names to true or false")
    allowlist = document.get("preloadedImagesVerificationAllowlist") or []
    if not isinstance(allowlist, list) or not all(isinstance(i, str) for i in allowlist):
        raise problem("preloadedImagesVerificationAllowlist", "expected a list of image names")
    age = document.get("imageMaximumGCAge", "0s")
    seconds = duration_seconds(age)
    if seconds is None:
        raise problem("imageMaximumGCAge", f"expected a duration such as 168h, found {age!r}")
    serialize = document.get("serializeImagePulls", True)
    if not isinstance(serialize, bool):
        raise problem("serializeImagePulls", f"expected true or false, found {serialize!r}")
    parallel = document.get("maxParallelImagePulls")
    if parallel is not None and (
        isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1
    ):
        raise problem("maxParallelImagePulls", f"expected a number from 1 up, found {parallel!r}")
    return KubeletConfig(
        source,
        None if gates.get(VERIFICATION_GATE) is False else policy,
        tuple(allowlist),
        high,
        low,
        str(age),
        seconds,
        serialize,
        parallel,
        lines,
    )


def duration_seconds(text: object) -> float | None:
    """Seconds in a Go duration ("168h", "1h30m", "0s", "0"); None if it is not one."""
    if not isinstance(text, str):
        return None
    if text in ("0", "+0", "-0"):
        return 0.0
    body = text.lstrip("+")
    if not body or _DURATION.sub("", body) != "":
        return None
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(body))


def _key_lines(text: str, source: str) -> dict[str, int]:
    root = yamlsafe.compose(text, source)
    if root is None or not isinstance(root.value, list):
        return {}
    lines = {}
    for key, _ in root.value:
        if hasattr(key, "value") and isinstance(key.value, str):
            lines[key.value] = key.start_mark.line + 1
    return lines


# -- the allowlist ---------------------------------------------------------------------------


def allowlist_problem(pattern: str) -> str | None:
    """Why kubelet refuses `pattern` in preloadedImagesVerificationAllowlist (it then does not
    start), or None: an image name as normalized (`docker.io/library/nginx`, no tag, no
    digest), or a prefix ending in `/*`."""
    if pattern != pattern.strip():
        return "leading or trailing spaces"
    wildcard = pattern.endswith("/*")
    body = pattern[:-1] if wildcard else pattern
    if not body:
        return "empty"
    if "*" in body:
        return "a `*` only as a whole last path segment (`registry.example/team/*`)"
    if wildcard:
        return "a registry host is needed before `/*`" if body == "/" else None
    try:
        normalized = references.parse(body).name
    except InputError as exc:
        return f"not an image name: {exc}"
    if normalized != body:
        return f"written as kubelet normalizes it: {normalized} (no tag, no digest)"
    return None


def allowlisted(name: str, allowlist: Sequence[str]) -> bool:
    """Whether kubelet 1.36 and later exempts the image `name` (normalized, no tag) from
    verification: an exact entry, or a `/*` prefix. Before 1.36 (kubernetes PR #137629) the
    pod's image was compared as the pod wrote it, tag included: exact entries matched no
    tagged image and prefixes only images written with their registry host."""
    for pattern in allowlist:
        if allowlist_problem(pattern) is not None:
            continue
        if (pattern.endswith("/*") and name.startswith(pattern[:-1])) or name == pattern:
            return True
    return False


# -- the findings ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tenancy:
    """What the operator says of the node pool and the list's images."""

    shared: bool = False
    """The pool runs pods of several tenants (namespaces that must not share private images)."""
    private: Callable[[str], bool] = lambda name: False
    """Whether an image (normalized name) needs credentials: the list has some for it."""
    public: frozenset[str] = frozenset()
    """Images the operator marks public although the list has credentials for them."""


def findings(
    kubelet: KubeletConfig,
    config: PreloadConfig | None,
    tenancy: Tenancy = Tenancy(),
    *,
    pins_honoured: bool = True,
) -> list[Finding]:
    """What the kubelet will make of the list (of its settings alone without one)."""
    found = [*_verification(kubelet, config, tenancy)]
    found += _garbage_collection(kubelet, config, pins_honoured)
    found += _pulls(kubelet)
    return found


def _verification(
    kubelet: KubeletConfig, config: PreloadConfig | None, tenancy: Tenancy
) -> list[Finding]:
    found = [
        Finding(
            ALLOWLIST_SETTING,
            pattern,
            "remove it or write it as the message says",
            f"kubelet refuses this entry ({problem}) and does not start",
            "the node runs no pods until the kubelet configuration is fixed",
        )
        for pattern in kubelet.allowlist
        if (problem := allowlist_problem(pattern)) is not None
    ]
    if config is None:
        return found
    names = sorted({entry.reference.name for entry in config.images})
    private = [n for n in names if tenancy.private(n) and n not in tenancy.public]
    public = [n for n in names if n not in private]
    policy = kubelet.verification
    setting = "kubelet.imagePullCredentialsVerificationPolicy"
    if policy == ALWAYS_VERIFY or (
        policy == NEVER_VERIFY_ALLOWLISTED
        and (missing := [n for n in names if not allowlisted(n, kubelet.allowlist)])
    ):
        unused = names if policy == ALWAYS_VERIFY else missing
        offer = [n for n in unused if n in public]
        found.append(
            Finding(
                setting
                if policy == ALWAYS_VERIFY
                else "kubelet.preloadedImagesVerificationAllowlist",
                f"{policy}: {len(unused)} of {len(names)} listed images are not counted as "
                f"preloaded ({_some(unused)})",
                _allowlist_advice(offer) if offer else None,
                "kubelet checks a pod's pull credentials before it uses an image it did not pull "
                "itself: a pod whose pull secret it has no record of makes it pull",
                "pods with imagePullPolicy: Never using these images fail to start; "
                "IfNotPresent pods make a registry round trip though the bytes are on the node"
                + (
                    f"; {len(unused) - len(offer)} are private: leave them off the allowlist "
                    "so every pod still shows its own secret"
                    if len(offer) < len(unused)
                    else ""
                )
                + _before_136(policy),
            )
        )
    elif policy in (None, NEVER_VERIFY, NEVER_VERIFY_PRELOADED) and private:
        exposed = policy or f"{NEVER_VERIFY} ({VERIFICATION_GATE} off)"
        found.append(
            Finding(
                setting,
                f"{exposed}: {len(private)} private images preloaded ({_some(private)})",
                _allowlist_advice(public) if tenancy.shared else None,
                "an image pulled by anything but the kubelet is usable by every pod on the node "
                "without a credential check",
                "on a node pool shared by tenants, any namespace can run these private images "
                "without their pull secret"
                + (
                    ""
                    if tenancy.shared
                    else " (a single-tenant pool: nothing to change; say --multi-tenant if "
                    "tenants share it)"
                ),
            )
        )
    return found


def _allowlist_advice(public: Sequence[str]) -> str:
    if not public:
        return f"{NEVER_VERIFY_ALLOWLISTED} with an empty allowlist (or {ALWAYS_VERIFY})"
    return (
        f"{NEVER_VERIFY_ALLOWLISTED} with preloadedImagesVerificationAllowlist: "
        f"[{', '.join(public)}] (the public images only; `prepull-agent lock "
        "--kubelet-allowlist` writes the fragment)"
    )


def _before_136(policy: str | None) -> str:
    if policy != NEVER_VERIFY_ALLOWLISTED:
        return ""
    return (
        "; before kubelet 1.36 an entry matched only a pod image written exactly as the entry "
        "(prefixes: written with the registry host), not a tagged one"
    )


def _garbage_collection(
    kubelet: KubeletConfig, config: PreloadConfig | None, pins_honoured: bool
) -> list[Finding]:
    found = []
    pinned = config is not None and config.pin and pins_honoured
    if config is not None and config.max_disk_usage_percent >= kubelet.gc_low:
        use = max(1, kubelet.gc_low - BUDGET_MARGIN)
        found.append(
            Finding(
                "kubelet.imageGCLowThresholdPercent",
                f"{kubelet.gc_low}, while the list's maxDiskUsagePercent is "
                f"{config.max_disk_usage_percent:g}",
                f"maxDiskUsagePercent: {use} in the list",
                f"above imageGCHighThresholdPercent ({kubelet.gc_high}) kubelet deletes images "
                f"until the disk is below {kubelet.gc_low}%: a preload allowed up to that line "
                "leaves it nothing of its own to delete",
                "kubelet deletes preloaded images and the agent restores them on its next pass, "
                "for ever"
                if not pinned
                else "the pins keep the preload, so kubelet fails to free space "
                "(FreeDiskSpaceFailed) and pods' images go first",
            )
        )
    if kubelet.max_gc_age_seconds > 0 and config is not None and not pinned:
        found.append(
            Finding(
                "kubelet.imageMaximumGCAge",
                kubelet.max_gc_age,
                "pin: true in the list" if pins_honoured else None,
                f"kubelet deletes every unpinned image no container used for {kubelet.max_gc_age}",
                "a preloaded image no pod has run yet is deleted and pulled again by the next "
                "pass: preload churn" + ("" if pins_honoured else " (this runtime ignores pins)"),
            )
        )
    return found


def _pulls(kubelet: KubeletConfig) -> list[Finding]:
    if kubelet.serialize_pulls:
        return [
            Finding(
                "kubelet.serializeImagePulls",
                "true (one pull at a time)",
                None,
                "kubelet pulls one image at a time for all the node's pods",
                "a pod whose image the list misses waits behind every pull queued before it; "
                "serializeImagePulls: false with maxParallelImagePulls lets them overlap",
            )
        ]
    if kubelet.max_parallel_pulls is None:
        return [
            Finding(
                "kubelet.maxParallelImagePulls",
                "unset (no limit)",
                None,
                "with serializeImagePulls false and no maxParallelImagePulls, kubelet starts "
                "every pull at once",
                "a burst of pods whose images the list misses pulls them all together",
            )
        ]
    return []


def _some(names: Sequence[str], shown: int = 3) -> str:
    head = ", ".join(names[:shown])
    return head if len(names) <= shown else f"{head} and {len(names) - shown} more"
