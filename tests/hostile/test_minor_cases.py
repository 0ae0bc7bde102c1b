"""The minor hostile cases: empty or folder --out, top_k values, the refused-pickle message, small calibration sets."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgeclip import Encoder
from edgeclip.cli import main
from edgeclip.errors import InputError


@pytest.fixture(scope="module")
def enc(tiny):
    return Encoder(tiny, providers="cpu", threads=1)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("minor") / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
    return path


def test_embed_out_empty_is_an_error(tiny, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["embed", str(tiny), "--text", "a dog", "--out", ""])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--out" in captured.err


def test_embed_out_folder_names_the_folder_not_a_temp_file(tiny, tmp_path, capsys):
    folder = tmp_path / "already-a-folder"
    folder.mkdir()
    assert main(["embed", str(tiny), "--text", "a dog", "--out", str(folder)]) == 1
    err = capsys.readouterr().err
    assert str(folder) in err and "directory" in err
    assert ".tmp" not in err and list(folder.iterdir()) == [] and list(tmp_path.iterdir()) == [folder]


@pytest.mark.parametrize("top_k", [0, -1, "x", 1.5, True])
def test_api_top_k_must_be_a_positive_integer(enc, photo, top_k):
    with pytest.raises(InputError, match="top_k") as err:
        enc.classify(photo, ["cat", "dog"], top_k=top_k)
    assert repr(top_k) in str(err.value)


def test_api_top_k_larger_than_the_labels_shows_them_all(enc, photo):
    assert len(enc.classify(photo, ["cat", "dog"], top_k=10)) == 2
    assert len(enc.classify(photo, ["cat", "dog", "car"], top_k=1)) == 1


@pytest.mark.parametrize("value", ["0", "-2", "x"])
def test_cli_top_k_must_be_a_positive_integer(tiny, photo, capsys, value):
    with pytest.raises(SystemExit) as exc:
        main(["classify", str(tiny), str(photo), "--labels", "cat,dog", "--top-k", value])
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--top-k" in captured.err and value in captured.err


class _Payload:
    """A pickle that would run a shell command when loaded without weights_only."""

    def __reduce__(self):
        import os

        return os.system, ("echo pwned",)


def test_malicious_pickle_is_refused_in_our_words(tmp_path):
    torch = pytest.importorskip("torch", reason="checkpoints are read with torch (the export extra)")
    from export.checkpoint import CheckpointError, read_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Payload()}, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert "evil.pt" in message and "code" in message and "refused" in message and "os.system" in message.replace("posix", "os")
    assert "WeightsUnpickler" not in message and "weights_only" not in message.split("refused")[0]


def test_e2e_missing_image_is_a_usage_error_before_the_bundle_is_touched(tiny, tmp_path, capsys):
    from export.e2e import main as e2e_main
    from tests.hostile.conftest import copy_bundle

    bundle = copy_bundle(tiny, tmp_path / "b")
    before = {p.name: p.stat().st_mtime_ns for p in bundle.iterdir()}
    with pytest.raises(SystemExit) as exc:
        e2e_main([str(bundle), "--measure", "--images", str(tmp_path / "missing.png")])
    assert exc.value.code == 2
    assert "missing.png" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in bundle.iterdir()} == before
