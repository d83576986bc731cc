"""The lease the seeded documents of every pull in flight share (in-memory create/delete)."""

from __future__ import annotations

import asyncio

from agent.adapters.runtime.leases import SharedLease


class Leases:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.live: set[str] = set()
        self.created = 0
        self.now = 0.0

    async def create(self) -> str | None:
        await asyncio.sleep(0)  # a real create is a round trip: others may arrive meanwhile
        if self.fail:
            return None
        self.created += 1
        lease = f"lease-{self.created}"
        self.live.add(lease)
        return lease

    async def delete(self, lease: str) -> None:
        self.live.remove(lease)

    def shared(self) -> SharedLease:
        return SharedLease(self.create, self.delete, renew_after=100, clock=lambda: self.now)


async def test_pulls_in_flight_share_one_lease_deleted_when_the_last_is_done() -> None:
    leases = Leases()
    shared = leases.shared()
    seen: list[str | None] = []
    all_in = asyncio.Event()

    async def pull() -> None:
        async with shared.held() as lease:
            seen.append(lease)
            if len(seen) == 20:
                all_in.set()
            await all_in.wait()
            assert leases.live == {"lease-1"}

    await asyncio.gather(*(pull() for _ in range(20)))

    assert seen == ["lease-1"] * 20 and leases.created == 1
    assert leases.live == set(), "deleted once the last pull was done"


async def test_a_later_pull_gets_a_new_lease_once_the_last_one_is_deleted() -> None:
    leases = Leases()
    shared = leases.shared()
    async with shared.held() as first:
        pass
    async with shared.held() as second:
        assert leases.live == {second}
    assert (first, second) == ("lease-1", "lease-2") and leases.live == set()


async def test_an_old_lease_is_renewed_for_new_pulls_and_kept_for_its_own() -> None:
    """Before its expiry label lets containerd collect documents a slow pull still needs."""
    leases = Leases()
    shared = leases.shared()
    async with shared.held() as old:
        leases.now = 101
        async with shared.held() as new:
            assert new != old and leases.live == {old, new}
        assert leases.live == {old}, "the new one's only user is done"
    assert leases.live == set()


async def test_no_lease_to_be_had_means_none_and_nothing_to_delete() -> None:
    leases = Leases(fail=True)
    async with leases.shared().held() as lease:
        assert lease is None
    assert leases.live == set() and leases.created == 0
