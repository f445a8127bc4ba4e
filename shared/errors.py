"""Berth's one error hierarchy.

::

    BerthError
     ├── ConfigError            bad user or server configuration (names the field)
     │    └── NotSupportedError  a dstack field Berth does not honour yet
     ├── NotFoundError          no such run/project/fleet, or not visible to the caller
     ├── ConflictError          a state or version conflict (compare-and-set lost)
     ├── AuthError              missing or wrong credentials
 ├── ForbiddenError         a known caller asking for what it may not do
     ├── LocalClusterError      the embedded control plane failed to build/start
     ├── KubeError              the Kubernetes API failed (wrapped ApiException)
     │    ├── KubeNotFound
     │    ├── KubeConflict      409 AlreadyExists / Conflict
     │    ├── KubeForbidden
     │    ├── KubeUnauthorized  401: the credential was refused (even after a refresh)
     │    └── KubeCredentialError  (temporary) a credential plugin failed, hung or printed nonsense
     ├── StoreError             Redis failed (wrapped redis error)
     │    └── ReplicationError  fewer Redis replicas than redis.min_replica_acks took a write
     └── SSHError               an asyncssh connection or check failed

Library exceptions are wrapped at the boundary with ``raise ... from e`` so
callers and the HTTP layer only ever see these. ``TemporaryError`` is a mixin
word for "retrying may help" (kopf's TemporaryError idea); everything else is
treated as permanent by the workers.
"""

from __future__ import annotations


class BerthError(Exception):
    """Base of every error Berth raises on purpose."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class TemporaryError(BerthError):
    """Retrying later may succeed (apiserver down, Redis restarting)."""

    def __init__(self, message: str, *, delay: float = 1.0, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.delay = delay


class ConfigError(BerthError):
    """A configuration is invalid; ``field`` is the dotted YAML path."""


class NotSupportedError(ConfigError):
    """dstack accepts this field but Berth does not honour it yet."""


class NotFoundError(BerthError):
    """The object does not exist, or the caller may not see it."""


class ConflictError(BerthError):
    """The object changed under us, or is in a state that forbids the operation."""


class AuthError(BerthError):
    """The bearer token is missing, unknown or lacks rights."""


class ForbiddenError(BerthError):
    """The token is valid but its user may not do this (an admin-only action)."""


class LocalClusterError(BerthError):
    """The embedded local control plane could not be built, started or reached."""


class KubeError(BerthError):
    """The Kubernetes API answered with an error or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeTemporaryError(KubeError, TemporaryError):
    """A 5xx, 429 or connection failure: the apiserver may be back soon."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        KubeError.__init__(self, message, status=status, reason=reason)
        self.delay = 1.0


class KubeNotFound(KubeError):
    """404 from the apiserver."""


class KubeConflict(KubeError):
    """409 from the apiserver: AlreadyExists, or a resourceVersion conflict."""


class KubeForbidden(KubeError):
    """403 from the apiserver: RBAC or admission refused the call."""


class KubeUnauthorized(KubeError):
    """401 from the apiserver: the token or certificate is unknown, expired or revoked."""


class KubeCredentialError(KubeTemporaryError):
    """A kubeconfig's ``exec`` credential plugin failed, timed out or printed no credential.

    Temporary: plugins fail for passing reasons (a cloud's token service, a network
    blip), and the next call runs the plugin again. The message names the plugin and
    carries the end of its stderr, which is where plugins explain themselves.
    """

    def __init__(self, message: str, *, plugin: str, stderr: str = "") -> None:
        super().__init__(message)
        self.plugin = plugin
        self.stderr = stderr


class StoreError(TemporaryError):
    """Redis failed or timed out."""


class ReplicationError(StoreError):
    """The primary took a write but fewer replicas than ``redis.min_replica_acks``
    acknowledged it in time, so a failover now could lose it: not answered as done."""


class SSHError(TemporaryError):
    """An SSH connection or command failed."""
