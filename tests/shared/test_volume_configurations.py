"""``type: volume`` and the ``volumes`` of runs, as the parser reads them."""

from __future__ import annotations

import pytest

from shared.configuration import (
    VolumeConfiguration,
    parse_configuration,
    parse_run_configuration,
    parse_volume_configuration,
)
from shared.configuration.parse import configuration_from_stored
from shared.errors import ConfigError, NotSupportedError

VOLUME = "type: volume\nname: scratch\nbackend: kubernetes\n"


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_configuration(text)
    return caught.value


def test_a_sized_volume_defaults_to_read_write_once_on_the_default_storage_class() -> None:
    conf = parse_configuration("type: volume\nname: data\nbackend: kubernetes\nsize: 100GB")
    assert isinstance(conf, VolumeConfiguration)
    assert conf.size is not None and float(conf.size) == 100.0
    assert conf.access_modes == ["ReadWriteOnce"]
    assert conf.storage_class_name is None
    assert conf.creates_claim


def test_a_volume_registers_an_existing_claim_by_name() -> None:
    conf = parse_volume_configuration(
        "type: volume\nname: shared\nbackend: kubernetes\nclaim_name: team-datasets"
    )
    assert conf.claim_name == "team-datasets"
    assert not conf.creates_claim


def test_a_volume_needs_a_size_or_a_claim_name() -> None:
    error = _error("type: volume\nname: data\nbackend: kubernetes")
    assert error.field == "size"
    assert "claim_name" in error.message


def test_a_volume_with_both_a_claim_and_a_size_is_refused() -> None:
    error = _error("type: volume\nname: scratch\nbackend: kubernetes\nclaim_name: c\nsize: 10GB")
    assert error.field == "size"


def test_creation_settings_next_to_a_claim_name_are_refused_not_ignored() -> None:
    error = _error(VOLUME + "claim_name: c\naccess_modes: [ReadWriteMany]")
    assert (error.field, error.message) == (
        "access_modes",
        "the existing claim's own setting applies",
    )


def test_an_unknown_access_mode_names_the_accepted_ones() -> None:
    error = _error(VOLUME + "size: 1GB\naccess_modes: [RWX]")
    assert error.field == "access_modes.0"
    assert "ReadWriteMany" in error.message


@pytest.mark.parametrize("field", ["volume_id", "auto_cleanup_duration", "availability_zone"])
def test_dstack_volume_fields_without_a_kubernetes_meaning_are_not_supported(field: str) -> None:
    error = _error(f"type: volume\nname: scratch\nbackend: kubernetes\nsize: 1GB\n{field}: x")
    assert isinstance(error, NotSupportedError)
    assert error.field == field


def test_a_volume_of_another_backend_is_refused() -> None:
    assert _error("type: volume\nname: scratch\nbackend: aws\nsize: 1GB").field == "backend"


def test_the_run_parser_refuses_a_volume() -> None:
    with pytest.raises(ConfigError, match="got 'volume'; expected one of task"):
        parse_run_configuration("type: volume\nname: scratch\nbackend: kubernetes\nsize: 1GB")


def test_a_run_mounts_volumes_and_node_directories_with_read_only_and_optional() -> None:
    conf = parse_run_configuration(
        "type: task\nimage: x\nvolumes:\n"
        "  - data:/data\n"
        "  - {name: ckpt, path: /ckpt, read_only: true}\n"
        "  - /var/cache/hf:/root/.cache/huggingface\n"
        "  - {instance_path: /scratch, path: /scratch, optional: true}\n"
    )
    shown = [(m.name, m.instance_path, m.path, m.read_only, m.optional) for m in conf.volumes]
    assert shown == [
        ("data", None, "/data", False, False),
        ("ckpt", None, "/ckpt", True, False),
        (None, "/var/cache/hf", "/root/.cache/huggingface", False, False),
        (None, "/scratch", "/scratch", False, True),
    ]


def test_only_a_node_directory_can_be_optional() -> None:
    error = _error("type: task\nimage: x\nvolumes: [{name: d, path: /d, optional: true}]")
    assert error.field == "volumes.0.optional"


def test_a_mount_names_a_volume_or_a_node_directory_not_both() -> None:
    error = _error("type: task\nimage: x\nvolumes: [{name: d, instance_path: /d, path: /d}]")
    assert error.field == "volumes.0.name"


def test_a_list_of_volume_names_is_not_supported() -> None:
    error = _error("type: task\nimage: x\nvolumes: [{name: [a, b], path: /d}]")
    assert isinstance(error, NotSupportedError)


def test_tags_are_accepted_with_dstacks_rules() -> None:
    conf = parse_run_configuration("type: task\nimage: x\ntags: {team: ml, owner: a@b.com}")
    assert conf.tags == {"team": "ml", "owner": "a@b.com"}


def test_a_tag_key_dstack_would_refuse_is_refused() -> None:
    error = _error("type: task\nimage: x\ntags: {'team.name': ml}")
    assert error.field == "tags"
    assert "invalid tag key 'team.name'" in error.message


@pytest.mark.parametrize(
    "text",
    [
        VOLUME + "size: 100GB\nstorage_class_name: fast\naccess_modes: [ReadWriteMany]",
        VOLUME + "claim_name: team-data\nread_only: true",
    ],
)
def test_a_stored_volume_reads_back_as_written(text: str) -> None:
    conf = parse_volume_configuration(text)
    assert configuration_from_stored(conf.model_dump(mode="json")) == conf
