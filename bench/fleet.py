"""A fleet rolling out a new digest, simulated: no network, the agent's own rollout planner
(agent.core.engine.rollout) driven by a simulated clock. 5000 nodes see a re-locked 2 GB image when
kubelet refreshes their ConfigMap volume (uniformly within its sync period), and pull it at
once, at a random moment within a window ("jitter", what any fleet gets from uneven timers), or
at their hashed moment within `rollout.spread`. Reported: the peak registry requests and bytes
per second (1-second buckets) and how long until the whole fleet holds the image."""

from __future__ import annotations

import random
from collections.abc import Callable

from agent.core.engine.rollout import Rollout
from bench.report import Row

NODES = 5000
IMAGE_BYTES = 2 * 10**9
LAYERS = 8
NODE_BYTES_PER_SECOND = 125 * 10**6
"""A node's download rate when the registry keeps up (1 Gbit/s): a pull lasts 16 s."""
CONFIGMAP_SYNC = 60.0
"""kubelet refreshes ConfigMap volumes within about a minute of an update."""
WATCH_INTERVAL = 2.0
# Per pull: the agent's platform check (index, manifest) and containerd's own requests (resolve,
# index, manifest, config, each layer).
REQUESTS_PER_PULL = 2 + 4 + LAYERS
DIGEST = "sha256:" + "5" * 64
SPREADS = (600.0, 1800.0)
TARGET = 0.1
"""Spread over 30 minutes, the fleet's peak demand on the registry is at most a tenth."""


def _seen(rng: random.Random) -> list[float]:
    """When each node's daemon sees the new list: the ConfigMap refresh, then its next look."""
    return [rng.uniform(0, CONFIGMAP_SYNC) + rng.uniform(0, WATCH_INTERVAL) for _ in range(NODES)]


def _peaks(starts: list[float]) -> tuple[float, float, float]:
    """Peak requests/s, peak bytes/s (1-second buckets), and when the last pull ends."""
    duration = IMAGE_BYTES / NODE_BYTES_PER_SECOND
    end = max(starts) + duration
    buckets = int(end) + 2
    requests = [0.0] * buckets
    transfer = [0.0] * (buckets + 1)  # +rate at a pull's start second, -rate after its end
    for start in starts:
        # Manifests and config at the start; one request per layer spread over the pull.
        requests[int(start)] += REQUESTS_PER_PULL - LAYERS
        for layer in range(LAYERS):
            requests[int(start + duration * layer / LAYERS)] += 1
        transfer[int(start)] += NODE_BYTES_PER_SECOND
        transfer[int(start + duration)] -= NODE_BYTES_PER_SECOND
    rate, peak_bytes = 0.0, 0.0
    for second in range(buckets):
        rate += transfer[second]
        peak_bytes = max(peak_bytes, rate)
    return max(requests), peak_bytes, end


def _scenario(name: str, starts: Callable[[list[float]], list[float]], seen: list[float]) -> str:
    requests, peak_bytes, end = _peaks(starts(seen))
    return (
        f"  {name:<34} peak {requests:8.0f} req/s  {peak_bytes / 1e9:8.1f} GB/s"
        f"   fleet done after {end / 60:5.1f} min"
    )


def run() -> list[Row]:
    rng = random.Random(11)
    seen = _seen(rng)
    names = [f"ip-10-{i // 250}-{i % 250}.ec2.internal" for i in range(NODES)]

    def hashed(spread: float) -> Callable[[list[float]], list[float]]:
        def starts(seen: list[float]) -> list[float]:
            moments = []
            for name, at in zip(names, seen, strict=True):
                due = Rollout(name, clock=_constant(at)).not_before(DIGEST, spread)
                moments.append(due if due is not None else at)
            return moments

        return starts

    def jittered(window: float) -> Callable[[list[float]], list[float]]:
        return lambda seen: [at + rng.uniform(0, window) for at in seen]

    print(
        f"  {NODES} nodes x a {IMAGE_BYTES / 1e9:.0f} GB image ({LAYERS} layers), "
        f"{NODE_BYTES_PER_SECOND * 8 / 1e9:.0f} Gbit/s per node, ConfigMap seen within "
        f"{CONFIGMAP_SYNC:.0f}s; demand on the registry if it kept up:"
    )
    print(_scenario("no spread", lambda seen: list(seen), seen))
    for spread in SPREADS:
        print(_scenario(f"random jitter over {spread / 60:.0f} min", jittered(spread), seen))
        print(_scenario(f"rollout.spread {spread / 60:.0f}m (hashed)", hashed(spread), seen))
    _, at_once, _ = _peaks(list(seen))
    _, spread_30m, _ = _peaks(hashed(1800.0)(seen))
    return [
        Row(
            "fleet: peak registry bytes/s, spread 30m vs none",
            "no spread",
            at_once / 1e9,
            spread_30m / 1e9,
            " GB/s",
            TARGET,
            note="5000 nodes x 2 GB, simulated with core.rollout; the rest of the table above",
        )
    ]


def _constant(moment: float) -> Callable[[], float]:
    """A clock that always reads `moment`."""
    return lambda: moment
