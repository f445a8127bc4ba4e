"""dstack-format configurations (``.dstack.yml``) and Berth's server configuration.

Pure parsing and validation: no network, no Kubernetes. Start with
:func:`parse_run_configuration`, :func:`parse_configuration` or
:func:`load_server_config`; every failure is a :class:`shared.errors.ConfigError`.
"""

from shared.configuration.fields import (
    PortMapping,
    Probe,
    RegistryAuth,
    RetryPolicy,
    Scaling,
    ServiceModel,
    VolumeMount,
    parse_duration,
    parse_offable_duration,
)
from shared.configuration.fleets import FleetConfiguration
from shared.configuration.kube_fields import NodePool, PodSecurityContext, PodSettings, Toleration
from shared.configuration.parse import (
    AnyConfiguration,
    configuration_from_mapping,
    parse_configuration,
    parse_fleet_configuration,
    parse_run_configuration,
    parse_volume_configuration,
)
from shared.configuration.ranges import Memory, Range, parse_count_range, parse_memory_range
from shared.configuration.resources import (
    CPUSpec,
    DiskSpec,
    GPUSpec,
    ResourcesSpec,
    parse_cpu_spec,
    parse_gpu_spec,
)
from shared.configuration.runs import (
    AnyRunConfiguration,
    DevEnvironmentConfiguration,
    ServiceConfiguration,
    TaskConfiguration,
)
from shared.configuration.server import (
    Kubeconfig,
    KubeContext,
    KubernetesBackend,
    ProjectConfig,
    ProxyJump,
    ServerConfig,
    load_server_config,
    server_config_from_text,
)
from shared.configuration.volumes import VolumeConfiguration

__all__ = [
    "AnyConfiguration",
    "AnyRunConfiguration",
    "CPUSpec",
    "DevEnvironmentConfiguration",
    "DiskSpec",
    "FleetConfiguration",
    "GPUSpec",
    "KubeContext",
    "Kubeconfig",
    "KubernetesBackend",
    "Memory",
    "NodePool",
    "PodSecurityContext",
    "PodSettings",
    "PortMapping",
    "Probe",
    "ProjectConfig",
    "ProxyJump",
    "Range",
    "RegistryAuth",
    "ResourcesSpec",
    "RetryPolicy",
    "Scaling",
    "ServerConfig",
    "ServiceConfiguration",
    "ServiceModel",
    "TaskConfiguration",
    "Toleration",
    "VolumeConfiguration",
    "VolumeMount",
    "configuration_from_mapping",
    "load_server_config",
    "parse_configuration",
    "parse_count_range",
    "parse_cpu_spec",
    "parse_duration",
    "parse_fleet_configuration",
    "parse_gpu_spec",
    "parse_memory_range",
    "parse_offable_duration",
    "parse_run_configuration",
    "parse_volume_configuration",
    "server_config_from_text",
]
