"""Volumes when a job is provisioned: each mounted volume resolved to a claim that exists.

The claims of Berth-created volumes are made again if missing (adopted if they
are there), so a pod never waits on a claim nobody will create. A volume that
no longer exists in the project fails the job with a message naming it: the
API refuses such runs at submission, so only a volume deleted in between
(refused too while the run is active) or a store edited by hand gets here.
"""

from __future__ import annotations

from typing import Any

from shared.clusters import Cluster
from shared.errors import ConfigError
from shared.state.records import Run
from shared.state.store import Store
from shared.volumes.volume_claims import ensure_claim, volume_configuration
from shared.volumes.volume_placement import volume_names
from workers.podspec import ClaimMount


def claims_for_run(store: Store, cluster: Cluster, run: Run, conf: Any) -> dict[str, ClaimMount]:
    """Volume name -> its claim, for every project volume ``conf`` mounts; ConfigError if gone."""
    claims: dict[str, ClaimMount] = {}
    # Every node's volume of a ${{ dstack.node_rank }} name: any node may be the first
    # provisioned, and the claims of the others are then ready for theirs.
    for name in volume_names(conf):
        if name in claims:
            continue
        volume = store.get_volume(run.project, name)
        if volume is None:
            raise ConfigError(
                f"volume {name!r} does not exist in project {run.project!r}"
                " (berth volume list shows the project's volumes)",
                field="volumes",
            )
        ensure_claim(cluster.kube, cluster.namespace, volume)
        read_only = volume_configuration(volume).read_only
        claims[name] = ClaimMount(claim=volume.claim_name, read_only=read_only)
    return claims
