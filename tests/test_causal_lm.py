"""The causal-LM loss (lsurf.losses causal_lm), token data (lsurf.data.tokens) and the
language models (lsurf.models.language), checked against a by-hand float64 recomputation:
an explicit loop over sequences and positions that shares no code with lsurf."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from lsurf import api, models
from lsurf.checkpoint import save_checkpoint
from lsurf.cli import main
from lsurf.data.splits import seeded_order
from lsurf.files.directions import read_directions

VOCAB, LENGTH, SEQUENCES, PAD = 50, 12, 24, 49
TINY = {"vocab_size": VOCAB, "d_model": 16, "layers": 2, "heads": 2, "context": 16}
GPT2 = {"vocab_size": 100, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 2}


def padded_ids(seed: int, vocab: int = VOCAB, pad: int = PAD) -> torch.Tensor:
    """(SEQUENCES, LENGTH) ids below `pad`, each row of its own true length (3 to LENGTH),
    padded at its end with `pad`."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, pad, (SEQUENCES, LENGTH), generator=generator)
    lengths = torch.randint(3, LENGTH + 1, (SEQUENCES,), generator=generator)
    for row, length in enumerate(lengths.tolist()):
        ids[row, length:] = pad
    assert len(set(lengths.tolist())) > 1 and int(lengths.min()) < LENGTH
    return ids


def hand_units(model: nn.Module, ids: torch.Tensor, pad: int) -> tuple[list[float], list[int]]:
    """Per sequence, its next-token loss sum and token count, by hand in float64: position t
    scores token t + 1, a padded token scores nothing."""
    model.eval()
    sums, counts = [], []
    with torch.no_grad():
        for row in ids:
            raw = model(row[None])
            logits = (raw if isinstance(raw, torch.Tensor) else raw.logits)[0].double()
            total, count = 0.0, 0
            for position in range(len(row) - 1):
                target = int(row[position + 1])
                if target == pad:
                    continue
                scores = logits[position].tolist()
                top = max(scores)
                log_partition = top + math.log(sum(math.exp(s - top) for s in scores))
                total += log_partition - scores[target]
                count += 1
            sums.append(total)
            counts.append(count)
    return sums, counts


def moved(model: nn.Module, direction: dict[str, torch.Tensor], a: float) -> nn.Module:
    """A copy of `model` at θ* + a·d, moving each parameter (a tied one once) by hand."""
    import copy

    copied = copy.deepcopy(model)
    with torch.no_grad():
        for name, parameter in copied.named_parameters():
            parameter.add_(direction[name].to(parameter.dtype), alpha=a)
    return copied


def token_dataset(ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Items as a Hugging Face tokenizer hands them: input_ids and attention_mask."""
    return [{"input_ids": row, "attention_mask": (row != PAD).long()} for row in ids]


@pytest.mark.parametrize("name, kwargs", [("tiny_transformer", TINY), ("gpt2", GPT2)])
def test_the_swept_loss_is_the_hand_loss_at_theta_and_at_a_moved_point(name, kwargs, tmp_path):
    torch.manual_seed(0)
    model = models.build_named(name, None, kwargs)
    pad = kwargs["vocab_size"] - 1
    ids = padded_ids(1, kwargs["vocab_size"], pad)
    # Padding marked by the attention mask alone (pad id only fills the ids).
    items = [{"input_ids": row, "attention_mask": (row != pad).long()} for row in ids]
    output = tmp_path / "lm.h5"
    surface = api.sweep(
        model,
        items,
        x="-0.5:0.5:3",
        loss="causal_lm",
        output=output,
        device="cpu",
        log=None,
        batch_size=7,
    )
    assert sorted(surface.metrics) == ["train_loss"]  # no accuracy column for a language model
    directions, _ = read_directions(output.with_suffix(".directions.h5"))
    names = [name for name, _ in model.named_parameters()]
    assert sorted(directions.x) == sorted(names)  # each tensor once: a tied head is no second key
    if name == "gpt2":
        assert model.lm_head.weight is model.transformer.wte.weight
        assert "lm_head.weight" not in directions.x
    for index, a in enumerate(surface.x):
        sums, counts = hand_units(moved(model, directions.x, float(a)), ids, pad)
        expected = sum(sums) / sum(counts)
        found = float(surface.metrics["train_loss"][index])
        assert abs(found - expected) <= 2e-4 * abs(expected), (a, found, expected)
    # The moved points are other losses: the check above could fail.
    assert len({round(float(v), 4) for v in surface.metrics["train_loss"]}) == 3


def test_an_early_stopped_point_has_the_hand_ratio_estimate_and_its_error(tmp_path):
    torch.manual_seed(0)
    model = models.build_named("tiny_transformer", None, TINY)
    ids = padded_ids(2)
    batch, seed = 8, 5
    surface = api.sweep(
        model,
        token_dataset(ids),
        x="0:0:1",
        loss="causal_lm",
        device="cpu",
        log=None,
        batch_size=batch,
        rel_error=0.9,
        min_examples=batch,
        subset_seed=seed,
    )
    # The point stops after one batch: the first 8 sequences of the seeded order.
    assert float(surface.metrics["train_examples"][0]) == batch
    chosen = seeded_order(SEQUENCES, seed)[:batch]
    sums, counts = hand_units(model, ids[chosen], PAD)
    y, n = np.array(sums), np.array(counts, dtype=float)
    ratio = y.sum() / n.sum()
    k = len(y)
    error = math.sqrt((1 - k / SEQUENCES) * k / (k - 1) * ((y - ratio * n) ** 2).sum()) / n.sum()
    assert float(surface.metrics["train_loss"][0]) == pytest.approx(ratio, rel=2e-4)
    assert float(surface.metrics["train_loss_se"][0]) == pytest.approx(error, rel=2e-4)
    assert error > 0


def test_the_full_split_error_is_zero_and_bf16_is_close(tmp_path):
    torch.manual_seed(0)
    model = models.build_named("tiny_transformer", None, TINY)
    data = token_dataset(padded_ids(3))
    exact = api.sweep(
        model,
        data,
        x="0:0:1",
        loss="causal_lm",
        device="cpu",
        log=None,
        standard_errors=True,
    )
    assert float(exact.metrics["train_loss_se"][0]) == 0.0  # every sequence used
    rounded = api.sweep(
        model, data, x="0:0:1", loss="causal_lm", device="cpu", log=None, precision="bf16"
    )
    expected, found = float(exact.metrics["train_loss"][0]), float(rounded.metrics["train_loss"][0])
    assert found != expected and abs(found - expected) <= 2e-2 * expected


def write_tokens(root: Path, kind: str) -> dict:
    """train/test token files under `root` (.npy rows, or a flat uint16 .bin with val.bin as
    nanoGPT names it); the data section that reads them."""
    root.mkdir(parents=True, exist_ok=True)
    train, test = padded_ids(4), padded_ids(5)
    if kind == "npy":
        np.save(root / "train.npy", train.numpy().astype(np.int32))
        np.save(root / "test.npy", test.numpy().astype(np.int32))
        kwargs = {"pad_id": PAD}
    else:
        train.numpy().astype(np.uint16).tofile(root / "train.bin")
        test.numpy().astype(np.uint16).tofile(root / "val.bin")
        kwargs = {"sequence_length": LENGTH, "dtype": "uint16", "pad_id": PAD}
    return {"dataset": "tokens", "root": str(root), "splits": ["train", "test"], "kwargs": kwargs}


@pytest.mark.parametrize("kind", ["npy", "bin"])
def test_a_yaml_sweep_on_token_files_runs_describes_and_plots(kind, tmp_path, capsys):
    torch.manual_seed(0)
    model = models.build_named("tiny_transformer", None, TINY)
    checkpoint = tmp_path / "lm.pt"
    save_checkpoint(checkpoint, model.state_dict())
    output = tmp_path / "out" / "lm.h5"
    config = {
        "model": {"name": "tiny_transformer", "checkpoint": str(checkpoint), "kwargs": TINY},
        "data": write_tokens(tmp_path / "tokens", kind),
        "grid": {"x": "-1:1:3", "y": "-1:1:3"},
        "evaluation": {"loss": "causal_lm", "device": "cpu"},
        "output": str(output),
    }
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["sweep", str(path)]) == 0
    with h5py.File(output) as h5file:
        assert sorted(name for name in h5file if name.endswith("_loss")) == [
            "test_loss",
            "train_loss",
        ]
        assert "train_acc" not in h5file
        assert h5file["done"][...].all()
        loss = h5file["test_loss"][...]
    sums, counts = hand_units(model, padded_ids(5), PAD)
    assert loss[1, 1] == pytest.approx(sum(sums) / sum(counts), rel=2e-4)  # the centre is θ*
    capsys.readouterr()
    assert main(["info", str(output)]) == 0
    assert "test_loss" in capsys.readouterr().out
    assert main(["plot", str(output)]) == 0
    assert list((tmp_path / "out").glob("*.png"))


class NoLogits(nn.Module):
    """A language model whose forward returns a dict with no logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)

    def forward(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"hidden": self.embedding(ids)}


def test_a_model_without_logits_is_one_line_and_nothing_written(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    checkpoint = tmp_path / "none.pt"
    save_checkpoint(checkpoint, NoLogits().state_dict())
    config = {
        "model": {"name": "test_causal_lm:NoLogits", "checkpoint": str(checkpoint)},
        "data": write_tokens(tmp_path / "tokens", "npy"),
        "grid": {"x": "-1:1:3"},
        "evaluation": {"loss": "causal_lm", "device": "cpu"},
        "output": str(tmp_path / "out" / "none.h5"),
    }
    path = tmp_path / "none.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["sweep", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lsurf: error: the model returned a dict, with neither a tensor"), error
    assert error.count("\n") == 1 and not (tmp_path / "out").exists()


def late_id_above_vocabulary() -> np.ndarray:
    """Rows whose first four (the probe batch) fit the vocabulary and a later one does not."""
    ids = np.zeros((8, 6), dtype=np.int64)
    ids[6, 2] = VOCAB + 3
    return ids


@pytest.mark.parametrize(
    "write, kwargs, message",
    [
        (lambda root: np.save(root / "train.npy", np.zeros((4, 6), np.float32)), {}, "2-D integer"),
        (
            lambda root: np.save(root / "train.npy", np.array([[1, PAD, 3]])),
            {"pad_id": PAD},
            "real token after padding",
        ),
        (lambda root: None, {}, "not found"),
        (lambda root: np.zeros(30, np.uint16).tofile(root / "train.bin"), {}, "sequence_length"),
        (
            lambda root: np.save(root / "train.npy", np.full((4, 6), VOCAB + 3)),
            {},
            f"largest token id {VOCAB + 3}",
        ),
        (
            lambda root: np.save(root / "train.npy", late_id_above_vocabulary()),
            {},
            f"token id {VOCAB + 3} but the model's vocabulary has {VOCAB}",
        ),
    ],
    ids=["float", "ragged-padding", "missing", "bin-without-length", "id-above-vocab", "late-id"],
)
def test_bad_token_data_is_one_line_and_nothing_written(write, kwargs, message, tmp_path, capsys):
    root = tmp_path / "tokens"
    root.mkdir()
    write(root)
    checkpoint = tmp_path / "lm.pt"
    torch.manual_seed(0)
    save_checkpoint(checkpoint, models.build_named("tiny_transformer", None, TINY).state_dict())
    config = {
        "model": {"name": "tiny_transformer", "checkpoint": str(checkpoint), "kwargs": TINY},
        "data": {"dataset": "tokens", "root": str(root), "kwargs": kwargs},
        "grid": {"x": "-1:1:3"},
        "evaluation": {"loss": "causal_lm", "device": "cpu"},
        "output": str(tmp_path / "out" / "lm.h5"),
    }
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["sweep", str(path)]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1, error
    assert not (tmp_path / "out").exists()


def test_gpt2_without_transformers_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name.startswith("transformers"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(models.ConfigError, match=r"pip install lsurf\[transformers\]"):
        models.build_named("gpt2", None, GPT2)


def test_the_language_models_page_runs_as_shown(tmp_path, monkeypatch, capsys):
    """docs/language-models.md: its Python writes the tokens and θ*, its YAML is the config,
    and its commands sweep, describe and plot, printing what the page shows."""
    import shlex

    from doc_commands import ROOT, blocks, documented, missing_lines

    page = ROOT / "docs" / "language-models.md"
    code = [block for block in blocks(page) if block.tag == "python"]
    (config,) = [block for block in blocks(page) if block.tag == "yaml"]
    assert len(code) == 2
    monkeypatch.chdir(tmp_path)
    for block in code:
        exec(compile("\n".join(block.lines), f"{page}:{block.line}", "exec"), {"__name__": "p"})
    Path("runs/lm/lm.yaml").write_text("\n".join(config.lines) + "\n")
    capsys.readouterr()
    for command in (
        documented(".venv/bin/lsurf sweep runs/lm/lm.yaml"),
        documented(".venv/bin/lsurf info runs/lm/surface.h5"),
        documented(".venv/bin/lsurf plot runs/lm/surface.h5"),
    ):
        assert main(shlex.split(command.text)[1:]) == 0, command.text
        assert missing_lines(command, capsys.readouterr().out) == []
    assert Path("runs/lm/surface_train_loss_contour.png").is_file()


def evaluator(model: nn.Module, ids: torch.Tensor, **settings):
    """An Evaluator of `model` on `ids` (padded with PAD) along a random line."""
    from lsurf import params
    from lsurf.data.tokens import with_targets
    from lsurf.directions import random_directions
    from lsurf.evaluate import Evaluator
    from lsurf.losses import build_loss

    weights = {key: value.detach() for key, value in params.movable(model, False).items()}
    directions = random_directions(weights, "filter", "biasbn", 0, plane=False)
    split = with_targets(ids, PAD, "tokens")
    return Evaluator(
        model,
        directions,
        {"train": split},
        8,
        torch.device("cpu"),
        loss=build_loss("causal_lm"),
        **settings,
    )


def test_bf16_rounds_the_forward_only_and_the_image_fast_paths_change_nothing():
    torch.manual_seed(0)
    model = models.build_named("tiny_transformer", None, TINY).eval()
    ids = padded_ids(6)
    # BN folding and channels_last on a transformer: nothing to fold, no 4-D tensor, same bits.
    # (Each evaluator moves the one model in place: all are built at θ* before any moves.)
    plain = evaluator(model, ids, channels_last=False, fold_bn=False)
    fast = evaluator(model, ids, channels_last=True, fold_bn=True)
    bf16 = evaluator(model, ids, precision="bf16")
    assert fast.folded.count == 0
    assert plain.evaluate(0.5, 0.0) == fast.evaluate(0.5, 0.0)
    # bf16: the loss of the bf16 logits, taken by hand in float64, is what the sweep stores:
    # the log-softmax runs in fp32 (in bf16 it would be off by ~1e-3 of the loss).
    rounded = bf16.evaluate(0.0, 0.0)["train_loss"]
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        logits = model(ids)
    assert logits.dtype == torch.bfloat16

    class Fixed(nn.Module):
        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            rows = [int((ids == row).all(dim=1).nonzero()[0]) for row in batch]
            return logits[rows]

    sums, counts = hand_units(Fixed(), ids, PAD)
    assert rounded == pytest.approx(sum(sums) / sum(counts), rel=1e-6)
    exact = plain.evaluate(0.0, 0.0)["train_loss"]
    assert rounded != exact
