"""`pins` and `release`: who holds the pins on this node, and letting go of an owner's pins (an
owner that is gone: a list retired, a DaemonSet deleted, a `once` run's test list)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agent.cli.common import EXIT_CONVERGED, load_wiring, print_document, table_lines
from agent.core.engine.claims import LEGACY, Holders, Released, owner_name
from agent.core.errors import InputError
from agent.core.text import fit

if TYPE_CHECKING:
    from agent.core.ports import TagBinder
    from agent.wiring import NodeRuntime


async def binder_of(runtime: NodeRuntime) -> TagBinder:
    """The runtime's pins (containerd's Images API); InputError on a runtime without one."""
    info = await runtime.meet()
    if runtime.binder is None:
        raise InputError(f"{info.name} at {runtime.endpoint} keeps no pins the agent can read")
    return runtime.binder


async def pins(args: argparse.Namespace) -> int:
    """Every image record with a pin or a claim on one, and who holds it."""
    async with load_wiring().runtime(args.cri_endpoint) as runtime:
        held = await (await binder_of(runtime)).pins()
    if args.owner is not None:
        held = {n: h for n, h in held.items() if h.holds(owner_name(args.owner))}
    if args.format != "text":
        print_document(
            args,
            {
                "pins": [
                    {
                        "image": name,
                        "pinned": h.pinned,
                        "owners": [owner for _, owner in h.owners],
                        "foreign": h.foreign,
                        "legacy": h.legacy,
                    }
                    for name, h in sorted(held.items())
                ]
            },
        )
        return EXIT_CONVERGED
    # table_lines escapes every cell: names and owners are labels anyone may have written.
    rows = [["IMAGE", "PINNED", "HELD BY"]]
    rows += [
        [name, "yes" if h.pinned else "no", ", ".join(_holders(h))]
        for name, h in sorted(held.items())
    ]
    if len(rows) == 1:
        print("no pins on this node" if args.owner is None else f"{args.owner} holds no pins")
        return EXIT_CONVERGED
    print("\n".join(table_lines(rows, headers=not args.no_headers)))
    return EXIT_CONVERGED


def released_line(released: Released, why: str = "no longer listed") -> str:
    """One let-go claim, for a terminal: `unpinned` when the pin went, `released` when others
    still hold it (named, escaped)."""
    name = fit(released.name)
    if released.kept_by:
        holders = fit(", ".join(released.kept_by))
        return f"released {name}  ({why}; still pinned for {holders})"
    return f"unpinned {name}  ({why}: kubelet's image GC may reclaim it)"


def _holders(held: Holders) -> list[str]:
    return held.names() or ["not an agent's (by hand or another tool)"]


async def release(args: argparse.Namespace) -> int:
    """Take one owner off every pin it holds; a pin no one else holds goes."""
    if (args.owner is None) == (not args.legacy):
        raise InputError("give --owner NAME or --legacy (the pins of agents before owners)")
    owner = LEGACY if args.legacy else owner_name(args.owner)
    async with load_wiring().runtime(args.cri_endpoint) as runtime:
        binder = await binder_of(runtime)
        if args.dry_run:
            held = await binder.pins()
            mine = {n: h for n, h in held.items() if (h.legacy if args.legacy else h.holds(owner))}
            for name, h in sorted(mine.items()):
                others = h.names(but=None if args.legacy else owner)
                others = [o for o in others if not (args.legacy and o == "an earlier agent")]
                kept = f"  (still pinned for {fit(', '.join(others))})" * bool(others)
                print(f"would release {fit(name)}{kept}")
            print(f"{len(mine)} pins held by {fit(owner)}; nothing changed (--dry-run)")
            return EXIT_CONVERGED
        released = await binder.release(owner)
    for r in released:
        print(released_line(r, why="released by hand"))
    print(f"{len(released)} pins released for {fit(owner)}")
    return EXIT_CONVERGED
