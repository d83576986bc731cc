"""Who holds a pin (core.engine.claims): claims, releases, foreign and legacy pins, owners."""

from __future__ import annotations

from agent.core.engine import claims
from agent.core.engine.claims import (
    FOREIGN_KEY,
    LEGACY,
    LEGACY_KEY,
    PIN_KEY,
    PIN_VALUE,
    Holders,
    applied,
    claim,
    owner_key,
    owner_of,
    release,
)

MANAGED = {"io.cri-containerd.image": "managed"}
A, B = "team-a", "team-b"


def test_a_claim_on_an_unpinned_record_pins_it_and_names_its_owner() -> None:
    changes = claim(MANAGED, A)
    assert changes == {owner_key(A): A, PIN_KEY: PIN_VALUE}
    assert Holders.of(applied(MANAGED, changes)).names() == [A]


def test_a_claim_already_made_changes_nothing() -> None:
    labels = applied(MANAGED, claim(MANAGED, A))
    assert claim(labels, A) == {}


def test_a_pin_no_agent_touched_becomes_foreign_and_outlives_every_owner() -> None:
    by_hand = {**MANAGED, PIN_KEY: PIN_VALUE}
    labels = applied(by_hand, claim(by_hand, A))
    assert labels[FOREIGN_KEY] == "true"
    after = applied(labels, release(labels, A))
    assert after[PIN_KEY] == PIN_VALUE and owner_key(A) not in after
    assert Holders.of(labels).names(but=A) == ["foreign pin"]


def test_what_a_pull_rewrote_is_written_back_from_before_it() -> None:
    # containerd 1.6's CRI replaces every label of a record a pull re-creates.
    before = {PIN_KEY: PIN_VALUE}
    changes = claim(MANAGED, A, before)
    assert changes[FOREIGN_KEY] == "true", "the hand pin seen before the pull is foreign"
    marked = claim(MANAGED, A, {PIN_KEY: PIN_VALUE, FOREIGN_KEY: "true", owner_key(B): B})
    assert marked[FOREIGN_KEY] == "true", "a foreign mark seen before the pull stays"
    theirs = applied({PIN_KEY: PIN_VALUE}, claim({}, B))
    restored = claim(MANAGED, A, theirs)
    assert FOREIGN_KEY not in restored, "an owner's pin is no foreign pin"
    assert owner_key(B) not in restored, "B claims again itself; it may have let go meanwhile"


def test_an_earlier_agents_pin_is_adopted_by_an_owner_that_lists_it() -> None:
    legacy = {**MANAGED, PIN_KEY: PIN_VALUE, LEGACY_KEY: "true"}
    changes = claim(legacy, A)
    assert changes == {owner_key(A): A, LEGACY_KEY: None}, "not foreign: an agent set it"
    labels = applied(legacy, changes)
    assert release(labels, A) == {owner_key(A): None, PIN_KEY: None}


def test_an_unadopted_legacy_pin_is_released_only_as_legacy() -> None:
    legacy = {PIN_KEY: PIN_VALUE, LEGACY_KEY: "true"}
    assert release(legacy, A) == {}
    assert release(legacy, LEGACY) == {LEGACY_KEY: None, PIN_KEY: None}


def test_a_pin_two_owners_hold_goes_with_the_last() -> None:
    labels = applied(applied(MANAGED, claim(MANAGED, A)), claim(applied(MANAGED, {}), B))
    labels = applied(labels, claim(labels, B))
    first = release(labels, A)
    assert first == {owner_key(A): None}
    labels = applied(labels, first)
    assert release(labels, B) == {owner_key(B): None, PIN_KEY: None}


def test_an_owner_releases_nothing_it_does_not_hold() -> None:
    labels = applied(MANAGED, claim(MANAGED, B))
    assert release(labels, A) == {}


def test_owners_are_the_flag_then_the_daemonset_then_the_file() -> None:
    assert owner_of("ci-list", "/etc/p.yaml", pod_name="agent-x7k2p", pod_namespace="ns") == (
        "ci-list"
    )
    assert owner_of(None, "/etc/p.yaml", pod_name="prepull-agent-x7k2p", pod_namespace="ns") == (
        "daemonset:ns/prepull-agent"
    )
    assert owner_of(None, "/etc/p.yaml") == "file:/etc/p.yaml"


def test_an_owners_name_is_written_safe_and_bounded() -> None:
    hostile = "evil\x1b]52;c;AAAA\x07\n" + "x" * 500
    name = claims.owner_name(hostile)
    assert name.isprintable() and "\x1b" not in name and len(name) == claims.MAX_OWNER
    assert claims.owner_name("  ") == "unnamed"
    assert owner_key(hostile).startswith(claims.OWNER_PREFIX) and len(owner_key(hostile)) < 40
