"""Plain SGD training that writes a checkpoint trajectory (enough for the demo).

Input: a `TrainConfig`. Output: `model_0.pt` (the initial weights), `model_E.pt` every
`save_every` epochs, `final.pt`, and `log.csv` (per-epoch train loss/accuracy, and test
loss/accuracy when the test split is listed) in `config.output`.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lsurf import checkpoint, models
from lsurf.config import TrainConfig, to_yaml
from lsurf.data import Split, load_split
from lsurf.evaluate import measure, pick_device


def train(config: TrainConfig) -> Path:
    torch.manual_seed(config.training.seed)
    model = models.build(config.model.name, config.model.num_classes)
    if config.model.checkpoint is not None:
        checkpoint.load_weights(model, config.model.checkpoint)
    data = config.data
    splits = {
        name: load_split(
            data.root, name, data.mean, data.std, data.subset, data.subset_seed, data.download
        )
        for name in ("train", *(["test"] if "test" in data.splits else []))
    }
    device = pick_device(config.evaluation.device)
    memory_format = (
        torch.channels_last if config.evaluation.channels_last else torch.contiguous_format
    )
    model = model.to(device=device, memory_format=memory_format)
    images = splits["train"].images.to(device).contiguous(memory_format=memory_format)
    labels = splits["train"].labels.to(device)
    test = None
    if "test" in splits:
        test = Split(
            splits["test"].images.to(device).contiguous(memory_format=memory_format),
            splits["test"].labels.to(device),
        )
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.training.lr,
        momentum=config.training.momentum,
        weight_decay=config.training.weight_decay,
    )
    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(to_yaml(config))
    checkpoint.save_checkpoint(out / "model_0.pt", model.state_dict(), epoch=0)
    order = torch.Generator().manual_seed(config.training.seed)
    rows = []
    for epoch in range(1, config.training.epochs + 1):
        started = time.monotonic()
        model.train()
        loss_sum, correct = 0.0, 0
        permutation = torch.randperm(len(labels), generator=order).to(device)
        for start in range(0, len(labels), data.batch_size):
            batch = permutation[start : start + data.batch_size]
            logits = model(images[batch])
            loss = F.cross_entropy(logits, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(batch)
            correct += int((logits.argmax(1) == labels[batch]).sum())
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / len(labels),
            "train_acc": 100.0 * correct / len(labels),
        }
        if test is not None:
            model.eval()
            result = measure(model, test, data.batch_size, device.type)
            row["test_loss"], row["test_acc"] = result.loss, result.accuracy
        rows.append(row)
        summary = ", ".join(f"{key} {value:.4g}" for key, value in row.items() if key != "epoch")
        print(
            f"epoch {epoch}/{config.training.epochs}: {summary} "
            f"({time.monotonic() - started:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
        if epoch % config.training.save_every == 0 or epoch == config.training.epochs:
            checkpoint.save_checkpoint(out / f"model_{epoch}.pt", model.state_dict(), epoch=epoch)
    checkpoint.save_checkpoint(out / "final.pt", model.state_dict(), epoch=config.training.epochs)
    with open(out / "log.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(
        f"checkpoints and log.csv in {out}; trained weights: {out / 'final.pt'}",
        file=sys.stderr,
        flush=True,
    )
    return out / "final.pt"
