"""Which runtime releases get which treatment: the thresholds are containerd release facts."""

from __future__ import annotations

import pytest

from agent.core.runtimes import features_of, parse_version


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("1.6.20~ds1", (1, 6, 20)),
        ("v1.7.24", (1, 7, 24)),
        ("2.1.9+unknown", (2, 1, 9)),
        ("1.7", (1, 7, 0)),
        ("devel", None),
        ("", None),
    ],
)
def test_versions_are_read_as_debian_and_upstream_write_them(
    text: str, parsed: tuple[int, int, int] | None
) -> None:
    assert parse_version(text) == parsed


@pytest.mark.parametrize(
    ("version", "parallel", "pins"),
    [
        ("1.6.20~ds1", False, False),  # Debian bookworm: the race and no pins
        ("1.6.21", False, False),
        ("1.6.22", True, True),  # containerd#8800 and the pin label
        ("1.6.38", True, True),
        ("1.7.0", False, False),
        ("1.7.2", False, False),
        ("1.7.3", True, True),  # containerd#8799
        ("1.7.24~ds1", True, True),  # Debian trixie
        ("2.0.0", True, True),
        ("2.1.9+unknown", True, True),  # Debian unstable
        ("1.5.18", False, False),  # a line older than every fix
    ],
)
def test_containerd_releases(version: str, parallel: bool, pins: bool) -> None:
    features = features_of("containerd", version)
    assert features.parallel_pulls is parallel
    assert features.pins_honoured is pins
    assert features.tag_binding


def test_an_unreadable_containerd_version_is_treated_as_the_riskiest() -> None:
    features = features_of("containerd", "devel")
    assert not features.parallel_pulls
    assert any("one at a time" in note for note in features.limitations())


def test_a_fixed_release_has_no_limitations_to_report() -> None:
    assert features_of("containerd", "2.1.9").limitations() == []


def test_the_old_release_says_why_pulls_are_serialized_and_pins_ignored() -> None:
    notes = features_of("containerd", "1.6.20~ds1").limitations()
    assert len(notes) == 2
    assert "containerd#8742" in notes[1] and "1.6.22" in notes[1]
    assert "ignores the pin label" in notes[0]


def test_another_cri_runtime_cannot_bind_tags() -> None:
    features = features_of("cri-o", "1.30.0")
    assert not features.tag_binding and features.parallel_pulls
    assert "digests" in features.limitations()[0]
