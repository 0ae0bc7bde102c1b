"""The demo model: committed checkpoint accuracy, reparameterization, checkpoint errors, a tiny training run."""

import pytest

torch = pytest.importorskip("torch", reason="the build side needs torch, timm and open_clip (pip install -e '.[export]')")

from export.models.demo import DemoCheckpointError, build_demo_model, load_demo_state_dict, tokenize, torch_encoders
from export.models.demo_config import DEMO_EMBED_DIM, DEMO_IMAGE_SIZE, DEMO_WEIGHTS
from export.train_demo import main as train_main
from export.train_demo import reinforced_loss, save_checkpoint, train
from quantize.synthetic import evaluate_zero_shot, load_zero_shot


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained():
    return build_demo_model()


def test_committed_checkpoint_reaches_90_percent_zero_shot(trained, small_dataset):
    assert DEMO_WEIGHTS.is_file() and DEMO_WEIGHTS.stat().st_size <= 10_000_000
    acc = evaluate_zero_shot(*torch_encoders(trained), load_zero_shot(small_dataset))
    assert acc >= 0.90, f"zero-shot top-1 {acc:.3f} on held-out colour-shape combinations"


def test_reparameterize_keeps_outputs(trained):
    x = torch.rand(3, 3, DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE)
    ids = tokenize(["a photo of a red ring.", "a small blue star on the left", "x"])
    with torch.no_grad():
        before = trained.encode_image(x), trained.encode_text(ids)
        fused = build_demo_model(reparameterize=True).reparameterize()  # twice is harmless
        after = fused.encode_image(x), fused.encode_text(ids)
    assert before[0].shape == (3, DEMO_EMBED_DIM)
    for b, a in zip(before, after):
        assert torch.nn.functional.cosine_similarity(a, b).min() > 0.9999
    assert all(getattr(m, "reparam_conv", True) is not None for m in fused.visual.modules())  # MobileOne folded


def test_bad_checkpoints_raise_clear_errors(tmp_path, trained):
    with pytest.raises(DemoCheckpointError, match="does not exist"):
        load_demo_state_dict(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(DemoCheckpointError, match="not a readable"):
        load_demo_state_dict(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"layout": "open_clip"})
    with pytest.raises(DemoCheckpointError, match="layout"):
        load_demo_state_dict(tmp_path / "other.safetensors")
    path = save_checkpoint(trained, tmp_path / "copy.safetensors", {})
    assert set(load_demo_state_dict(path)) == set(trained.state_dict())


def test_reinforced_loss_is_minimal_when_student_matches_teacher():
    torch.manual_seed(0)
    t_img, t_txt = torch.randn(8, 16), torch.randn(8, 16)
    scale = torch.tensor(100.0).log()
    _, same = reinforced_loss(t_img, t_txt, t_img, t_txt, scale)
    _, other = reinforced_loss(torch.randn(8, 16), torch.randn(8, 16), t_img, t_txt, scale)
    assert same["distill"] < 1e-6 < other["distill"]


def test_tiny_training_run_decreases_the_loss(small_dataset, tmp_path):
    out = tmp_path / "tiny.safetensors"
    summary = train(out, seed=0, epochs=40, batch_size=16, lr=3e-3, data_root=small_dataset, limit=32,
                    max_steps=40, progress=False)
    assert summary["last_loss"] < summary["first_loss"]
    assert summary["steps"] == 40
    assert out.is_file() and 0.0 <= summary["zero_shot_top1"] <= 1.0


def test_cli_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exc:
        train_main(["--epochs", "many"])
    assert exc.value.code == 2
