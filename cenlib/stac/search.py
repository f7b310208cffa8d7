"""Searching STAC APIs with pystac-client, with a client-side cloud filter where needed.

Many APIs (and the local ``rustac serve``) implement neither the ``query`` nor the ``filter``
extension. We check the API's conformance and filter by ``eo:cloud_cover`` ourselves when it
cannot, so the same request gives the same items on every server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pystac
from pystac_client import Client, ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from urllib3.util.retry import Retry

from cenlib.errors import CenError

BBox = tuple[float, float, float, float]
CloudFilter = Literal["none", "query", "filter", "client"]


class StacSearchError(CenError, RuntimeError):
    """A STAC search failed; the message names the API, collection and area."""


@dataclass(frozen=True)
class SearchRequest:
    url: str
    collection: str
    bbox: BBox
    datetime: str | None = None  # RFC 3339 instant or interval "start/end"
    max_cloud_cover: float | None = None  # percent; items above are dropped
    page_size: int = 100
    retries: int = 5  # on 429 and 5xx, with exponential backoff; Retry-After is honoured
    backoff: float = 0.5  # seconds, doubled per attempt


@dataclass
class SearchResult:
    request: SearchRequest
    items: list[pystac.Item]
    cloud_filter: CloudFilter
    dropped_cloudy: list[str] = field(default_factory=list)  # ids the client-side filter removed


def _server_cloud_filter(client: Client) -> CloudFilter:
    if client.conforms_to(ConformanceClasses.FILTER):
        return "filter"
    if client.conforms_to(ConformanceClasses.QUERY):
        return "query"
    return "client"


def search(req: SearchRequest) -> SearchResult:
    """All items of one collection over `bbox` (all pages), cloud-filtered on server or client."""
    retry = Retry(
        total=req.retries,
        connect=min(2, req.retries),  # a refused connection rarely heals within seconds
        backoff_factor=req.backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,  # searches are POSTs, and idempotent
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    try:
        client = Client.open(req.url, stac_io=StacApiIO(max_retries=retry, timeout=60))
    except (APIError, OSError) as e:
        raise StacSearchError(f"cannot open STAC API {req.url}: {e}; is the server running?") from e
    mode: CloudFilter = "none" if req.max_cloud_cover is None else _server_cloud_filter(client)
    kwargs: dict[str, Any] = {}
    if mode == "filter":
        kwargs["filter"] = {
            "op": "<=",
            "args": [{"property": "eo:cloud_cover"}, req.max_cloud_cover],
        }
        kwargs["filter_lang"] = "cql2-json"
    elif mode == "query":
        kwargs["query"] = {"eo:cloud_cover": {"lte": req.max_cloud_cover}}
    try:
        found = client.search(
            collections=[req.collection],
            bbox=list(req.bbox),
            datetime=req.datetime,
            limit=req.page_size,
            **kwargs,
        )
        items = list(found.items())
    except APIError as e:
        raise StacSearchError(
            f"search of collection {req.collection!r} at {req.url} over bbox {list(req.bbox)} "
            f"failed: {e}"
        ) from e
    dropped: list[str] = []
    if mode == "client":
        assert req.max_cloud_cover is not None
        kept = []
        for it in items:
            cc = it.properties.get("eo:cloud_cover")
            if cc is not None and float(cc) > req.max_cloud_cover:
                dropped.append(it.id)
            else:
                kept.append(it)
        items = kept
    items.sort(key=lambda i: (i.datetime.isoformat() if i.datetime else "", i.id))
    return SearchResult(req, items, mode, dropped)
