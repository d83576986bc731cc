"""A node that already holds the whole list: the warm pass (everything present and pinned) at
1000 and 10 000 images, and the takeover of a node whose 1000 images are present but not yet
labelled. The images are imported (bench.synthetic), distinct per entry, no registry anywhere:
a registry request would fail, and the count of them must be zero."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from pathlib import Path

from google.protobuf import field_mask_pb2

from agent._proto.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from agent._proto.runtime.v1 import api_pb2, api_pb2_grpc
from agent.adapters.runtime import rpc
from agent.adapters.runtime.containerd import CRI_NAMESPACE, NAMESPACE_HEADER, PINNED_LABEL
from agent.core.images.platform import Platform
from bench.passes import Pass, agent_pass, listing
from bench.report import Row
from bench.synthetic import import_images
from tests.harness.containerd import Containerd

SIZES = (1000, 10_000)
RUNS = 5
TAKEOVER_RUNS = 3
WARM_TARGETS = {1000: 0.050, 10_000: 0.400}
TAKEOVER_TARGET = 2.0
"""takeover / warm pass at 1000 images."""
METADATA = ((NAMESPACE_HEADER, CRI_NAMESPACE),)


async def raw_list_images(endpoint: str) -> float:
    """One bare CRI ListImages, decoded: the least any pass over the node can cost."""
    channel = rpc.open_channel(endpoint)
    try:
        stub = api_pb2_grpc.ImageServiceStub(channel)
        started = time.perf_counter()
        await stub.ListImages(api_pb2.ListImagesRequest(), timeout=60)
        return time.perf_counter() - started
    finally:
        await channel.close()


async def raw_pin_updates(
    endpoint: str, names: list[str], concurrency: int, *, pinned: bool = True
) -> float:
    """Label `names` pinned (or take the label off) with bare Images.List + Update calls,
    `concurrency` at a time: containerd has no batch update, so this is the floor of any
    takeover."""
    channel = rpc.open_channel(endpoint)
    try:
        stub = images_pb2_grpc.ImagesStub(channel)
        started = time.perf_counter()
        listed = await stub.List(images_pb2.ListImagesRequest(), metadata=METADATA, timeout=60)
        wanted = set(names)
        slots = asyncio.Semaphore(concurrency)
        key, value = PINNED_LABEL
        mask = field_mask_pb2.FieldMask(paths=[f"labels.{key}"])

        async def one(image: images_pb2.Image) -> None:
            if pinned:
                image.labels[key] = value
            else:
                del image.labels[key]  # a label named in the mask and absent is removed
            async with slots:
                request = images_pb2.UpdateImageRequest(image=image, update_mask=mask)
                await stub.Update(request, metadata=METADATA, timeout=60)

        await asyncio.gather(*(one(i) for i in listed.images if i.name in wanted))
        return time.perf_counter() - started
    finally:
        await channel.close()


async def unpin(endpoint: str, names: list[str], concurrency: int) -> None:
    """Take the pin label off `names` and wait until CRI reports no image pinned: the node is
    as a takeover finds it again."""
    await raw_pin_updates(endpoint, names, concurrency, pinned=False)
    channel = rpc.open_channel(endpoint)
    try:
        stub = api_pb2_grpc.ImageServiceStub(channel)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listed = await stub.ListImages(api_pb2.ListImagesRequest(), timeout=60)
            if not any(image.pinned for image in listed.images):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("CRI still reports pinned images a minute after unpinning")
    finally:
        await channel.close()


def _takeovers(
    endpoint: str, text: str, names: list[str], pin_concurrency: int
) -> tuple[list[float], list[float]]:
    """The agent's takeover and the bare labelling of the same node, interleaved, the labels
    taken off before each: (agent seconds, bare seconds). The node ends unlabelled."""
    agent, bare = [], []
    for _ in range(TAKEOVER_RUNS):
        agent.append(asyncio.run(agent_pass(endpoint, text)).seconds)
        asyncio.run(unpin(endpoint, names, pin_concurrency))
        bare.append(asyncio.run(raw_pin_updates(endpoint, names, pin_concurrency)))
        asyncio.run(unpin(endpoint, names, pin_concurrency))
    return agent, bare


def _node(workdir: Path, name: str) -> Containerd:
    node = Containerd(workdir / name)
    node.start()
    return node


def run(workdir: Path, platform: Platform, pin_concurrency: int) -> list[Row]:
    rows = []
    warm_at: dict[int, float] = {}
    for size in SIZES:
        node = _node(workdir, f"warm-{size}")
        try:
            images = import_images(node, size, platform, workdir)
            text = listing([image.pinned for image in images])
            if size == 1000:
                names = [f"{image.name}:1" for image in images]
                takeovers, bare = _takeovers(node.endpoint, text, names, pin_concurrency)
            takeover = asyncio.run(agent_pass(node.endpoint, text))
            passes: list[Pass] = [asyncio.run(agent_pass(node.endpoint, text)) for _ in range(RUNS)]
            floor = statistics.median(
                asyncio.run(raw_list_images(node.endpoint)) for _ in range(RUNS)
            )
        finally:
            node.stop()
            shutil.rmtree(workdir / f"warm-{size}", ignore_errors=True)
        warm = statistics.median(p.seconds for p in passes)
        warm_at[size] = warm
        calls = {p.runtime_calls for p in passes}
        requests = sum(p.registry_requests for p in passes)
        pinned = sum(o.pinned for o in passes[-1].outcomes)
        rows.append(
            Row(
                f"warm pass, {size} present pinned images",
                "",
                None,
                warm,
                "s",
                WARM_TARGETS[size],
                note="connect, parse (while the runtime lists), Version, platform, pass; in "
                f"process; runtime calls per pass "
                f"{sorted(calls)}, registry requests {requests}, {pinned}/{size} reported pinned; "
                f"a bare ListImages alone takes {floor * 1000:.1f}ms",
            )
        )
        assert requests == 0, "a converged pinned list must not touch the registry"
        if size == 1000:
            spread = ", ".join(f"{t:.2f}" for t in takeovers)
            rows.append(
                Row(
                    "takeover of 1000 present, unlabelled images",
                    "warm pass",
                    warm,
                    statistics.median(takeovers),
                    "s",
                    TAKEOVER_TARGET,
                    note=f"median of {TAKEOVER_RUNS} ({spread}s), {takeover.runtime_calls} "
                    "runtime calls; floor: see the next row",
                )
            )
            labelling = statistics.median(bare)
            rows.append(
                Row(
                    "takeover vs a warm pass + bare Images.Update of the labels",
                    f"pass+{size} updates x{pin_concurrency}",
                    warm + labelling,
                    statistics.median(takeovers),
                    "s",
                    1.25,
                    note="the floor of a takeover: reading the node (the warm pass above) and "
                    "labelling each image (containerd has no batch update: one Update, one bolt "
                    f"transaction and one event CRI processes, per image; {labelling:.2f}s); "
                    "the same node, labels taken off before each, interleaved, medians of "
                    f"{TAKEOVER_RUNS}",
                )
            )
    growth = (warm_at[SIZES[1]] - warm_at[SIZES[0]]) / (SIZES[1] - SIZES[0])
    print(f"  warm pass growth: {growth * 1e6:.1f} us per image from 1000 to 10000")
    return rows
