"""The JSON Schemas shipped in diffcore/schemas and the one loader: every document diffcore reads is
checked the same way with ``jsonschema`` or, where it is missing, the subset validator."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from diffcore import DiffcoreError
from diffcore.schemas import check_depth, validate
from diffcore.schemas._subset import SubsetValidator

SHA = "0" * 64
GOLDEN = {"schema": "diffcore.golden/1", "seal": SHA, "files": {"inputs.npz": {"sha256": SHA, "size": 3},
                                                                 "outputs.npz": {"sha256": SHA, "size": 3}},
          "inputs": [{"name": "x", "array": "a00000", "dtype": "float32", "stored": "<f4", "shape": [2],
                      "sha256": SHA}], "outputs": [], "tolerance": {"atol": None, "rtol": None}, "texts": []}
BAD_GOLDENS = [
    {**GOLDEN, "files": {**GOLDEN["files"], "inputs.npz": {"sha256": SHA, "size": "3"}}},
    {**GOLDEN, "files": {**GOLDEN["files"], "../x": {"sha256": SHA, "size": 1}}},
    {**GOLDEN, "inputs": [{**GOLDEN["inputs"][0], "shape": [-1]}]},
    {**GOLDEN, "inputs": [{**GOLDEN["inputs"][0], "array": "../../etc"}]},
    {**GOLDEN, "tolerance": {"atol": "1", "rtol": None}},
    {k: v for k, v in GOLDEN.items() if k != "seal"},
    [GOLDEN],
]


def _schemas() -> list:
    return sorted(p.name[:-5] for p in resources.files("diffcore.schemas").iterdir() if p.name.endswith(".json"))


def test_every_schema_is_shipped_and_is_valid_json():
    assert _schemas() == ["artifacts", "env-diff", "environment", "golden", "golden-check", "report", "report-diff",
                          "trace", "validate"]
    for name in _schemas():
        json.loads(resources.files("diffcore.schemas").joinpath(f"{name}.json").read_text())


def test_a_good_golden_passes_and_each_bad_one_is_named():
    validate(GOLDEN, "golden", "golden manifest g/golden.json")
    for bad in BAD_GOLDENS:
        with pytest.raises(DiffcoreError, match=r"golden manifest g/golden.json does not follow its schema"):
            validate(bad, "golden", "golden manifest g/golden.json")


def test_the_subset_validator_agrees_with_jsonschema():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed in this environment")
    schema = json.loads(resources.files("diffcore.schemas").joinpath("golden.json").read_text())
    for doc in [GOLDEN] + BAD_GOLDENS:
        real = bool(list(jsonschema.Draft202012Validator(schema).iter_errors(doc)))
        assert bool(list(SubsetValidator(schema).iter_errors(doc))) == real


def test_nesting_beyond_64_levels_is_refused_without_recursion():
    deep: list = []
    for _ in range(100000):
        deep = [deep]
    with pytest.raises(DiffcoreError, match="nested more than 64 levels"):
        check_depth(deep, "doc")
    check_depth(json.loads("[" * 60 + "]" * 60), "doc")
