"""Dashboard sessions: a random id in the browser's cookie, the user's name in Redis.

The token is never put in the cookie: a stolen cookie dies with the session
(``berth`` logout or the TTL), a stolen token would not. Redis keeps only the
id's sha256, as it keeps tokens.
"""

from __future__ import annotations

import hashlib
import secrets

from shared.state.records import User
from shared.state.store import Store, wrapped

COOKIE = "berth_session"


def create_session(store: Store, user: User, *, ttl_s: int) -> str:
    """A new session for ``user``; the id to put in the cookie."""
    sid = secrets.token_urlsafe(32)
    with wrapped():
        store.r.set(_key(store, sid), user.name, ex=ttl_s)
    return sid


def session_user(store: Store, sid: str | None) -> User | None:
    """The user of a live session; None for no cookie, an unknown or an expired one."""
    if not sid or len(sid) > 128:
        return None
    with wrapped():
        name = store.r.get(_key(store, sid))
    return store.get_user(name.decode()) if name else None


def end_session(store: Store, sid: str | None) -> None:
    if sid and len(sid) <= 128:
        with wrapped():
            store.r.delete(_key(store, sid))


def _key(store: Store, sid: str) -> str:
    return store.key("session", hashlib.sha256(sid.encode()).hexdigest())
