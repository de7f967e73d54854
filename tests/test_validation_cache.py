"""A config is validated again exactly when it, the package or a file it names changed."""

import os

import pytest
import yaml

from conftest import TINY
from dmlm.errors import DmlmError
from dmlm.validation_cache import fingerprint, validate_once


def test_validates_once_per_inputs_and_never_stamps_a_bad_config(tmp_path):
    config = yaml.safe_load(TINY.read_text())
    stamps = tmp_path / "stamps"
    assert validate_once(config, stamps) is True
    assert validate_once(config, stamps) is False  # same inputs: the stamp stands
    config["training"]["max_steps"] = 31
    assert validate_once(config, stamps) is True  # another config: checked again
    config["studies"]["tiny"]["backbone"] = ["missing"]
    for _ in range(2):  # a failing config raises at every start
        with pytest.raises(DmlmError, match="'missing' is not defined under backbones"):
            validate_once(config, stamps)
    assert len(list(stamps.iterdir())) == 2


def test_a_file_the_config_names_is_part_of_the_fingerprint(tmp_path):
    config = yaml.safe_load(TINY.read_text())
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"a")
    config["noise"]["bank"] = {"name": "musan", "path": str(tmp_path)}
    before = fingerprint(config)
    assert fingerprint(config) == before
    os.utime(weights, ns=(0, 10**9))  # a file inside the named folder changed
    assert fingerprint(config) != before
