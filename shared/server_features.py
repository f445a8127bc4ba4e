"""Configuration fields that work only where the server is set up for them.

The parser accepts them (they are valid dstack), but whether this Berth can honour
them depends on its settings: ``nvcc`` needs an image with the CUDA compiler
(``devel_image``), ``docker`` one with dockerd (``dind_image``),
``utilization_policy`` needs a place to read GPU utilisation from
(``gpu_metrics.exporter_namespace``: NVIDIA's DCGM exporter). A submission that
needs what is missing is refused here, naming the field and the setting, rather
than accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from shared.errors import ConfigError
from shared.settings import Settings


def check_server_features(conf: Any, settings: Settings | None) -> None:
    """ConfigError naming the first field of ``conf`` this server cannot honour."""
    if getattr(conf, "nvcc", False) and (settings is None or settings.devel_image is None):
        raise ConfigError(
            "nvcc: true needs an image with the CUDA compiler, and this server has none"
            " (its devel_image setting is unset; Berth installs nothing into pods)."
            " Set image: to an image that has nvcc, or ask the operator to set"
            " BERTH_DEVEL_IMAGE",
            field="nvcc",
        )
    docker = _docker_field(conf)
    if docker is not None and (settings is None or settings.dind_image is None):
        raise ConfigError(
            f"{docker}: true needs an image with dockerd and the docker CLI, and this server"
            " has none (its dind_image setting is unset; Berth installs nothing into pods)."
            " Ask the operator to set BERTH_DIND_IMAGE, or set image: to an image with"
            " dockerd (and privileged: true) and start dockerd in the commands",
            field=docker,
        )
    if getattr(conf, "dstack", False) and (settings is None or settings.api.url_for_runs is None):
        raise ConfigError(
            "dstack: true gives the run this server's address, and this server does not know"
            " the address its runs reach it at (its api.url_for_runs setting is unset)."
            " Ask the operator to set BERTH_API__URL_FOR_RUNS",
            field="dstack",
        )
    if getattr(conf, "utilization_policy", None) is not None and (
        settings is None or settings.gpu_metrics.exporter_namespace is None
    ):
        raise ConfigError(
            "utilization_policy needs GPU utilisation metrics, and this server reads none"
            " (no DCGM exporter: its gpu_metrics.exporter_namespace setting is unset; set"
            " BERTH_GPU_METRICS__EXPORTER_NAMESPACE where the GPU Operator runs it)",
            field="utilization_policy",
        )


def _docker_field(conf: Any) -> str | None:
    if getattr(conf, "docker", False):
        return "docker"
    groups = getattr(conf, "groups", None) or []
    asking = (i for i, group in enumerate(groups) if getattr(group, "docker", False))
    return next((f"groups.{i}.docker" for i in asking), None)
