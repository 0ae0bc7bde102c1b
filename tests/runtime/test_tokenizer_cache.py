"""The saved HF tokenizer (edgeclip.tokenizer.hf_cache): a tokenizer loaded from the saved entry gives the golden
ids and the ids of one built from tokenizer.json, and a damaged or refused entry is built again, never used."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("tokenizers", reason="the saved tokenizer is the HF backend's; it needs `tokenizers`")

from edgeclip import file_cache  # noqa: E402
from edgeclip.bundle.verify_cache import cached_sha256  # noqa: E402
from edgeclip.tokenizer import load_tokenizer, tokenizer_json_path  # noqa: E402
from edgeclip.tokenizer.errors import TokenizerError  # noqa: E402
from edgeclip.tokenizer.hf_cache import KIND, SAVED  # noqa: E402
from tests.reference_fixtures import REFERENCE_DIR  # noqa: E402

from damage import flip_a_byte_keeping_size_and_mtime  # noqa: E402

GOLDEN = json.loads((REFERENCE_DIR / "tokenizer_golden.json").read_text(encoding="utf-8"))["cases"]
TEXTS = [case["text"] for case in GOLDEN]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECLIP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def entries() -> list:
    folder = file_cache.kind_dir(KIND)
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def test_saved_tokenizer_gives_the_golden_ids(home):
    built = load_tokenizer(backend="hf")
    [entry] = entries()
    saved_at = (entry / SAVED).stat().st_mtime_ns
    loaded = load_tokenizer(backend="hf")
    assert (entry / SAVED).stat().st_mtime_ns == saved_at, "the entry was rebuilt instead of loaded"
    ids = loaded(TEXTS)
    assert (ids == built(TEXTS)).all()
    assert [row.tolist() for row in ids] == [case["ids"] for case in GOLDEN]
    assert (loaded.sot_id, loaded.eot_id) == (built.sot_id, built.eot_id) and loaded.path == tokenizer_json_path()


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "record missing", "refused by tokenizers"])
def test_a_damaged_entry_is_built_again(home, damage):
    load_tokenizer(backend="hf")
    [entry] = entries()
    saved, record = entry / SAVED, entry / file_cache.RECORD
    if damage == "flip a byte":
        flip_a_byte_keeping_size_and_mtime(saved)
    elif damage == "truncate":
        saved.write_bytes(saved.read_bytes()[:1000])
    elif damage == "record missing":
        record.unlink()
    else:  # digest recorded for a file tokenizers cannot read (as if written by another version)
        saved.write_text("{}")
        meta = json.loads(record.read_text())
        record.write_text(json.dumps({**meta, "files": {SAVED: cached_sha256(saved)}}))
    ids = load_tokenizer(backend="hf")(TEXTS)
    assert [row.tolist() for row in ids] == [case["ids"] for case in GOLDEN]
    [entry] = entries()
    meta = json.loads((entry / file_cache.RECORD).read_text())
    assert meta["files"][SAVED] == cached_sha256(entry / SAVED)  # sound again


def test_a_changed_tokenizer_file_gets_its_own_entry_and_a_bad_one_still_fails(home, tmp_path):
    load_tokenizer(backend="hf")
    doc = json.loads(tokenizer_json_path().read_text(encoding="utf-8"))
    doc["model"]["vocab"]["zzzz</w>"] = len(doc["model"]["vocab"])
    other = tmp_path / "tokenizer.json"
    other.write_text(json.dumps(doc), encoding="utf-8")
    load_tokenizer(other, backend="hf")
    assert len(entries()) == 2
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(tmp_path / "missing.json", backend="hf")
    other.write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}), encoding="utf-8")
    with pytest.raises(TokenizerError, match="not a CLIP tokenizer"):
        load_tokenizer(other, backend="hf")
