"""Export a checkpoint's model for use outside hearth: torch and safetensors only.

An export directory holds:

- ``model.safetensors``: the weights by parameter name (no pickle, safe to load);
- ``model.pt2``: the model as a ``torch.export`` program (TorchScript is deprecated
  in torch 2.13), taking ``(context, category, gaps)`` as int64 tensors of shape
  ``(batch, K)``, ``(batch,)`` and ``(batch, K)`` (``gaps`` only for a model with a
  gap embedding, ``config.json``'s ``inputs`` lists what it takes) and returning
  ``(batch, vocab)`` logits;
- ``config.json``: the model's configuration with its vocabulary, and where the
  model came from (round, model version, privacy spent and its unit);
- ``vocabulary.json``: token names by id and app categories by id.

``torch.export.load("model.pt2").module()(context, category, gaps)`` is all a
consumer needs. ONNX is not written: torch 2.13's exporter needs ``onnxscript``, which the
CPU build here does not ship.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
from safetensors.torch import save_file

from server.model_store import load_model

WEIGHTS_FILE: Final = "model.safetensors"
PROGRAM_FILE: Final = "model.pt2"
CONFIG_FILE: Final = "config.json"
VOCABULARY_FILE: Final = "vocabulary.json"
PROVENANCE_KEYS: Final = (
    "round",
    "model_version",
    "policy_hash",
    "epsilon_example_cap",
    "epsilon_unit",
    "epsilon_user",
    "epsilon_user_unit",
    "delta",
)


@dataclass(frozen=True)
class Export:
    """Where each exported file went."""

    directory: Path
    weights: Path
    program: Path
    config: Path
    vocabulary: Path


def export_model(checkpoint: Path, out: Path, server_round: int | None = None) -> Export:
    """Write the model of ``checkpoint`` (newest round, or ``server_round``) into ``out``."""
    model, sidecar = load_model(checkpoint, server_round)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config
    weights = out / WEIGHTS_FILE
    save_file(
        {name: p.detach().contiguous() for name, p in model.named_parameters()},
        str(weights),
        metadata={"format": "pt", "model_version": str(sidecar.get("model_version", ""))},
    )
    window = torch.zeros((2, config.context_length), dtype=torch.long)
    example: tuple[torch.Tensor, ...] = (window, torch.zeros((2,), dtype=torch.long))
    inputs = {
        "context": "int64 (batch, context_length): the last actions, left-padded with token 0",
        "category": "int64 (batch,): the app category in front (0: none seen)",
    }
    if config.gap_dim:
        example = (*example, torch.zeros_like(window))  # its own tensor: export aliases one
        inputs["gaps"] = (
            "int64 (batch, context_length): each action's bucketed time since the action "
            "before it (policy.vocabulary.GAP_EDGES_SECONDS; 0: unknown or padding)"
        )
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(
        model, example, dynamic_shapes=tuple({0: batch} for _ in example), strict=False
    )
    program_path = out / PROGRAM_FILE
    torch.export.save(program, program_path)
    provenance: dict[str, Any] = {k: sidecar.get(k) for k in PROVENANCE_KEYS}
    config_path = out / CONFIG_FILE
    config_path.write_text(
        json.dumps(
            {
                "model": config.to_dict(),
                "inputs": inputs,
                "output": "float32 (batch, vocab) logits over tokens",
                "provenance": provenance,
            },
            indent=2,
        )
        + "\n"
    )
    vocabulary = out / VOCABULARY_FILE
    vocabulary.write_text(
        json.dumps({"tokens": list(config.tokens), "categories": list(config.categories)}, indent=2)
        + "\n"
    )
    return Export(out, weights, program_path, config_path, vocabulary)
