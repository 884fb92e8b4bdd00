"""A campaign's checkpoints as a model: list, card, load_policy and an export torch alone loads."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from policy.model import ModelConfig, NextActionPolicy, get_arrays
from policy.vocabulary import TOKENS
from server.checkpoints import save_checkpoint
from server.cli import app
from server.model_export import export_model
from server.model_loader import encode, load_policy
from server.model_store import GROUND_TRUTH_FILE, ModelStoreError

ACTIONS = ["switch:editor", "key:letter", "shortcut:save", "switch:terminal", "key:letter"]


@pytest.fixture
def checkpoints(tmp_path):
    directory = tmp_path / "checkpoints"
    config = ModelConfig(context_length=4)
    for server_round in (1, 2):
        torch.manual_seed(server_round)
        arrays = get_arrays(NextActionPolicy(config))
        save_checkpoint(
            directory,
            server_round,
            list(arrays),
            list(arrays.values()),
            {
                "evaluate": {"top1": 0.4 + 0.1 * server_round, "top3": 0.8, "loss": 1.2},
                "cohort_size": 5,
                "epsilon_example_cap": 10.0,
                "epsilon_unit": "one example on one device",
                "epsilon_user": None,
                "delta": 1e-5,
                "model_version": f"v{server_round}",
                "model": config.to_dict(),
            },
        )
    return directory


def test_every_checkpoint_names_its_vocabulary_and_reads_back_the_same_model(checkpoints):
    sidecar = json.loads((checkpoints / "round-0002.json").read_text())
    assert sidecar["model"]["tokens"] == list(TOKENS)
    assert load_policy(checkpoints).config == ModelConfig(context_length=4)


@pytest.mark.parametrize("recorded", ["model without hidden", "no model"])
def test_a_checkpoint_written_before_hidden_width_loads_as_64_and_predicts(tmp_path, recorded):
    """Checkpoints of campaigns before the run config named the width: all were 64 wide."""
    config = ModelConfig(context_length=4, hidden=64)
    arrays = get_arrays(NextActionPolicy(config))
    model = {k: v for k, v in config.to_dict().items() if k != "hidden"}
    sidecar = (
        {"model": model}
        if recorded == "model without hidden"
        else {"config": {"context_length": 4}}  # older still: no model record, no gaps
    )
    if recorded == "no model":
        arrays = get_arrays(NextActionPolicy(ModelConfig.from_dict({"context_length": 4})))
    save_checkpoint(tmp_path, 1, list(arrays), list(arrays.values()), sidecar)
    policy = load_policy(tmp_path)
    assert policy.config.hidden == 64 and ModelConfig().hidden == 32
    assert len(policy.predict_next(ACTIONS, k=2)) == 2


def test_model_list_shows_each_round_with_cohort_accuracy_and_privacy_unit(checkpoints):
    result = CliRunner().invoke(app, ["model", "list", str(checkpoints)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split()[:4] == ["1", "5", "0.500", "0.800"]
    assert lines[2].split()[:3] == ["2", "5", "0.600"]
    assert "one example on one device" in result.output


def test_model_list_of_a_directory_without_checkpoints_says_so(tmp_path):
    result = CliRunner().invoke(app, ["model", "list", str(tmp_path)])
    assert result.exit_code == 1
    assert "no round-NNNN.json checkpoint" in result.output


def test_model_card_is_markdown_with_privacy_baselines_and_two_png_plots(checkpoints, tmp_path):
    (checkpoints / GROUND_TRUTH_FILE).write_text(
        json.dumps({"top1": 0.6, "top3": 0.9, "bigram_top1": 0.55, "bigram_top3": 0.85})
    )
    out = tmp_path / "card"
    result = CliRunner().invoke(app, ["model", "show", str(checkpoints), "--out", str(out)])
    assert result.exit_code == 0, result.output
    card = (out / "MODEL_CARD.md").read_text()
    assert "one example on one device" in card and "delta 1e-05" in card
    assert "| per-person bigram | 0.550 | 0.850 |" in card
    for png in ("accuracy.png", "epsilon.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png in card


def test_predict_next_ranks_the_models_own_tokens_and_refuses_unknown_actions(checkpoints):
    policy = load_policy(checkpoints)
    ranked = policy.predict_next(ACTIONS, k=3)
    assert len(ranked) == 3 and all(token in TOKENS for token, _ in ranked)
    assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)
    with pytest.raises(ValueError, match="vocabulary"):
        policy.predict_next(["open the pod bay doors"])


def test_a_round_that_does_not_exist_is_named(checkpoints):
    with pytest.raises(ModelStoreError, match="no round 7"):
        load_policy(checkpoints, server_round=7)


FRESH = textwrap.dedent(
    """
    import json, sys
    for name in ("policy", "server", "client", "privacy", "simulations", "strategies"):
        sys.modules[name] = None  # importing hearth here would fail
    import torch
    from safetensors.torch import load_file
    export, *inputs = sys.argv[1], *(json.loads(a) for a in sys.argv[2:])
    program = torch.export.load(f"{export}/model.pt2").module()
    logits = program(*(torch.tensor(i) for i in inputs))
    tokens = json.load(open(f"{export}/vocabulary.json"))["tokens"]
    weights = load_file(f"{export}/model.safetensors")
    print(json.dumps({
        "top": [[tokens[i] for i in row] for row in logits.topk(3, dim=1).indices.tolist()],
        "logits": logits.tolist(),
        "names": sorted(weights),
    }))
    """
)


@pytest.mark.slow  # torch.export and a fresh interpreter: seconds
def test_an_export_loads_in_a_fresh_python_with_only_torch_and_reproduces_predictions(
    checkpoints, tmp_path
):
    export = export_model(checkpoints, tmp_path / "export")
    policy = load_policy(checkpoints)
    histories = [ACTIONS, ACTIONS[:2]]
    times = [[1.5 * 3**i for i in range(len(h))] for h in histories]  # gaps of every size
    encoded = [encode(policy.config, h, t) for h, t in zip(histories, times, strict=True)]
    context, category, gaps = (torch.cat([e[i] for e in encoded]).tolist() for i in range(3))
    assert policy.config.gap_dim and len(set(gaps[0])) > 2  # the export reads real gaps
    run = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            FRESH,
            str(export.directory),
            json.dumps(context),
            json.dumps(category),
            json.dumps(gaps),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    fresh = json.loads(run.stdout)
    assert fresh["top"] == [
        [a for a, _ in policy.predict_next(h, 3, t)] for h, t in zip(histories, times, strict=True)
    ]
    expected = policy.model(torch.tensor(context), torch.tensor(category), torch.tensor(gaps))
    assert torch.allclose(torch.tensor(fresh["logits"]), expected, atol=1e-5)
    assert fresh["names"] == sorted(n for n, _ in policy.model.named_parameters())
