"""URLs that may carry credentials (``https://user:pass@registry:8081``): the password is
a secret, so it is taken out once and the URL is only ever shown without it."""

from __future__ import annotations

from urllib.parse import unquote


def _parts(url: str) -> tuple[str, str | None, str]:
    """(``scheme://``, userinfo or None, the rest: host[:port]/path…). By hand, not with
    urlsplit: a malformed URL (``[::1``) must still lose its password, not raise."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    else:
        scheme += sep
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    if not at:
        return scheme, None, rest
    return scheme, userinfo, host + rest[end:]


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its userinfo, and the (user, password) it held, if any."""
    scheme, userinfo, rest = _parts(url)
    if userinfo is None:
        return url, None
    user, _, password = userinfo.partition(":")
    return scheme + rest, (unquote(user), unquote(password))


def redact_url(url: str) -> str:
    """``url`` as it may be printed, logged or put into an error: the password is ``***``
    (the user name stays, it helps to tell which login is configured)."""
    scheme, userinfo, rest = _parts(url)
    if userinfo is None:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{user}{':***' if colon else ''}@{rest}"


__all__ = ["redact_url", "split_credentials"]
