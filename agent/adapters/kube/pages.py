"""A list read from the API server page by page (`limit`, `continue`), bounded: so many pages, so
many bytes in all, each item cut to the fields its reader uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from agent.adapters.kube.client import ApiClient
from agent.adapters.kube.errors import KubeApiError
from agent.core.files import size_text
from agent.core.jsonread import pick

# A page of a list; the API server hands the rest on with `continue`. A list longer than
# MAX_PAGES pages (the largest clusters hold some 15,000 nodes) is an API server that never ends.
PAGE = 500
MAX_PAGES = 200
MAX_PAGE_BYTES = 64 * 1024 * 1024
MAX_LIST_BYTES = 512 * 1024 * 1024
LIST_TIMEOUT = 60.0
Fields = tuple[tuple[str, ...], ...]


async def read_list(
    client: ApiClient,
    path: str,
    query: Mapping[str, str],
    hints: dict[int, str],
    fields: Fields | None = None,
) -> dict[str, Any]:
    """All pages of the list at `path` (`query`: its selectors) as one (`items`, and the
    `resourceVersion` it was read at), each item cut to `fields`; KubeApiError past MAX_PAGES
    pages or MAX_LIST_BYTES in all (what one page may hold times the pages is far too much)."""
    items: list[Any] = []
    token: Any = ""
    read = 0
    version: str | None = None
    for _ in range(MAX_PAGES):
        asked = {**{k: v for k, v in query.items() if v}, "limit": str(PAGE)}
        if token:
            asked["continue"] = token
        page, size = await client.json(
            "GET",
            f"{path}?{urlencode(asked)}",
            limit=MAX_PAGE_BYTES,
            within=LIST_TIMEOUT,
            hints=hints,
        )
        read += size
        if read > MAX_LIST_BYTES:
            raise KubeApiError(
                f"GET {path}: the list is larger than {size_text(MAX_LIST_BYTES)} in all"
            )
        if not isinstance(page, dict) or not isinstance(page.get("items"), list):
            raise KubeApiError(f"GET {path}: the API server answered no list")
        items.extend(pick(i, fields) if fields else i for i in page["items"])
        metadata = page.get("metadata")
        if version is None and isinstance(metadata, dict):
            found = metadata.get("resourceVersion")
            version = found if isinstance(found, str) and found else None
        token = metadata.get("continue") if isinstance(metadata, dict) else None
        if not isinstance(token, str) or not token:
            # The list's resourceVersion: where a watch of what changed since starts.
            return {"items": items, "resourceVersion": version}
    raise KubeApiError(f"GET {path}: the API server sent more than {MAX_PAGES} pages")
