"""Configuration fields that work only where the server is set up for them.

The parser accepts them (they are valid dstack), but whether this Berth can honour
them depends on its settings: ``nvcc`` needs an image with the CUDA compiler
(``devel_image``), ``utilization_policy`` needs a place to read GPU utilisation
from (``gpu_metrics.prometheus_url``). A submission that needs what is missing is
refused here, naming the field and the setting, rather than accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from shared.errors import ConfigError, NotSupportedError
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
    if getattr(conf, "utilization_policy", None) is not None and (
        settings is None or settings.gpu_metrics.prometheus_url is None
    ):
        raise ConfigError(
            "utilization_policy needs GPU utilisation metrics, and this server reads none"
            " (no DCGM exporter metrics: its gpu_metrics.prometheus_url setting is unset)",
            field="utilization_policy",
        )
    for name in ("utilization_policy",):  # parsed; its effect comes next
        if getattr(conf, name, None) is not None:
            raise NotSupportedError(f"not supported by Berth yet: {name}", field=name)
