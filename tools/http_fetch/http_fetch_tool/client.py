"""GET a URL and return its text; the tool's gateway decides which hosts it may reach."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request


class FetchError(RuntimeError):
    """The URL could not be fetched."""


class Client:
    """Fetch web pages as text."""

    def get(self, url: str, max_bytes: int = 200_000) -> dict:
        """GET a URL and return its status, content type and text.

        Args:
            url: an http or https URL on a host the tool's policy allows.
            max_bytes: read at most this many bytes of the body (the rest is cut).
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"{url!r} is not an http(s) URL")
        limit = max(1, min(max_bytes, 5_000_000))
        req = urllib.request.Request(url, headers={"User-Agent": "centaur-http-fetch"})
        try:
            resp = urllib.request.urlopen(req, timeout=25)
        except urllib.error.HTTPError as e:
            reason = e.headers.get("x-centaur-reason")
            if reason:
                raise FetchError(f"the tool's gateway refused {parts.hostname}: {reason}") from None
            resp = e
        except urllib.error.URLError as e:
            if "ALERT_ACCESS_DENIED" in str(e.reason):
                # An https request to a host outside the tool's policy ends at the handshake.
                raise FetchError(f"the tool's gateway refused {parts.hostname}: not one of the tool's hosts") from None
            raise FetchError(f"cannot fetch {url}: {e.reason}") from None
        with resp:
            body = resp.read(limit + 1)
            ctype = resp.headers.get("Content-Type", "")
            charset = resp.headers.get_content_charset() or "utf-8"
            return {
                "url": url,
                "status": resp.status,
                "content_type": ctype,
                "text": body[:limit].decode(charset, "replace"),
                "truncated": len(body) > limit,
            }
