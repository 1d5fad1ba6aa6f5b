"""Transformer benchmark: attention heads and FFN neurons removed from a BERT-style encoder.

    python benchmarks/transformer.py [--runs N] [--batch B] [--quick]

The model is tests/fixtures/zoo.py's `bert` laid out exactly like Hugging Face's BertModel
(separate query/key/value Linears, attention.output.dense, intermediate.dense with GELU,
output.dense, LayerNorms, embeddings, pooler) at MiniLM-L6-H384 size: 6 layers, width 384,
12 heads, FFN 1536, sequences of 128 tokens. It returns the last hidden states; the
sentence embedding is their mean over tokens, as sentence-transformers computes it.

No pretrained MiniLM can be downloaded here, so the weights are the seeded random
initialisation. Agreement figures are therefore about *this* model, not a trained one:
they compare how much of the unpruned model's output each method keeps, on the same
weights, but say nothing about a downstream task.

For 25% and 50% of the heads of every layer and of the FFN neurons of every layer:
- pruneviz: a plan on the head groups, ranked by each `--criteria` (`ablation`: the
  calibration loss when the head alone is masked, measured; `l2`: weight norms), and on
  every `intermediate.dense` (FFN neurons, by l2), applied, slimmed (`slim`), and
  checked masked == slimmed. The calibration targets are the unpruned model's own hidden
  states, so a head's measured cost is how far masking it moves the model's output;
- Torch-Pruning's MetaPruner on the same model with `num_heads` and
  `prune_num_heads=True, prune_head_dims=False` (its head pruning) and the same ratios,
  ranking by its GroupMagnitudeImportance (weight norms) — the same heads count;
- params, MACs (torch.utils.flop_counter on one sequence: every matmul, the attention
  products included, FLOPs / 2), batch latency dense vs each slimmed model (interleaved
  rounds, `measure.timing.time_against`: medians and speed-ups with 95% intervals), the
  speed-up per MAC reduction, and the output agreement with the unpruned model on
  held-out sequences (cosine of sentence embeddings, mean and worst; max abs diff of
  hidden states).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures import zoo

from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import slim
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.measure.timing import time_against

LAYERS, HIDDEN, HEADS, FFN, SEQ, VOCAB = 6, 384, 12, 1536, 128, 30522
FRACTIONS = (0.25, 0.5)


def tokens(n: int, seed: int, seq: int = SEQ) -> Tensor:
    """`n` sequences of token ids (no padding), seeded."""
    return torch.randint(1, VOCAB, (n, seq), generator=torch.Generator().manual_seed(seed))


def macs(model: nn.Module, x: Tensor) -> int:
    """Multiply-accumulates of one forward on `x` (every matmul, attention included)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(x)
    return int(counter.get_total_flops()) // 2


def agreement(reference: nn.Module, model: nn.Module, x: Tensor) -> dict[str, float]:
    """How much of `reference`'s output `model` keeps on `x`."""
    with torch.inference_mode():
        a, b = reference(x), model(x)
    cos = F.cosine_similarity(a.mean(1), b.mean(1), dim=-1)
    return {"embedding_cosine_mean": round(float(cos.mean()), 4),
            "embedding_cosine_min": round(float(cos.min()), 4),
            "hidden_max_abs_diff": round(float((a - b).abs().max()), 4)}


def attention_of(model: nn.Module) -> list[nn.Module]:
    return [layer.attention.self for layer in model.encoder.layer]  # type: ignore[union-attr]


def heads_left(model: nn.Module) -> list[int]:
    return [int(a.num_attention_heads) for a in attention_of(model)]


def torch_pruning(pristine: nn.Module, fraction: float, one: Tensor) -> nn.Module:
    """Torch-Pruning's head pruning: MetaPruner with num_heads, whole heads only, the FFN
    neurons at the same ratio; residual writers and the pooler left alone."""
    model = copy.deepcopy(pristine).eval()
    num_heads = {lin: int(a.num_attention_heads) for a in attention_of(model)
                 for lin in (a.query, a.key, a.value)}
    ignored: list[nn.Module] = [model.pooler.dense]
    for layer in model.encoder.layer:  # type: ignore[union-attr]
        ignored += [layer.attention.output.dense, layer.output.dense]
    pruner = tp.pruner.MetaPruner(
        model, one, importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=fraction, ignored_layers=ignored, num_heads=num_heads,
        prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=fraction)
    pruner.step()
    for a in attention_of(model):  # its pruner cuts the Linears; the module's counts are ours
        a.num_attention_heads = pruner.num_heads[a.query]
        a.all_head_size = a.query.out_features
    return model.eval()


def pruneviz_plan(session: PruningSession, fraction: float, criterion: str) -> Plan:
    """Heads of every attention layer (their group's root), ranked by `criterion`, and the
    FFN neurons of every intermediate.dense, ranked by l2 as Torch-Pruning's are:
    `fraction` of each."""
    layers: dict[str, LayerPlan] = {}
    for i in range(LAYERS):
        query = f"encoder.layer.{i}.attention.self.query"
        ffn = f"encoder.layer.{i}.intermediate.dense"
        layers[query] = LayerPlan(Granularity.FILTER, criterion, sparsity=fraction)
        layers[ffn] = LayerPlan(Granularity.FILTER, "l2", sparsity=fraction)
    return session.stamp(Plan(layers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--batch", type=int, default=8, help="sequences per timed batch")
    parser.add_argument("--criteria", default="ablation,l2",
                        help="pruneviz criteria to rank heads by (FFN neurons: l2)")
    parser.add_argument("--quick", action="store_true", help="2 layers, 4 rounds (smoke run)")
    args = parser.parse_args()
    global LAYERS
    if args.quick:
        LAYERS, args.runs = 2, 4
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    pristine = zoo.bert(VOCAB, HIDDEN, LAYERS, HEADS, FFN, 512, output="hidden").eval()
    one = tokens(1, 1)
    calibration_x = tokens(32, 2)
    with torch.inference_mode():
        targets = pristine(calibration_x)
    # The encoder's task is its own output: calibration losses are measured against the
    # unpruned model's hidden states (what a distillation or an embedding check compares).
    calibration = TensorData(calibration_x, targets.clone(), Task.REGRESSION, "calibration")
    held_out = tokens(32, 3)
    timed = tokens(args.batch, 4)
    start = time.perf_counter()
    session = PruningSession(pristine, one, calibration=calibration, name="bert")
    open_s = time.perf_counter() - start
    report: dict[str, Any] = {
        "model": {"layers": LAYERS, "hidden": HIDDEN, "heads": HEADS, "ffn": FFN, "seq": SEQ,
                  "params": sum(p.numel() for p in pristine.parameters()),
                  "macs": macs(pristine, one), "weights": "seeded random (no pretrained MiniLM "
                  "offline)"},
        "session_open_s": round(open_s, 2), "batch": args.batch, "runs": args.runs,
        "threads": torch.get_num_threads(), "rows": {}}
    for fraction in FRACTIONS:
        models: dict[str, nn.Module] = {}
        rows: dict[str, Any] = {}
        for criterion in args.criteria.split(","):
            session.apply(pruneviz_plan(session, fraction, criterion))
            start = time.perf_counter()
            result = slim(session)
            slim_s = time.perf_counter() - start
            with torch.inference_mode():
                masked_vs_slim = float((session.model(held_out) - result.model(held_out))
                                       .abs().max())
            name = f"pruneviz_{criterion}"
            models[name] = result.model
            rows[name] = {"slim_s": round(slim_s, 2), "masked_vs_slimmed_max_abs":
                          masked_vs_slim, "differs": list(result.differs)}
            session.reset()
        models["torch_pruning_l2"] = torch_pruning(pristine, fraction, one)
        rows["torch_pruning_l2"] = {}
        timing = time_against(list(models.values()), pristine, timed, runs=args.runs)
        dense_macs = report["model"]["macs"]
        for (name, model), lat, gain in zip(models.items(), timing.candidates, timing.speedups,
                                            strict=True):
            m = macs(model, one)
            rows[name].update({
                "heads_left": heads_left(model),
                "ffn_left": [int(layer.intermediate.dense.out_features)
                             for layer in model.encoder.layer],  # type: ignore[union-attr]
                "params": sum(p.numel() for p in model.parameters()), "macs": m,
                "mac_reduction": round(dense_macs / m, 3),
                "latency_ms": round(lat.median_ms, 2),
                "speedup": gain.to_dict(),
                "speedup_per_mac_reduction": round(gain.ratio / (dense_macs / m), 3),
                **agreement(pristine, model, held_out)})
        rows["dense"] = {"latency_ms": round(timing.reference.median_ms, 2)}
        report["rows"][f"{int(fraction * 100)}%"] = rows
    report["load_1min"] = {"before": round(load_before, 2),
                           "after": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
