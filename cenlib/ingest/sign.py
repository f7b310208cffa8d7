"""Signing hrefs afresh: the rule of an href's host, and the tokens it hands out.

A signed href expires (a Planetary Computer SAS token lasts about an hour; a run can take days).
:func:`resign` signs one again by the rule of its host (:func:`signing_rule`): Azure Blob
Storage through the ``planetary_computer`` package, any other store through its own token API
at ``<origin>/api/sas/v1/token/<container>`` (as ``cenlib.stac.files`` serves it). Tokens are
kept per process and reused while fresh, one request for all the threads that need one.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from cenlib.stac.signatures import is_signed, signature, strip_signature


class SigningError(RuntimeError):
    """A signed href could not be signed afresh (the token API failed or is not there)."""


TOKEN_API = "/api/sas/v1/token"  # the Planetary Computer's path, which cenlib.stac.files speaks
_BLOB_HOST = ".blob.core.windows.net"


@dataclass(frozen=True)
class _Token:
    query: str  # appended to an href after "?"
    expiry: float  # epoch seconds
    lifetime: float  # seconds it was valid for when handed out

    def fresh(self) -> bool:
        """Worth reusing: more than a quarter of its life (at most a minute) left, as the
        planetary_computer package keeps a token until a minute before it expires."""
        return self.expiry - time.time() > min(60.0, self.lifetime / 4)


_lock = threading.Lock()
_tokens: dict[str, _Token] = {}  # token API URL -> the last token it gave (process-wide)


def _expiry(query: str) -> float | None:
    """When a signature expires (epoch seconds), from ``exp`` (the loopback store) or ``se``
    (Azure SAS); None when the href says nothing."""
    q = {k.lower(): v for k, v in parse_qsl(query)}
    try:
        if "exp" in q:
            return float(q["exp"])
        if "se" in q:
            return dt.datetime.fromisoformat(q["se"].replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return None


def expired(href: str) -> bool:
    """The href's signature says it has expired."""
    when = _expiry(urlsplit(href).query)
    return when is not None and time.time() >= when


def _with_query(href: str, query: str) -> str:
    parts = urlsplit(strip_signature(href))
    return urlunsplit(parts._replace(query="&".join(q for q in (parts.query, query) if q)))


def _get_token(url: str, attempts: int = 3) -> _Token:
    """One token from a token API speaking the Planetary Computer's protocol, with retries on
    5xx and network errors."""
    why = ""
    for i in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=20) as r:
                doc = json.loads(r.read())
            when = dt.datetime.fromisoformat(str(doc["msft:expiry"]).replace("Z", "+00:00"))
            query = str(doc["token"]).lstrip("?")
            expiry = when.timestamp()
            return _Token(query, expiry, max(0.0, expiry - time.time()))
        except urllib.error.HTTPError as e:
            why = f"HTTP {e.code}"
            if e.code < 500:
                break
        except (urllib.error.URLError, OSError) as e:
            why = str(getattr(e, "reason", e))
        except (ValueError, KeyError, TypeError) as e:
            raise SigningError(f"GET {url}: not a token answer ({type(e).__name__}: {e})") from e
        if i + 1 < attempts:
            time.sleep(0.25 * 2**i)
    raise SigningError(f"GET {url}: {why}")


def _sign_by_token_api(href: str) -> str:
    """The store's own rule: a container token from ``<origin>/api/sas/v1/token/<container>``
    (the first path segment), reused by every href of that container while it is fresh."""
    parts = urlsplit(href)
    container = unquote(parts.path).lstrip("/").split("/", 1)[0]
    url = f"{parts.scheme}://{parts.netloc}{TOKEN_API}/{quote(container)}"
    failed = signature(parts.query)
    with _lock:  # one request for the threads that all met the expiry at once
        tok = _tokens.get(url)
        if tok is None or signature(tok.query) == failed or not tok.fresh():
            tok = _tokens[url] = _get_token(url)
    return _with_query(href, tok.query)


def _sign_by_planetary_computer(href: str) -> str:
    """The planetary_computer package's signing, after dropping its cached token for the
    container when that token is the one refused (it keeps tokens until a minute is left)."""
    import planetary_computer
    from planetary_computer import sas, settings

    parts = urlsplit(href)
    account = (parts.hostname or "").split(".")[0]
    container = unquote(parts.path).lstrip("/").split("/", 1)[0]
    key = f"{settings.Settings.get().sas_url}/{account}/{container}"
    with _lock:
        tok = sas.TOKEN_CACHE.get(key)
        if tok is not None and (signature(tok.token) == signature(parts.query) or tok.ttl() < 60):
            sas.TOKEN_CACHE.pop(key, None)
    try:
        return str(planetary_computer.sign_url(strip_signature(href)))
    except Exception as e:  # requests' and pydantic's errors: the network or the answer
        raise SigningError(f"planetary_computer.sign_url: {type(e).__name__}: {e}") from e


def signing_rule(href: str) -> str:
    """Which rule re-signs `href`: by its host, Azure Blob Storage (the Planetary Computer) or
    any other store with a token API (the catalogue's own, as cenlib.stac.files serves)."""
    host = urlsplit(href).hostname or ""
    return "planetary-computer" if host.endswith(_BLOB_HOST) else "token-api"


def resign(href: str) -> str:
    """`href` signed afresh by its host's rule (:func:`signing_rule`); raises SigningError."""
    if signing_rule(href) == "planetary-computer":
        return _sign_by_planetary_computer(href)
    return _sign_by_token_api(href)


def resignable(href: str) -> bool:
    """An HTTP href that a rule can sign afresh (it carries a signature, or its host signs)."""
    return href.startswith(("http://", "https://")) and (
        is_signed(href) or signing_rule(href) == "planetary-computer"
    )


def fix(rule: str, href: str) -> str:
    """What to do when ``rule`` cannot sign ``href``."""
    if rule == "planetary-computer":
        return (
            "check that the Planetary Computer's SAS API is reachable (PC_SDK_SAS_URL, "
            "PC_SDK_SUBSCRIPTION_KEY)"
        )
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(href))
    return (
        f"the store must hand out tokens at {origin}{TOKEN_API}/<container>; or search again "
        "for freshly signed items"
    )
