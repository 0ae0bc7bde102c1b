"""Train the ``demo`` model with MobileCLIP's multi-modal reinforced objective on the synthetic dataset.

Loss per batch (MobileCLIP, CVPR 2024, Sec. 3): ``(1 - lam) * L_CLIP + lam * L_distill`` where
L_distill is the mean of the image->text and text->image KL divergences between the teacher's and
the student's in-batch similarity distributions. Teacher embeddings, crop/RandAugment parameters and
synthetic captions are all read from the shards; nothing is re-generated on the fly.

    python -m export.train_demo --out export/weights/demo.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from edgeclip.files import atomic_path
from edgeclip.shards import iter_samples
from export.models.demo import DemoCLIP, build_demo_model, checkpoint_metadata, tokenize, torch_encoders
from export.models.demo_config import DEMO_IMAGE_SIZE, DEMO_PREPROCESS, DEMO_WEIGHTS
from quantize.augment import apply_crop, apply_rand_augment, parse_entry
from quantize.synthetic import ensure_dataset, evaluate_zero_shot, load_zero_shot, split_shards
from runtime.providers import thread_count

# MobileCLIP's reinforced-training weights: lam = 0.75 (Apple's DataCompDR-1B recipe,
# --distill-loss-weights 0.25 0.75) and teacher logit scale 100 (temperature 0.01).
LAMBDA = 0.75
TEACHER_LOGIT_SCALE = 100.0


@dataclass
class TrainSet:
    """Decoded training split: images, stored augmentations, caption token ids and teacher embeddings."""

    images: list[Image.Image]
    param_aug: list[list]
    token_ids: torch.Tensor  # [N, 1 + n_syn, 77]
    image_emb: torch.Tensor  # [N, n_aug, Dt]
    text_emb: torch.Tensor  # [N, 1 + n_syn, Dt]


def load_train_set(root: Path, limit: int | None = None) -> TrainSet:
    """Read the train split's shards into memory (small: a few thousand 96-px images)."""
    images, paug, texts, img_emb, txt_emb = [], [], [], [], []
    for sample in iter_samples(split_shards(root, "train"), strict=True):
        if limit is not None and len(images) >= limit:
            break
        images.append(sample.image)
        paug.append(sample.param_aug)
        texts.extend([sample.caption, *sample.syn_captions])
        img_emb.append(sample.image_emb)
        txt_emb.append(sample.text_emb)
    n_txt = txt_emb[0].shape[0]
    ids = tokenize(texts).reshape(len(images), n_txt, -1)
    return TrainSet(images, paug, ids, torch.from_numpy(np.stack(img_emb)), torch.from_numpy(np.stack(txt_emb)))


def augmented_batch(data: TrainSet, idx: np.ndarray, aug: np.ndarray) -> torch.Tensor:
    """Re-apply each sample's stored crop + RandAugment and scale like DEMO_PREPROCESS -> [B, 3, S, S]."""
    mean = np.asarray(DEMO_PREPROCESS["mean"], dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(DEMO_PREPROCESS["std"], dtype=np.float32).reshape(3, 1, 1)
    views = []
    for i, a in zip(idx, aug):
        box, ops = parse_entry(data.param_aug[i][a])
        view = apply_crop(data.images[i], box, DEMO_IMAGE_SIZE)
        if ops:
            view = apply_rand_augment(view, ops)
        arr = np.asarray(view, dtype=np.float32).transpose(2, 0, 1) / 255.0
        views.append((arr - mean) / std)
    # contiguous NCHW: torch's CPU conv backward crashed here on the strided array np.stack gave
    return torch.from_numpy(np.ascontiguousarray(np.stack(views)))


def _kl_rows(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(softmax(teacher) || softmax(student))."""
    return F.kl_div(F.log_softmax(student_logits, dim=1), F.log_softmax(teacher_logits, dim=1),
                    reduction="batchmean", log_target=True)


def reinforced_loss(img: torch.Tensor, txt: torch.Tensor, t_img: torch.Tensor, t_txt: torch.Tensor,
                    logit_scale: torch.Tensor, lam: float = LAMBDA) -> tuple[torch.Tensor, dict[str, float]]:
    """(1 - lam) * symmetric CLIP loss + lam * symmetric KL toward the teacher's similarity distributions."""
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    t_img, t_txt = F.normalize(t_img, dim=-1), F.normalize(t_txt, dim=-1)
    logits = logit_scale.exp().clamp(max=100.0) * img @ txt.T
    target = torch.arange(len(img))
    clip = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    t_logits = TEACHER_LOGIT_SCALE * t_img @ t_txt.T
    distill = 0.5 * (_kl_rows(t_logits, logits) + _kl_rows(t_logits.T, logits.T))
    total = (1 - lam) * clip + lam * distill
    return total, {"clip": clip.item(), "distill": distill.item()}


def train_step(model: DemoCLIP, data: TrainSet, idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    """Loss for one batch: per image a random stored view and a random caption (original or synthetic)."""
    n_aug, n_txt = data.image_emb.shape[1], data.text_emb.shape[1]
    aug = torch.from_numpy(rng.integers(0, n_aug, size=len(idx)))
    cap = torch.from_numpy(rng.integers(0, n_txt, size=len(idx)))
    ti = torch.from_numpy(idx)
    img = model.encode_image(augmented_batch(data, idx, aug.numpy()))
    txt = model.encode_text(data.token_ids[ti, cap])
    return reinforced_loss(img, txt, data.image_emb[ti, aug], data.text_emb[ti, cap], model.logit_scale)


def save_checkpoint(model: DemoCLIP, out: Path, extra: dict[str, str]) -> Path:
    """Write fp16 safetensors (config + training facts in the metadata) atomically."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
          for k, v in model.state_dict().items()}
    with atomic_path(out) as tmp:  # 0644: the checkpoint is a shipped package file
        save_file(sd, str(tmp), metadata={**checkpoint_metadata(), **extra})
    return out


def train(out: Path, seed: int = 0, epochs: int = 6, batch_size: int = 64, lr: float = 3e-3,
          data_root: Path | None = None, limit: int | None = None, max_steps: int | None = None,
          progress: bool = True) -> dict:
    """Train, save the checkpoint to ``out`` and return a summary (losses, zero-shot top-1, seconds)."""
    from tqdm import tqdm

    root = ensure_dataset(data_root, seed=0, progress=progress, splits=("train", "eval"))
    data = load_train_set(root, limit)
    torch.manual_seed(seed)
    model = DemoCLIP()
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    steps_per_epoch = max(1, len(data.images) // batch_size)
    total_steps = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    warmup = max(1, total_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + np.cos(np.pi * s / total_steps))))
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    start = time.time()
    bar = tqdm(total=total_steps, desc="train demo", unit="step", disable=not progress)
    step = 0
    while step < total_steps:
        order = rng.permutation(len(data.images))
        for b in range(steps_per_epoch):
            if step >= total_steps:
                break
            loss, parts = train_step(model, data, order[b * batch_size:(b + 1) * batch_size], rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", clip=f"{parts['clip']:.2f}", kd=f"{parts['distill']:.2f}")
    bar.close()
    seconds = time.time() - start
    summary = {"steps": total_steps, "train_seconds": round(seconds, 1), "first_loss": losses[0],
               "last_loss": float(np.mean(losses[-10:])), "seed": seed, "epochs": epochs, "batch_size": batch_size}
    save_checkpoint(model, out, {"train": json.dumps(summary)})
    trained = build_demo_model(out)  # the accuracy of the saved (fp16-stored) weights
    summary["zero_shot_top1"] = evaluate_zero_shot(*torch_encoders(trained), load_zero_shot(root))
    summary["checkpoint_bytes"] = out.stat().st_size
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.train_demo",
        description="Train the tiny MobileCLIP-family 'demo' model on the synthetic reinforced dataset "
                    "(generated and cached on first use) and write an fp16 safetensors checkpoint.")
    parser.add_argument("--out", type=Path, default=DEMO_WEIGHTS, help=f"checkpoint path (default {DEMO_WEIGHTS})")
    parser.add_argument("--seed", type=int, default=0, help="training seed (init, batch order, view/caption draws)")
    parser.add_argument("--epochs", type=int, default=6, help="passes over the train split (default 6)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (default 3e-3)")
    parser.add_argument("--data", type=Path, default=None, help="dataset root (default: the cached synthetic dataset)")
    parser.add_argument("--threads", type=thread_count, default=2,
                        help="torch CPU threads (default 2; on a busy machine use 1: there 2 threads were ~10x slower)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        summary = train(args.out, args.seed, args.epochs, args.batch_size, args.lr, args.data,
                        max_steps=args.max_steps, progress=not args.json)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"saved {args.out} ({summary['checkpoint_bytes'] / 1e6:.1f} MB) after {summary['steps']} steps in "
              f"{summary['train_seconds']:.0f} s; zero-shot top-1 on the eval split: {summary['zero_shot_top1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
