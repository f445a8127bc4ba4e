"""One TLS context per Kubernetes client, shared by all of its new connections.

urllib3 builds a fresh ``SSLContext`` for every connection it opens and loads the
CA bundle and the client certificate into it. Measured against the local
apiserver, a GET over a new connection cost the kube client 3.71 ms of CPU, and
2.69 ms with one context (1.0 ms reused), paid for every connection the pool
cannot keep: the log collector's follows of containers whose streams never
end are cut, which closes theirs, one or more per job.

:func:`share_context` gives a client's pool manager a context built once and
built again only when one of its files changed on disk (a rotated client
certificate, an in-cluster CA bundle its projection rewrote): each new
connection compares the files' ``stat``, so a rotation is seen by the next
connection, as it was when urllib3 read the files every time.

The context also **resumes TLS sessions**: each new connection offers the server
the session ticket the client's last new connection was given, so the server skips
signing with its certificate's key. Profiling the local apiserver through a
500-run burst put its TLS handshakes at 13% of its CPU, nearly all of it the RSA
signature, about one per run: the log collector's follows of silent containers
cannot be reused (an unanswered request ends by closing its connection). urllib3
sets ``OP_NO_TICKET`` (which stops TLS 1.2 tickets; OpenSSL's TLS 1.3 client takes
tickets regardless, but nothing used them); here it is off, and nothing else about
the context differs from urllib3's. A context rebuilt for changed files starts with no
session (a session belongs to the context that made it, and to its client
certificate); a ticket the server no longer accepts costs one full handshake, whose
session replaces it.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from typing import Any

import urllib3
from kubernetes import client
from urllib3.connection import HTTPSConnection
from urllib3.util.ssl_ import create_urllib3_context

_Stamp = tuple[tuple[int, int, int] | None, ...]


class TlsFiles:
    """The context a client's connections use, from its CA and certificate files."""

    def __init__(
        self,
        *,
        cert_reqs: int,
        ca_file: str | None = None,
        ca_data: str | bytes | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        self.cert_reqs = cert_reqs
        self.ca_file = ca_file
        self.ca_data = ca_data
        self.cert_file = cert_file
        self.key_file = key_file
        self.builds = 0
        """Contexts built so far: one, plus one per change of the files."""
        self._paths = [p for p in (ca_file, cert_file, key_file) if p]
        self._lock = threading.Lock()
        self._context: ResumingContext | None = None
        self._built_from: _Stamp = ()

    def context(self) -> ResumingContext:
        """The current context; built again first if a file changed since the last build.
        A file that cannot be read fails here, as urllib3's own loading did: the call's
        connection error."""
        stamp = self._stamp()
        with self._lock:
            if self._context is None or stamp != self._built_from:
                self._context = self._build()
                self._built_from = stamp
                self.builds += 1
            return self._context

    def _stamp(self) -> _Stamp:
        out: list[tuple[int, int, int] | None] = []
        for path in self._paths:
            try:
                st = os.stat(path)
            except OSError:
                out.append(None)
                continue
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _build(self) -> ResumingContext:
        context = ResumingContext.like(create_urllib3_context(cert_reqs=self.cert_reqs))
        if self.ca_file or self.ca_data:
            context.load_verify_locations(cafile=self.ca_file, cadata=self.ca_data)
        else:  # no CA named: the system's, as urllib3 loads then
            context.load_default_certs()
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


class ResumingContext(ssl.SSLContext):
    """A client context whose new connections resume the session last kept for their server."""

    def __init__(self, protocol: int = ssl.PROTOCOL_TLS_CLIENT) -> None:
        # ssl.SSLContext is made in __new__ (from ``protocol``); this only adds our state.
        self._sessions: dict[str, ssl.SSLSession] = {}
        self._count_lock = threading.Lock()
        self.handshakes = 0
        """Connections opened with this context (for tests and measurements)."""
        self.resumed = 0
        """Of those, the ones the server let resume a session (no certificate signature)."""

    @classmethod
    def like(cls, reference: ssl.SSLContext) -> ResumingContext:
        """A context set up as ``reference`` is, but asking for session tickets."""
        context = cls(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = reference.minimum_version
        context.maximum_version = reference.maximum_version
        context.options = reference.options & ~ssl.OP_NO_TICKET
        context.verify_flags = reference.verify_flags
        context.post_handshake_auth = reference.post_handshake_auth
        context.check_hostname = reference.check_hostname  # first: CERT_NONE needs it off
        context.verify_mode = reference.verify_mode
        context.hostname_checks_common_name = reference.hostname_checks_common_name
        if reference.keylog_filename:
            context.keylog_filename = reference.keylog_filename
        return context

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        if session is None and not server_side and server_hostname is not None:
            session = self._sessions.get(_host_key(server_hostname))
        tls = super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=server_hostname,
            session=session,
        )
        if do_handshake_on_connect:
            with self._count_lock:
                self.handshakes += 1
                self.resumed += bool(tls.session_reused)
        return tls

    def keep(self, tls: ssl.SSLSocket) -> None:
        """Offer ``tls``'s session (if its server gave a ticket) to the next connections."""
        session = tls.session
        if tls.server_hostname is not None and session is not None and session.has_ticket:
            self._sessions[_host_key(tls.server_hostname)] = session


def share_context(api: client.ApiClient) -> TlsFiles | None:
    """Make ``api``'s new HTTPS connections use one :class:`TlsFiles` context.

    None (and nothing changed) when the client goes through a proxy (``proxy-url``):
    an HTTP proxy's manager also sets up TLS to the proxy, and a SOCKS one has its own
    connection classes, which this must not replace.
    """
    manager = api.rest_client.pool_manager
    if type(manager) is not urllib3.PoolManager:
        return None
    kw: dict[str, Any] = manager.connection_pool_kw
    cert_reqs = kw.get("cert_reqs")
    files = TlsFiles(
        # CERT_NONE is 0: insecure-skip-tls-verify must not read as "unset".
        cert_reqs=ssl.CERT_REQUIRED if cert_reqs is None else cert_reqs,
        # Taken out of what each connection is given, or urllib3 would load them into
        # the shared context again for every connection.
        ca_file=kw.pop("ca_certs", None),
        ca_data=kw.pop("ca_cert_data", None),
        cert_file=kw.pop("cert_file", None),
        key_file=kw.pop("key_file", None),
    )
    manager.pool_classes_by_scheme = {
        **manager.pool_classes_by_scheme,
        "https": _pool_class(files),
    }
    return files


def _pool_class(files: TlsFiles) -> type[urllib3.HTTPSConnectionPool]:
    class Connection(HTTPSConnection):
        _kept = False
        """Whether this connection's session was offered to the next new ones."""

        def connect(self) -> None:
            self.ssl_context = files.context()
            self._kept = False
            super().connect()

        def getresponse(self, *args: Any, **kwargs: Any) -> Any:
            response = super().getresponse(*args, **kwargs)
            if not self._kept:
                # After an answer, in the thread reading this socket: a TLS 1.3 server
                # sends its ticket after the handshake, and it is read with the answer.
                self._kept = True
                context = self.ssl_context
                if isinstance(context, ResumingContext) and isinstance(self.sock, ssl.SSLSocket):
                    context.keep(self.sock)
            return response

    class Pool(urllib3.HTTPSConnectionPool):
        ConnectionCls = Connection

    return Pool


def _host_key(host: str | bytes) -> str:
    return (host.decode("ascii", "replace") if isinstance(host, bytes) else host).lower()
