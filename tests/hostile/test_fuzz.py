"""Property-based fuzzing of everything a user hands to the device runtime: images, texts and bundle manifests.

The only acceptable outcomes are a correct result (finite, unit-norm rows of the tower's width) or an
EdgeclipError whose message names the input (the file, the text's position, the bundle folder). Any other
exception type fails the test, and hypothesis shrinks it to a minimal example.

CI runs a fixed, derandomized few hundred examples (FUZZ_CI_EXAMPLES per kind, well under a minute). The long run,
10,000 random examples of each kind:

    EDGECLIP_FUZZ_EXAMPLES=10000 python -m pytest tests/hostile/test_fuzz.py -q -p no:cacheprovider
"""
from __future__ import annotations

import copy
import functools
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgeclip import Encoder
from edgeclip.errors import EdgeclipError, ImageError, TextError
from edgeclip.zeroshot import rank_labels

from tests.hostile.conftest import copy_bundle

FUZZ_CI_EXAMPLES = {"image bytes": 60, "image headers": 60, "image modes": 60, "texts": 60, "text lists": 30,
                    "manifests": 80}
LONG_RUN = int(os.environ.get("EDGECLIP_FUZZ_EXAMPLES", "0"))


def fuzz(kind: str):
    """Hypothesis settings for one kind: the CI budget (derandomized) or EDGECLIP_FUZZ_EXAMPLES random examples."""
    return settings(max_examples=LONG_RUN or FUZZ_CI_EXAMPLES[kind], derandomize=not LONG_RUN, deadline=None,
                    database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def enc(tiny):
    return Encoder(tiny, providers="cpu", threads=1)


def _good_rows(emb: np.ndarray, n: int, dim: int) -> None:
    assert emb.shape == (n, dim) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)


# ---------------------------------------------------------------- images
def _png(width: int, height: int, color_type: int = 2, bit_depth: int = 8, data: bytes = b"") -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


def _gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF0, 0, 0) + b"\0" * 6 + \
        b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00;"


def _bmp(width: int, height: int) -> bytes:
    body = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 12, 0, 0, 54) + body + b"\0" * 12


def _jpeg(width: int, height: int) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + sof + b"\xff\xda\x00\x0c\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00" + b"\0" * 16 + b"\xff\xd9"


def _tiff(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0" * 4
    return b"II*\0" + struct.pack("<I", 24) + b"\0" * 16 + ifd


HEADERS = {"png": _png, "gif": _gif, "bmp": _bmp, "jpeg": _jpeg, "tiff": _tiff}
ABSURD = st.one_of(st.integers(1, 70000), st.sampled_from([1, 2, 40000, 65535, 200000, 2**24, 2**31 - 1]))


def _check_image(enc, item, name: str) -> None:
    try:
        emb = enc.encode_image(item)
    except ImageError as exc:
        assert name in str(exc), f"the message does not name the input {name!r}: {exc}"
        return
    _good_rows(emb, 1, enc.embed_dim)


@fuzz("image bytes")
@given(data=st.binary(max_size=2048), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a",
                                                                b"BM", b"II*\0", b"RIFF\0\0\0\0WEBP", b"%!PS-Adobe"]))
def test_random_bytes(enc, tmp_path_factory, data, prefix):
    blob = prefix + data
    path = tmp_path_factory.getbasetemp() / "fuzz-bytes.img"
    path.write_bytes(blob)
    _check_image(enc, str(path), str(path))
    _check_image(enc, blob, f"{len(blob)} bytes")


@fuzz("image headers")
@given(kind=st.sampled_from(sorted(HEADERS)), width=ABSURD, height=ABSURD)
def test_valid_headers_with_absurd_dimensions(enc, tmp_path_factory, kind, width, height):
    path = tmp_path_factory.getbasetemp() / f"fuzz-header.{kind}"
    path.write_bytes(HEADERS[kind](min(width, 65535) if kind in ("gif", "jpeg") else width,
                                   min(height, 65535) if kind in ("gif", "jpeg") else height))
    _check_image(enc, str(path), str(path))


@fuzz("image headers")
@given(long=st.integers(1000, 200000), short=st.integers(1, 3), tall=st.booleans())
def test_tiny_files_with_extreme_aspect_ratios(enc, tmp_path_factory, long, short, tall):
    width, height = (short, long) if tall else (long, short)
    rows = b"".join(b"\0" + bytes(width) for _ in range(height))  # filter byte + one gray byte per pixel
    path = tmp_path_factory.getbasetemp() / "fuzz-aspect.png"
    path.write_bytes(_png(width, height, color_type=0, data=rows))
    _check_image(enc, str(path), str(path))


MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "RGBX", "RGBa", "La",
         "I;16", "I;16B", "I;16L"]


@fuzz("image modes")
@given(mode=st.sampled_from(MODES), width=st.integers(1, 48), height=st.integers(1, 48),
       fmt=st.sampled_from([None, "PNG", "TIFF", "BMP", "GIF", "WEBP", "JPEG", "PPM"]), seed=st.integers(0, 2**32 - 1))
def test_every_pillow_mode(enc, tmp_path_factory, mode, width, height, fmt, seed):
    probe = Image.new(mode, (1, 1))
    raw = np.random.default_rng(seed).integers(0, 256, width * height * len(probe.tobytes()), dtype=np.uint8)
    if mode == "F":  # random bytes would be NaN/inf floats; a real float image holds finite values
        raw = np.random.default_rng(seed).standard_normal(width * height).astype(np.float32).view(np.uint8)
    im = Image.frombytes(mode, (width, height), raw.tobytes())
    if fmt is None:
        _check_image(enc, im, "")
        return
    buf = io.BytesIO()
    try:
        im.save(buf, fmt)
    except (OSError, ValueError, KeyError):
        assume(False)  # Pillow cannot write this mode in this format: not an input anyone can hand us
    path = tmp_path_factory.getbasetemp() / f"fuzz-mode.{fmt.lower()}"
    path.write_bytes(buf.getvalue())
    _check_image(enc, str(path), str(path))


# ---------------------------------------------------------------- texts
ANY_CHAR = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr), st.integers(0, 0x1F).map(chr),
                     st.integers(0x7F, 0x9F).map(chr))


@fuzz("texts")
@given(text=st.text(ANY_CHAR, max_size=200), long=st.integers(0, 7), repeat=st.integers(500, 100_000))
def test_any_string(enc, text, long, repeat):
    """Any str (lone surrogates, control characters, one in eight up to 120k characters) embeds; nothing else."""
    text = (text * repeat)[:120_000] if long == 0 else text
    _good_rows(enc.encode_text(text), 1, enc.embed_dim)


@fuzz("text lists")
@given(items=st.lists(st.one_of(st.text(ANY_CHAR, max_size=40), st.integers(), st.none(), st.binary(max_size=8),
                                st.floats(allow_nan=True)), max_size=6))
def test_lists_with_non_strings(enc, items):
    try:
        emb = enc.encode_text(items)
    except TextError as exc:
        bad = next(i for i, t in enumerate(items) if not isinstance(t, str))
        assert str(bad) in str(exc) and type(items[bad]).__name__ in str(exc)
        return
    assert all(isinstance(t, str) for t in items)
    if items:
        _good_rows(emb, len(items), enc.embed_dim)
    else:
        assert emb.shape == (0, enc.embed_dim)


# ---------------------------------------------------------------- manifests
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=12), st.sampled_from(["../x", "/etc/passwd", "image.onnx", "dynamic", "fp16", "tanh",
                                                     "tokenizer.json", "", "manifest.json", "0" * 64])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def _paths(node, prefix=()):
    """Every (path of keys/indices) in a JSON tree, containers and leaves alike."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


def _mutate(manifest: dict, path: tuple, how: str, value) -> None:
    *parents, last = path
    node = manifest
    for key in parents:
        node = node[key]
    if how == "delete":
        del node[last]
    elif how == "add" and isinstance(node[last], dict):
        node[last]["fuzz"] = value
    else:
        node[last] = value


@pytest.fixture(scope="module")
def fuzz_bundle(tiny, tmp_path_factory):
    """A copy of the tiny bundle whose manifest each example rewrites (the tower and tokenizer files stay).

    Parsing the same tokenizer.json with the same settings again gives the same tokenizer, so those loads are
    cached for the module (1.5 s each); any other file or setting, and every failure, goes to the real loader.
    """
    import edgeclip.tokenizer

    root = copy_bundle(tiny, tmp_path_factory.mktemp("fuzz-manifest") / "bundle")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(edgeclip.tokenizer, "load_tokenizer", functools.lru_cache(maxsize=4)(edgeclip.tokenizer.load_tokenizer))
        yield root, json.loads((root / "manifest.json").read_text())


def _use(root: Path, original: dict) -> None:
    """Load, open and run the bundle as a user would; raises EdgeclipError or checks every result."""
    enc = Encoder(root, providers="cpu", threads=1)
    dim = enc.embed_dim
    assert dim == original["embed_dim"]  # the graphs' width: a manifest saying otherwise is refused
    towers = enc.bundle.towers
    if "image" in towers:
        emb = enc.encode_image(np.full((40, 50, 3), 128, np.uint8))
        _good_rows(emb, 1, dim)
        bank = np.eye(3, dim, dtype=np.float32)
        ranked = rank_labels(emb, bank, ["a", "b", "c"], enc.logit_scale, 2)
        assert len(ranked[0]) == 2 and all(np.isfinite(p) for _, p in ranked[0])
    if "text" in towers:
        _good_rows(enc.encode_text(["a photo of a dog", ""]), 2, dim)


@fuzz("manifests")
@given(data=st.data())
def test_mutated_manifests(fuzz_bundle, data):
    root, original = fuzz_bundle
    manifest = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = [p for p in _paths(manifest) if p]
        path = data.draw(st.sampled_from(paths), label="field")
        how = data.draw(st.sampled_from(["set", "set", "delete", "add"]), label="how")
        _mutate(manifest, path, how, data.draw(JSON_VALUES, label="value"))
    (root / "manifest.json").write_text(json.dumps(manifest))
    try:
        _use(root, original)
    except EdgeclipError as exc:
        assert str(root) in str(exc), f"the message does not name the bundle {root}: {exc}"
