"""A manifest with wrong types, ranges or values is refused at load with a BundleError naming the field."""
from __future__ import annotations

import pytest

from edgeclip import Encoder
from edgeclip.bundle import load_bundle
from edgeclip.cli import main
from edgeclip.errors import BundleError

from tests.hostile.conftest import copy_bundle


def _set(path: str, value):
    """An edit that sets the dotted manifest field `path` to `value`."""
    def edit(manifest: dict) -> None:
        *parents, last = path.split(".")
        node = manifest
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return edit


# (field, bad value): each one crashed, loaded silently, or failed later with a raw exception before.
MUTATIONS = [
    ("tokenizer", "tokenizer.json"),
    ("extra_files", ["report.json"]),
    ("towers.image.alternates", ["image.ort"]),
    ("towers.image.inputs", "image"),
    ("towers.text.outputs", {"name": "embedding"}),
    ("logit_scale", "abc"),
    ("logit_scale", -3.0),
    ("embed_dim", "16"),
    ("embed_dim", 0),
    ("embed_dim", True),
    ("model_id", ["x"]),
    ("preprocess.mean", "abc"),
    ("preprocess.mean", [0.5, 0.5]),
    ("preprocess.std", [0.0, 1.0, 1.0]),
    ("preprocess.crop_size", -32),
    ("preprocess.interpolation", "magic"),
    ("tokenizer.context_length", "77"),
    ("tokenizer.eot_id", -1),
    ("towers.image.batch", "sometimes"),
    ("towers.image.precision", "int4"),
    ("towers.image.file", 7),
    ("towers.image.inputs.0.shape", "batch,3,32,32"),
    ("towers.image.inputs.0", "image"),
    ("quantization", "int8"),
]


@pytest.mark.parametrize("field, value", MUTATIONS, ids=[f"{f}={v!r}" for f, v in MUTATIONS])
def test_bad_field_is_refused_naming_it(tiny, tmp_path, capsys, field, value):
    bad = copy_bundle(tiny, tmp_path / "bad", _set(field, value))
    with pytest.raises(BundleError) as err:
        load_bundle(bad)
    assert field in str(err.value) and str(bad) in str(err.value)
    with pytest.raises(BundleError, match=field.replace(".", r"\.")):
        Encoder(bad, providers="cpu", threads=1)
    assert main(["info", str(bad)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeclip: error:") and field in lines[0]


def test_the_untouched_bundle_loads(tiny, tmp_path):
    good = copy_bundle(tiny, tmp_path / "good", lambda m: None)
    assert load_bundle(good).embed_dim == 16


@pytest.mark.parametrize("content, message", [
    ("[" * 100_000 + "]" * 100_000, "cannot parse"),  # nested past Python's recursion limit
    ('{"format_version": 1, "padding": "' + "x" * (17 << 20) + '"}', "bytes"),  # a manifest is a few KB
])
def test_hostile_manifest_files(tiny, tmp_path, content, message):
    bad = copy_bundle(tiny, tmp_path / "bad")
    (bad / "manifest.json").write_text(content)
    with pytest.raises(BundleError, match=message) as err:
        load_bundle(bad)
    assert "manifest.json" in str(err.value) and len(str(err.value)) < 300


def test_an_empty_preprocess_section_of_an_image_tower_is_refused(tiny, tmp_path):
    """Found by the fuzz harness: {} passed the schema, then preprocessing failed without naming the bundle."""
    bad = copy_bundle(tiny, tmp_path / "bad", _set("preprocess", {}))
    with pytest.raises(BundleError, match="preprocess.size is missing") as err:
        load_bundle(bad)
    assert str(bad) in str(err.value)
