"""The least Python CRI client that preloads a list: PullImage for each reference, `concurrency`
at a time, nothing else — grpc and the CRI stubs imported, no registry client, no checks. Timed
as a whole process by the cold bench, beside `prepull-agent once` timed the same way:
`python -m bench.raw_client ENDPOINT CONCURRENCY REFERENCE...`."""

from __future__ import annotations

import asyncio
import sys

import grpc

from agent._proto.runtime.v1 import api_pb2, api_pb2_grpc


async def pull_all(endpoint: str, concurrency: int, references: list[str]) -> None:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        images = api_pb2_grpc.ImageServiceStub(channel)
        slots = asyncio.Semaphore(concurrency)

        async def one(reference: str) -> None:
            async with slots:
                request = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=reference))
                await images.PullImage(request)

        await asyncio.gather(*(one(r) for r in references))


if __name__ == "__main__":
    endpoint, concurrency, *references = sys.argv[1:]
    target = endpoint if "://" in endpoint else f"unix://{endpoint}"
    asyncio.run(pull_all(target, int(concurrency), references))
