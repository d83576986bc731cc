"""The metrics declared as data (agent.daemon.metrics.METRICS): each a typed attribute of
Metrics of its own kind, each name once, and the series that must exist from the start."""

from __future__ import annotations

import typing

from prometheus_client import CollectorRegistry

from agent.daemon.metrics import METRICS, Metrics


def test_every_declared_metric_is_a_typed_attribute_of_its_kind() -> None:
    hints = typing.get_type_hints(Metrics)
    declared = {name for name, hint in hints.items() if name in METRICS}
    assert declared == set(METRICS), "an entry of METRICS without its annotation, or one more"
    metrics = Metrics(CollectorRegistry())
    for attribute, spec in METRICS.items():
        assert hints[attribute] is spec.kind, attribute
        assert isinstance(getattr(metrics, attribute), spec.kind), attribute


def test_names_are_unique_and_start_series_exist() -> None:
    names = [spec.name for spec in METRICS.values()]
    assert len(names) == len(set(names))
    registry = CollectorRegistry()
    Metrics(registry)
    assert registry.get_sample_value("prepull_pulls_total", {"result": "failure"}) == 0
    assert registry.get_sample_value("prepull_container_starts_total", {"cache": "miss"}) == 0
