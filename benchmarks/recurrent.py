"""Recurrent stacks pruned by whole hidden units, against pruning each gate row on its own.

Before hidden units were coupled across layers, a filter plan on a multi-layer LSTM
pruned each weight matrix's rows on their own (25% of the rows of every weight_ih /
weight_hh by their L1 norm, each gate of a unit kept or pruned apart): issue 18 measured
a 2-layer LSTM falling from 96% to 10.2%, and it could not be slimmed. This script
measures, on the digits data (the samples' split):

- `digits_lstm` (the shipped 1-layer sample), and a 2-layer LSTM and a 2-layer
  bidirectional LSTM trained here (Adam, lr 2e-3, 30 epochs by default);
- the baseline accuracy; 25% of the hidden units of every layer removed (pruneviz's
  uniform l1 filter plan: whole units, all gates, both directions, the next layer's
  inputs): masked accuracy, slimmed accuracy, max |slimmed - masked|, parameters;
- the same share of rows pruned matrix by matrix (the old behaviour);
- both after the same short masked fine-tune (Adam, lr 1e-3, 3 epochs, masks held).

    python benchmarks/recurrent.py [--epochs 3] [--train-epochs 30]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from typing import Any

import torch
from torch import Tensor, nn

from pruneviz.core.session import PruningSession
from pruneviz.core.slim import max_abs_diff, slim
from pruneviz.data.sources import Source, load_source
from pruneviz.data.tensors import TensorData
from pruneviz.data.training import TrainRecipe, train
from pruneviz.measure.metrics import evaluate

SHARE = 0.25


class DigitsStack(nn.Module):
    """The digits LSTM's shape with a multi-layer (optionally bidirectional) LSTM."""

    def __init__(self, hidden: int, layers: int, bidirectional: bool) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, hidden, num_layers=layers, batch_first=True,
                            bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), 10)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(x.reshape(x.shape[0], 8, 8))
        logits: Tensor = self.fc(out[:, -1])
        return logits


def accuracy(model: nn.Module, data: TensorData) -> float:
    return round(evaluate(model, data).metric, 4)


def row_masks(model: nn.Module) -> dict[str, Tensor]:
    """Keep-masks pruning 25% of the rows of every LSTM weight matrix by their L1 norm,
    matrix by matrix (the rows' biases with them): the uncoupled, per-gate-row pruning."""
    masks: dict[str, Tensor] = {}
    params = dict(model.named_parameters())
    for name, w in params.items():
        if ".weight_ih" not in name and ".weight_hh" not in name:
            continue
        norms = w.detach().abs().sum(1)
        pruned = norms.argsort()[:round(SHARE * len(norms))]
        keep = torch.ones(len(norms), dtype=torch.bool)
        keep[pruned] = False
        masks[name] = keep[:, None].expand_as(w).clone()
        bias = name.replace(".weight_", ".bias_")
        if bias in params:
            masks[bias] = keep.clone()
    return masks


def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in masks:
                p.mul_(masks[name])


def masks_of(model: nn.Module) -> dict[str, Tensor]:
    """Keep-masks of the zeros a pruned model holds (its pruned weights, biases, rows)."""
    return {n: p.detach() != 0 for n, p in model.named_parameters()}


def finetune(model: nn.Module, masks: dict[str, Tensor], data: TensorData,
             epochs: int) -> nn.Module:
    """A copy of `model` trained `epochs` epochs (Adam, lr 1e-3, batch 64) with `masks`
    held after every step."""
    tuned = copy.deepcopy(model)
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(tuned.parameters(), lr=1e-3)
    tuned.train()
    for _ in range(epochs):
        order = torch.randperm(len(data))
        for start in range(0, len(data), 64):
            batch = order[start:start + 64]
            optimiser.zero_grad()
            nn.functional.cross_entropy(tuned(data.x[batch]), data.y[batch]).backward()
            optimiser.step()
            apply_masks(tuned, masks)
    return tuned.eval()


def measure(name: str, model: nn.Module, example: Tensor, test: TensorData,
            data: TensorData, epochs: int) -> dict[str, Any]:
    model.eval()
    row: dict[str, Any] = {"baseline": accuracy(model, test),
                           "params": sum(p.numel() for p in model.parameters())}
    session = PruningSession(model, example)
    plan, _ = session.uniform_plan(SHARE, "filter", "l1")
    session.apply(plan)
    row["groups"] = [f"{g.root}: {g.size} {g.unit}s" for g in session.groups]
    row["units_removed"] = {session.groups[g].root: len(u)
                            for g, u in session.pruned_units().items()}
    masked = copy.deepcopy(session.model).eval()
    result = slim(session)
    row["units_masked"] = accuracy(masked, test)
    row["units_slimmed"] = accuracy(result.model, test)
    row["units_slimmed_params"] = result.params
    row["units_max_abs_diff"] = max_abs_diff(masked, result.model, test.x)
    row["units_finetuned"] = accuracy(finetune(masked, masks_of(masked), data, epochs), test)
    rows = copy.deepcopy(model)
    masks = row_masks(rows)
    apply_masks(rows, masks)
    row["gate_rows_masked"] = accuracy(rows, test)
    row["gate_rows_finetuned"] = accuracy(finetune(rows, masks, data, epochs), test)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs")
    parser.add_argument("--train-epochs", type=int, default=30,
                        help="training epochs of the 2-layer models")
    args = parser.parse_args()
    loaded = load_source(Source(model="sample:digits_lstm"))
    test, data = loaded.eval_data, loaded.train_data
    assert data is not None
    example = loaded.example_input
    assert isinstance(example, Tensor)
    models: dict[str, nn.Module] = {"digits_lstm": loaded.model}
    for label, hidden, bidirectional in (("lstm_2x64", 64, False),
                                         ("bilstm_2x32", 32, True)):
        torch.manual_seed(0)
        model = DigitsStack(hidden, 2, bidirectional)
        train(model, data, TrainRecipe(epochs=args.train_epochs, lr=2e-3, batch_size=64))
        print(f"{label}: trained", file=sys.stderr)
        models[label] = model.eval()
    out: dict[str, Any] = {"share": SHARE, "finetune_epochs": args.epochs,
                           "test": f"{test.name} ({len(test)})", "models": {}}
    for label, model in models.items():
        started = time.perf_counter()
        out["models"][label] = measure(label, model, example, test, data, args.epochs)
        out["models"][label]["seconds"] = round(time.perf_counter() - started, 1)
        print(f"{label}: {out['models'][label]}", file=sys.stderr)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
