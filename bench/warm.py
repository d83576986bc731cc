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

from agent import rpc
from agent._proto.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from agent._proto.runtime.v1 import api_pb2, api_pb2_grpc
from agent.containerd import CRI_NAMESPACE, NAMESPACE_HEADER, PINNED_LABEL
from agent.platform import Platform
from bench.passes import Pass, agent_pass, listing
from bench.report import Row
from bench.synthetic import import_images
from tests.harness.containerd import Containerd

SIZES = (1000, 10_000)
RUNS = 5
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


async def raw_pin_updates(endpoint: str, names: list[str], concurrency: int) -> float:
    """Label `names` pinned with bare Images.List + Update calls, `concurrency` at a time:
    containerd has no batch update, so this is the floor of any takeover."""
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
            image.labels[key] = value
            async with slots:
                request = images_pb2.UpdateImageRequest(image=image, update_mask=mask)
                await stub.Update(request, metadata=METADATA, timeout=60)

        await asyncio.gather(*(one(i) for i in listed.images if i.name in wanted))
        return time.perf_counter() - started
    finally:
        await channel.close()


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
            rows.append(
                Row(
                    "takeover of 1000 present, unlabelled images",
                    "warm pass",
                    warm,
                    takeover.seconds,
                    "s",
                    TAKEOVER_TARGET,
                    note=f"{takeover.runtime_calls} runtime calls; floor: see the next row",
                )
            )
            floor_node = _node(workdir, "takeover-floor")
            try:
                floor_images = import_images(floor_node, size, platform, workdir)
                names = [f"{image.name}:1" for image in floor_images]
                raw = asyncio.run(raw_pin_updates(floor_node.endpoint, names, pin_concurrency))
            finally:
                floor_node.stop()
                shutil.rmtree(workdir / "takeover-floor", ignore_errors=True)
            rows.append(
                Row(
                    "takeover vs bare Images.Update of the labels",
                    f"{size} updates x{pin_concurrency}",
                    raw,
                    takeover.seconds,
                    "s",
                    1.25,
                    note="containerd has no batch update: one Update (one bolt transaction and "
                    "one event CRI processes) per image is the floor of labelling",
                )
            )
    growth = (warm_at[SIZES[1]] - warm_at[SIZES[0]]) / (SIZES[1] - SIZES[0])
    print(f"  warm pass growth: {growth * 1e6:.1f} us per image from 1000 to 10000")
    return rows
