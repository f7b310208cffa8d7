"""Signatures in hrefs: which query parameters carry one (Azure SAS as the Planetary Computer
hands out, S3 presigned URLs, the loopback store's tokens), and how to keep them out of
everything the tool writes: stripped from messages and failure records, masked (the names kept,
the values replaced by ``redacted``) in the items a run stores, so a reader knows to sign the
href afresh before it opens it."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters that carry a signature or credential: Azure SAS (the Planetary Computer), S3
# presigned URLs and the loopback store's own (cenlib.stac.files). Never written anywhere.
SECRET_PARAMS = frozenset(
    {"sv", "ss", "srt", "sp", "se", "st", "spr", "sig", "sr", "si", "sip", "skoid", "sktid"}
    | {"skt", "ske", "sks", "skv", "sdd", "ses", "token", "exp", "x-amz-algorithm"}
    | {"x-amz-credential", "x-amz-date", "x-amz-expires", "x-amz-security-token"}
    | {"x-amz-signature", "x-amz-signedheaders"}
)
_QUERY = re.compile(r"\?([^\s#'\"<>,;]*)")


def signature(query: str) -> frozenset[tuple[str, str]]:
    """The (name, value) pairs of ``query`` that sign it."""
    return frozenset(
        (k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() in SECRET_PARAMS
    )


def _keep(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, v) for k, v in pairs if k.lower() not in SECRET_PARAMS])


def strip_signature(href: str) -> str:
    """`href` without its signature query parameters (the others stay)."""
    parts = urlsplit(href)
    if not parts.query:
        return href
    return urlunsplit(parts._replace(query=_keep(parts.query)))


def redact(text: str) -> str:
    """`text` with the signature parameters of every query string in it removed (GDAL's messages
    name the file they failed on, query string and all)."""

    def clean(m: re.Match[str]) -> str:
        kept = _keep(m.group(1))
        return f"?{kept}" if kept else ""

    return _QUERY.sub(clean, text)


def is_signed(href: str) -> bool:
    return bool(signature(urlsplit(href).query))


MASK = "redacted"


def mask_signature(href: str) -> str:
    """`href` with the value of each signature parameter replaced by ``redacted``: safe to
    write, and :func:`is_masked` tells a reader it must be signed again before use."""
    parts = urlsplit(href)
    if not parts.query or not is_signed(href):
        return href
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    masked = [(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in pairs]
    return urlunsplit(parts._replace(query=urlencode(masked)))


def is_masked(href: str) -> bool:
    """`href` was written by :func:`mask_signature`: its signature has to be made afresh."""
    return any(v == MASK for _, v in signature(urlsplit(href).query))
