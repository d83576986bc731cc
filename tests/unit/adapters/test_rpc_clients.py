"""The CRI and containerd adapters against in-process gRPC servers built from our own stubs,
for faults the real containerd cannot be made to produce on demand."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agent._proto.runtime.v1 import api_pb2, api_pb2_grpc
from agent.adapters.runtime import rpc
from agent.adapters.runtime.containerd import ContainerdImages
from agent.adapters.runtime.cri import CriClient
from agent.core.errors import ImageError, RuntimeUnavailable, TagBindingUnsupported
from agent.core.retry import RetryPolicy

FAST = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.001)
HOLD_SECONDS = 10.0


class FlakyImages(api_pb2_grpc.ImageServiceServicer):  # type: ignore[misc]
    """Resets the first pulls, as containerd 1.6 was seen to under parallel pulls."""

    def __init__(self, resets: int) -> None:
        self.resets = resets
        self.pull_calls = 0
        self.pull_seconds = 0.0
        self.in_flight = 0
        self.most_in_flight = 0
        self.together = 0
        """Pulls are held until this many are in flight at once (a state, not a moment); a
        client that never gets there is let go after HOLD_SECONDS."""
        self._all_in = asyncio.Event()

    async def PullImage(self, request, context):
        self.pull_calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.together and self.in_flight >= self.together:
            self._all_in.set()
        if self.together:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_in.wait(), HOLD_SECONDS)
        await asyncio.sleep(self.pull_seconds)
        self.in_flight -= 1
        if self.pull_calls <= self.resets:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "read: connection reset by peer")
        if request.image.image.endswith(":missing"):
            await context.abort(grpc.StatusCode.NOT_FOUND, "failed to resolve reference: not found")
        return api_pb2.PullImageResponse(image_ref="sha256:" + "e" * 64)

    async def ImageStatus(self, request, context):
        return api_pb2.ImageStatusResponse()


class StandInRuntimeService(api_pb2_grpc.RuntimeServiceServicer):  # type: ignore[misc]
    """Answers Version as the configured runtime; None: a runtime without CRI v1."""

    def __init__(self) -> None:
        self.version: str | None = "2.1.9"

    async def Version(self, request, context):
        if self.version is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        return api_pb2.VersionResponse(
            runtime_name="containerd", runtime_version=self.version, runtime_api_version="v1"
        )


RUNTIME = StandInRuntimeService()


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, FlakyImages]]:
    images = FlakyImages(resets=2)
    srv = grpc.aio.server()
    api_pb2_grpc.add_ImageServiceServicer_to_server(images, srv)
    RUNTIME.version = "2.1.9"
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(RUNTIME, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    try:
        yield f"127.0.0.1:{port}", images
    finally:
        await srv.stop(None)


async def test_pull_is_retried_through_connection_resets(server: tuple[str, FlakyImages]) -> None:
    endpoint, images = server
    channel = rpc.open_channel(endpoint)
    try:
        image_id = await CriClient(channel, endpoint, FAST).pull("r.io/a/b:1")
    finally:
        await channel.close()
    assert image_id == "sha256:" + "e" * 64
    assert images.pull_calls == 3


async def test_a_permanent_pull_failure_is_this_images_error(
    server: tuple[str, FlakyImages],
) -> None:
    endpoint, images = server
    images.resets = 0
    channel = rpc.open_channel(endpoint)
    try:
        with pytest.raises(ImageError, match=r"r.io/a/b:missing: pull failed: NOT_FOUND"):
            await CriClient(channel, endpoint, FAST).pull("r.io/a/b:missing")
    finally:
        await channel.close()
    assert images.pull_calls == 1


async def test_absent_image_status_is_none(server: tuple[str, FlakyImages]) -> None:
    endpoint, _ = server
    channel = rpc.open_channel(endpoint)
    try:
        assert await CriClient(channel, endpoint, FAST).image_status("r.io/a/b:1") is None
    finally:
        await channel.close()


async def test_a_runtime_without_cri_v1_is_reported_with_its_endpoint(
    server: tuple[str, FlakyImages],
) -> None:
    endpoint, _ = server
    RUNTIME.version = None
    channel = rpc.open_channel(endpoint)
    try:
        with pytest.raises(RuntimeUnavailable, match=f"{endpoint}.*Version: UNIMPLEMENTED"):
            await CriClient(channel, endpoint, FAST).version()
    finally:
        await channel.close()


async def test_a_runtime_without_containerds_images_api_cannot_bind_tags(
    server: tuple[str, FlakyImages],
) -> None:
    endpoint, _ = server
    channel = rpc.open_channel(endpoint)
    try:
        with pytest.raises(TagBindingUnsupported, match="cannot be bound"):
            await ContainerdImages(channel, endpoint, policy=FAST).bind_tag(
                "r.io/a:1", f"r.io/a@sha256:{'1' * 64}"
            )
    finally:
        await channel.close()


async def test_a_missing_socket_fails_at_once_saying_what_to_check(tmp_path: Path) -> None:
    endpoint = f"unix://{tmp_path}/absent.sock"
    channel = rpc.open_channel(endpoint)
    stub = api_pb2_grpc.RuntimeServiceStub(channel)
    attempts = 0

    async def version() -> object:
        nonlocal attempts
        attempts += 1
        return await stub.Version(api_pb2.VersionRequest(), timeout=5)

    try:
        with pytest.raises(RuntimeUnavailable) as info:
            await rpc.call(endpoint, version, what="Version", policy=RetryPolicy(attempts=5))
    finally:
        await channel.close()
    assert attempts == 1, "a socket that does not exist is not retried"
    message = str(info.value)
    assert "absent.sock" in message and "nothing listens there (no such socket)" in message
    assert "is containerd running" in message and "--cri-endpoint" in message


async def test_a_socket_nobody_accepts_on_is_retried_then_named(tmp_path: Path) -> None:
    path = tmp_path / "refusing.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.close()  # the file stays; connecting to it is refused, as while containerd restarts
    endpoint = f"unix://{path}"
    channel = rpc.open_channel(endpoint)
    try:
        with pytest.raises(
            RuntimeUnavailable, match=r"nothing listens there \(connection refused\)"
        ):
            await CriClient(channel, endpoint, FAST).list_images()
    finally:
        await channel.close()


@pytest.mark.parametrize(("version", "most"), [("1.6.20~ds1", 1), ("1.7.2", 1), ("1.7.24", 4)])
async def test_pulls_run_one_at_a_time_only_on_runtimes_that_crash_otherwise(
    server: tuple[str, FlakyImages], version: str, most: int
) -> None:
    endpoint, images = server
    images.resets, images.pull_seconds = 0, 0.05
    # Parallel pulls are held until all four are in flight: the test waits for that state.
    images.together = most if most > 1 else 0
    RUNTIME.version = version
    channel = rpc.open_channel(endpoint)
    try:
        client = CriClient(channel, endpoint, FAST)
        await asyncio.gather(*(client.pull(f"r.io/a/b:{i}") for i in range(4)))
    finally:
        await channel.close()
    assert images.most_in_flight == most
