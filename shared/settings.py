"""All of Berth's process settings, in one pydantic-settings class.

Every field reads from ``BERTH_<GROUP>__<FIELD>`` (for example
``BERTH_REDIS__URL``). Settings are loaded once at process start with
:func:`load_settings` and passed down; no module reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The placeholder that may appear in example env files; refused outside development.
PLACEHOLDER_SECRET = "changethis"


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"
    """Broker and system of record. Loopback by default: Berth ships no open ports.
    With ``sentinels`` set, only its database number and credentials are used: the
    Sentinels say where the primary is."""
    socket_timeout_s: float = 5.0
    """Seconds a single Redis command may take; long enough for an AOF rewrite pause."""
    key_prefix: str = "berth"
    """Prefix of every key, so tests and several installations can share one Redis."""
    sentinels: list[str] = []
    """Redis Sentinels as ``host:port`` (in the environment a JSON list,
    ``BERTH_REDIS__SENTINELS='["10.0.0.1:26379","10.0.0.2:26379"]'``). Set, the store
    and the Celery broker ask them for the primary of ``master_name`` and follow it
    through a failover; empty, Berth uses the one Redis of ``url``. Three Sentinels on
    three hosts survive losing one (a failover needs a majority to agree)."""
    master_name: str = "berth"
    """The name the Sentinels monitor the primary under (``sentinel monitor NAME ...``)."""
    sentinel_password: str | None = None
    """The Sentinels' own password (``requirepass`` in their configuration), if they ask
    for one; the Redis servers' password stays in ``url``. Managed Sentinel offerings
    often set both."""
    min_replica_acks: int = Field(default=0, ge=0)
    """Replicas that must have a new run (and every run or job state change a worker
    then acts on) before Berth answers or acts, with Redis ``WAIT``. Replication is
    asynchronous: without it, a write the primary took in its last moments vanishes
    when Sentinel promotes a replica. 0 (no wait) suits a single Redis. With Sentinel,
    1 already survives losing the primary (Sentinel promotes the most up-to-date
    replica); setting it to the number of replicas also covers a failover onto a lagging
    one, but then losing any replica stops submissions and state changes. Costs about a
    round trip to the nearest replica per write (bench/sentinel.py)."""
    replica_ack_timeout_ms: int = Field(default=1000, gt=0)
    """Milliseconds a write waits for ``min_replica_acks`` replicas; fewer by then and
    the submission is answered 503 (retry), a worker's task retries later. A healthy
    replica acknowledges within a millisecond or two; must stay below
    ``socket_timeout_s`` so the wait ends before the connection gives up."""

    @field_validator("sentinels")
    @classmethod
    def _sentinels_are_host_port(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, sep, port = entry.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{entry!r} is not host:port (e.g. 10.0.0.1:26379)")
        return value

    @model_validator(mode="after")
    def _ack_wait_ends_before_the_socket_timeout(self) -> RedisSettings:
        if self.min_replica_acks and self.replica_ack_timeout_ms >= self.socket_timeout_s * 1000:
            raise ValueError(
                f"replica_ack_timeout_ms ({self.replica_ack_timeout_ms}) must be below"
                f" socket_timeout_s ({self.socket_timeout_s} s), or the wait outlives the"
                " connection"
            )
        return self

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``sentinels`` as (host, port) pairs."""
        out = []
        for entry in self.sentinels:
            host, _, port = entry.rpartition(":")
            out.append((host.strip("[]"), int(port)))
        return out


class KubeSettings(BaseModel):
    request_timeout_s: float = 10.0
    """Seconds per Kubernetes API call; every call carries it (no unbounded waits)."""
    watch_timeout_s: int = 240
    """Server-side watch timeout, seconds; shorter than most load balancers' idle cut-off."""
    exec_timeout_s: float = 30.0
    """Seconds a kubeconfig's ``exec`` credential plugin (``aws eks get-token``,
    ``gke-gcloud-auth-plugin``, ``kubelogin``) may run before it is killed and the call
    fails. They take well under 5 s, even fetching from a cloud's token service; a hung
    one must not stall a worker thread forever."""
    access_recheck_s: float = 300.0
    """Seconds between two asks (SelfSubjectAccessReviews) of what Berth may do on a
    backend (``shared/policy/access.py``): an operator's RBAC change is seen within 5 min, and
    at once after a 403 on a read the mode allowed."""
    forbidden_retry_s: float = 300.0
    """Seconds the proxy worker's inventory watch waits after a 403 before it lists that
    kind again; meanwhile the access review decides whether it should at all. Never a
    loop of forbidden calls: at most one per kind per this."""
    namespace_read_ttl_s: float = Field(default=2.0, ge=0.0, le=60.0)
    """Seconds the API keeps a read of a runs namespace's Pod Security label,
    LimitRanges and ResourceQuotas (``shared/kube/recent.py``): an operator's edit is
    seen by submissions within this; a burst reads each a few times, not once per run.
    0 reads every time."""
    provision_concurrency: int = Field(default=8, ge=1, le=64)
    """Jobs of one provisioning message (the jobs one scheduling pass placed) whose
    objects are created at once. Each job is a few apiserver round trips of waiting,
    so 8 overlap them without piling more on the apiserver than the 8 threads of a
    worker process would."""
    teardown_concurrency: int = Field(default=8, ge=1, le=64)
    """Jobs a teardown drainer (``workers/teardown_drain.py``) deletes at once: as many
    as the 8 worker threads that each ran a job's teardown task before stops were
    drained in batches."""
    worker_connections: int = Field(default=80, ge=1)
    """Connections to each cluster's apiserver a worker process keeps for reuse. Its
    threads (8 by default) each create up to ``provision_concurrency`` jobs' objects at
    once, and a teardown drainer deletes ``teardown_concurrency``: 8 x 8 + 8 = 72 with
    the defaults. A request beyond the pool opens a connection (a TLS handshake on
    both sides) and drops it after: with 32, 93 times in one 500-run burst."""


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    """Loopback by default; bind wider only behind TLS."""
    port: int = 3000
    reuse_port: bool = False
    """Listen with ``SO_REUSEPORT``, so several API processes on one machine share one
    address and the kernel spreads new connections over them; one killed, the others
    take its connections (the clients in flight on it see a reset). Off by default: a
    second process on the port is then an error, not a silent split."""
    admin_token: SecretStr | None = None
    """Fixed admin token for the first start; generated and printed once when unset."""
    max_body_bytes: int = 1_048_576
    """Largest request body under ``/api/``, bytes; bigger ones get 413. A configuration
    is a few KiB; 1 MiB leaves room for inline files while bounding what one request
    can make the server parse."""
    url_for_runs: str | None = None
    """The API's address as the cluster's pods reach it (in ``deploy/k8s``:
    ``http://berth-api.berth.svc:3000``). A run with ``dstack: true`` gets it as
    ``BERTH_URL``, so the ``berth`` CLI inside the run talks to this server; unset,
    such runs are refused at submission."""
    session_ttl_s: int = 12 * 3600
    """How long a dashboard login lasts, seconds: a working day, after which the browser
    shows the login page again."""
    dashboard_refresh_s: float = 0.5
    """How often the dashboard's live stream looks for changes, seconds: a change shows
    within this (plus ~50 ms to draw 1,000 nodes); a look costs ~20 ms of the API's CPU
    per project at 1,000 nodes (bench/dashboard.py), only while someone watches."""


class CodeSettings(BaseModel):
    """The user's code sent with a run (``repos``, ``files``)."""

    max_bytes: int = 2 * 1024 * 1024
    """Largest compressed archive of a run's code, bytes; dstack's default limit (2 MiB).
    Kept in Redis until the run's pods have it, so the cap also bounds Redis memory
    per run; large data belongs in volumes."""
    ttl_s: int = 7 * 24 * 3600
    """How long an uploaded archive is kept, seconds; a run started (or retried) later
    than this after its submission cannot get its code back and fails saying so."""


class SecretsSettings(BaseModel):
    key: SecretStr | None = None
    """Fernet key (32 url-safe base64 bytes; ``python -c "from cryptography.fernet import
    Fernet; print(Fernet.generate_key().decode())"``) that encrypts project secrets in
    Redis. No default: a key kept beside the data would protect nothing. Unset, secrets
    cannot be set or used, and the error says so. ``berth local up`` makes one."""


class LogSettings(BaseModel):
    """Run output: the collector (``berth log-collector``) and the log store in Redis."""

    max_mib_per_attempt: float = 32.0
    """Output kept per job attempt, MiB; beyond it the oldest lines go and readers are
    told how many. Bounds Redis memory per job (bench/logs.py measures the cost per MiB);
    a training run's metrics belong in a tracker, not megabytes of stdout."""
    flush_interval_s: float = 0.1
    """Lines read within this long go to Redis in one write, seconds: one round trip per
    burst instead of per line, and well under the ~1 s a follower would notice."""
    chunk_bytes: int = 64 * 1024
    """A write happens at the latest when this many bytes are waiting, bytes."""
    max_line_bytes: int = 1024 * 1024
    """A longer line (no newline within this many bytes) is cut here and marked, bytes,
    so a program printing binary without newlines cannot grow the collector's memory."""
    resume_margin_s: int = 30
    """On a reconnect the collector reads again from this many seconds before its cursor,
    seconds: the log API takes a relative start, so this covers clock skew between the
    collector's host and the node; the cursor drops what was already stored."""
    read_timeout_s: float = 300.0
    """A silent running container's stream is reopened after this long, seconds."""
    drain_s: float = 1.0
    """After the container ended, its stream gets this long to end by itself before the
    collector cuts it and reads the rest without following, seconds (KWOK's streams
    never end)."""
    follow_quiet_s: float = Field(default=20.0, gt=0)
    """Seconds a follow first waits for its first bytes, or for more, before it is ended
    and opened again from the stored cursor; each further quiet spell of a running
    container doubles the wait, up to ``read_timeout_s``, and bytes bring it back. A
    kubelet sends a log stream's headers with its first bytes, so following a container
    that prints nothing waits in the request; when such a container ends, the waiting
    follow is left to lapse and its output read plainly at once."""
    connections: int = Field(default=256, ge=1)
    """Connections to each cluster's apiserver the collector keeps open for reuse. Each
    follow holds one while its container runs, so hundreds are in use at 20 jobs a
    second; past this many a follow opens a connection (a TLS handshake on both sides)
    and closes it after."""
    hold_s: int = Field(default=30, ge=0)
    """How long a container whose output could have met a log rotation holds on at its
    end for the collector to put back what the kubelet never served, seconds (it reads
    the container's own copy through ``exec``, which needs ``pods/exec``; usually done in
    a second). 0: containers keep no copy and never wait; missing lines are only counted."""
    node_log_max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    """The nodes' kubelet ``containerLogMaxSize``, bytes (its default, 10 MiB): only a
    container whose log file reached it can have lost lines, so only such a one holds on."""
    retention_days: float = 30.0
    """Finished runs, their events and output are deleted this long after they ended,
    days; a deleted run's name answers "expired" for as long again."""


class FlowerSettings(BaseModel):
    basic_auth: SecretStr | None = None
    """``user:password`` for Flower's basic auth; unset means no auth (loopback only)."""


class ObservabilitySettings(BaseModel):
    metrics_port: int = 0
    """Port for a worker's or proxy worker's /metrics on loopback; 0 turns it off
    (the API always serves /metrics on its own port)."""
    log_json: bool = False
    """One JSON object per log line, for log shippers; plain text otherwise."""
    log_level: str = "INFO"


class LocalClusterSettings(BaseModel):
    startup_timeout_s: float = 120.0
    """Seconds to wait for the whole control plane; apiserver cold start was seen at 10-35 s."""
    build_timeout_s: float = 3600.0
    """Seconds the cold Go build may take on 2 cores (measured well under this)."""


class SchedulingSettings(BaseModel):
    gang_ready_timeout_s: float = 300.0
    """Seconds every pod of a multi-node run has, from placement, to be Running; then
    the whole run returns to the queue. Kueue's ``waitForPodsReady`` uses 5 minutes:
    long enough for an image pull, short enough that a half-started gang does not
    hold GPUs for long."""
    lock_ttl_s: float = 30.0
    """Seconds the scheduling lock lives without release; a pass takes milliseconds to a
    few seconds (reading claims and node labels for runs with volumes or a node
    selector), so only a crashed pass ever lets it expire (and writes stay fenced
    after that)."""
    exact_positions: int = 50
    """Queue positions up to this one are written into the run's reason (at most every
    ``position_refresh_s``, and whenever what the run waits for changes); deeper ones,
    which shift on nearly every admission, are published apart
    (``shared.queueing.positions``), so 10,000 waiting runs cost no record writes for
    their places."""
    position_refresh_s: float = Field(default=2.0, gt=0)
    """Seconds between two writes of the places near the front into the reasons, and
    between two publications of the deep positions (by each worker process; the deep
    ones only by full passes, so at most ``full_pass_every_s`` apart while quick passes
    run): the most a place shown can lag. A publication of 10,000 places is one Redis
    ``SET`` of ~450 KB."""
    pass_share: float = Field(default=0.25, gt=0, le=1)
    """The most of one core that passes take while requests keep coming (a finished
    job or a submission each ask for one): after a pass of ``t`` seconds the next
    waits ``t * (1 / pass_share - 1)``, at most ``gather_max_s``, gathering the
    requests meanwhile; ``t`` counts only the part of the pass that decided again that
    runs wait (a pass that placed every run it decided, a burst's, is followed at
    once). Lower leaves more of the machine to the workers that start pods and to the
    cluster, and admits more runs per pass; each request waits longer.
    With quick passes (~10-30 ms at any depth) 0.25 waits 30-90 ms: in a 10,000-job
    drain on 2 cores it took a fifth of the workers' CPU off against 0.5 (passes were
    ~60% of it), with the freed GPU -> next pod p99 unchanged (0.14 s)."""
    gather_max_s: float = Field(default=1.0, ge=0)
    """The longest wait between passes, whatever a pass costs: the latency bound."""
    head_runs: int = Field(default=200, ge=1)
    """Queued runs per project a quick pass decides (``shared.queueing.heads``): with more
    waiting, passes between two full ones look only at each project's first ``head_runs``
    in queue order (never fewer than ``exact_positions``), so a GPU freed at a depth of
    10,000 is handed over as fast as at 100."""
    full_pass_every_s: float = Field(default=5.0, gt=0)
    """Seconds between full passes (each worker process counts its own) while the
    queues are deeper than ``head_runs``: the longest a run past the heads waits to be
    backfilled or failed, and how often the deep positions can move."""
    first_decision_s: float = Field(default=1.0, ge=0)
    """Seconds a run no pass has seen yet (``submitted``) waits, past the heads, for the
    full pass that decides it (pending with its reason, or failed if impossible)."""
    max_reservations: int = 8
    """Blocked runs per pass that reserve the nodes they will start on (backfill). Each
    costs one scan of the nodes; 1 would be EASY backfill, more protects big runs of
    several GPU models at once."""
    quota_ttl_s: float = 2.0
    """Seconds a namespace's ResourceQuota read serves scheduling passes. Passes come
    in bursts (one per submitted or finished run); 2s keeps that to one LIST per
    namespace every 2s, and a pod refused for quota meanwhile forces a fresh read."""
    quota_forbidden_recheck_s: float = 60.0
    """Seconds before asking again for the quotas of a namespace whose resourcequotas
    Berth may not read (403): rarely enough to cost nothing, often enough that an
    operator's RBAC fix takes effect within a minute."""


class SshSettings(BaseModel):
    jump_image: str = (
        "testcontainers/sshd:1.3.0"
        "@sha256:c50c0f59554dcdb2d9e5e705112144428ae9d04ac0af6322b365a18e24213a6a"
    )
    """The jump pod's image: Alpine with OpenSSH's sshd and a root account, pinned by
    digest. dstack's Kubernetes backend uses the same image for its jump pod."""
    jump_user: str = "root"
    """Login user on the jump host; the key options and ForceCommand allow it nothing
    but TCP forwarding."""
    run_user: str = "root"
    """Login user in run pods, as in dstack's images; ``berth attach`` writes it."""
    activity_interval_s: float = 60.0
    """Seconds between counts of the SSH sessions in each dev environment that has an
    ``inactivity_duration`` (one login per pod through the jump host); inactivity is
    in minutes, so a minute's resolution costs one login per pod per minute."""
    health_interval_s: float = 5.0
    """Seconds between health checks (an SSH login with Berth's key) of each jump
    host; a deleted jump pod or Service is recreated within one interval."""
    keys_interval_s: float = 1.0
    """Seconds between comparisons of the members' keys with each jump host's Secret,
    so a new or changed key reaches the jump host within about this."""
    connect_timeout_s: float = 5.0
    """Seconds an SSH connection (TCP, handshake and login) may take; a loaded jump
    host answers well inside 1 s."""
    proxy_connect_timeout_s: float = 10.0
    """Seconds the service proxy waits to open a tunnel to a replica."""
    key_file: Path | None = None
    """Berth's private SSH key (OpenSSH format), e.g. a mounted Kubernetes Secret.
    Created (mode 0600) if missing; refused if other users may read it or anyone
    but its owner may change it. Unset: the key is generated once and kept in
    Redis, which every Berth process shares and only Berth reaches."""
    proxy_read_timeout_s: float = 300.0
    """Seconds the service proxy waits for the next bytes of a response; long enough
    for a model server's first token, and streams reset it with every chunk."""


class GpuMetricsSettings(BaseModel):
    """Where Berth reads GPU utilisation, for runs with ``utilization_policy``."""

    exporter_namespace: str | None = None
    """The namespace of NVIDIA's DCGM exporter (the GPU Operator installs it in
    ``gpu-operator``). Berth reads each exporter pod's ``/metrics`` through the
    apiserver's pod proxy and takes ``DCGM_FI_DEV_GPU_UTIL`` by its ``namespace`` and
    ``pod`` labels (the exporter's Kubernetes mapping, on by default there); no
    Prometheus is needed. Unset: Berth sees no GPU utilisation, so
    ``utilization_policy`` is refused at submission."""
    exporter_selector: str = "app=nvidia-dcgm-exporter"
    """The exporter pods' labels, as the GPU Operator sets them."""
    exporter_port: int = 9400
    timeout_s: float = 5.0
    """Seconds one exporter's metrics may take; a slow exporter skips that check."""
    check_interval_s: float = 60.0
    """Seconds between utilisation checks; dstack's windows are minutes to hours."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BERTH_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(default_factory=lambda: Path.home() / ".berth")
    """Berth's state directory: server config, local cluster, SSH includes."""
    environment: str = "development"
    """``development`` allows placeholder secrets; anything else refuses them."""
    server_config: Path | None = None
    """Server config file; defaults to ``<home>/server/config.yml``."""
    default_image: str = "dstackai/base:py3.12-0.7-cuda-12.1"
    """Image for runs that name none: dstack's base image, with Python and CUDA,
    so configurations written for dstack behave the same."""
    devel_image: str | None = None
    """Image with the CUDA compiler (nvcc) for runs with ``nvcc: true``, such as
    ``dstackai/base:py3.12-0.7-cuda-12.1-devel``, mirrored into the cluster's registry.
    Unset: ``nvcc: true`` is refused at submission; Berth never installs the compiler
    into a pod, which an air-gapped cluster could not download anyway."""
    dind_image: str | None = None
    """Image with dockerd and the docker CLI for runs with ``docker: true`` (dstack's
    ``dstackai/dind``, mirrored into the cluster's registry; ``berth local up`` builds
    one from Debian's ``docker.io``). Unset: ``docker: true`` is refused at submission,
    for the reason ``devel_image`` is."""
    gpu_metrics: GpuMetricsSettings = GpuMetricsSettings()
    redis: RedisSettings = RedisSettings()
    kube: KubeSettings = KubeSettings()
    api: ApiSettings = ApiSettings()
    local: LocalClusterSettings = LocalClusterSettings()
    flower: FlowerSettings = FlowerSettings()
    code: CodeSettings = CodeSettings()
    secrets: SecretsSettings = SecretsSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    ssh: SshSettings = SshSettings()
    scheduling: SchedulingSettings = SchedulingSettings()
    logs: LogSettings = LogSettings()

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        token = self.api.admin_token
        if (
            self.environment != "development"
            and token is not None
            and token.get_secret_value() == PLACEHOLDER_SECRET
        ):
            raise ValueError("api.admin_token is the placeholder; set a real secret")
        return self

    @property
    def server_config_path(self) -> Path:
        return self.server_config or self.home / "server" / "config.yml"

    @property
    def local_dir(self) -> Path:
        return self.home / "local"


def load_settings() -> Settings:
    """Read settings from the environment once, at process start."""
    return Settings()
