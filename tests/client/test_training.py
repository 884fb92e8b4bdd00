import numpy as np
import pytest
import torch

from client.learning.featurize import Examples
from client.learning.ghost_norms import embedding_norm_sample
from client.learning.training import TrainConfig, epsilon_spent, evaluate, plan_round, train_round
from policy.model import NextActionPolicy, get_arrays


def _examples(n=600, seed=0):
    rng = np.random.default_rng(seed)
    context = rng.integers(0, 20, size=(n, 8))
    # Learnable: the next action is the last one plus one.
    target = (context[:, -1] + 1) % 20
    return Examples(context, rng.integers(0, 5, n), target)


def test_delta_is_exactly_what_changed_in_the_model():
    model = NextActionPolicy()
    before = get_arrays(model)
    result = train_round(model, _examples(), TrainConfig(batch_size=32, sample_rate=0.05))
    after = get_arrays(model)
    for (name, b), d in zip(before.items(), result.delta, strict=True):
        np.testing.assert_allclose(b + d, after[name], rtol=0, atol=1e-6)
    assert any(np.abs(d).sum() > 0 for d in result.delta)


def test_epsilon_grows_across_rounds_and_never_resets():
    config = TrainConfig(batch_size=32, sample_rate=0.05)
    planned = plan_round(config)
    history, spent = [], []
    for _ in range(3):
        history.append(planned.as_history())
        spent.append(epsilon_spent(history, config.delta))
    assert 0 < spent[0] < spent[1] < spent[2]


def test_the_round_shape_is_the_policys_whatever_the_data_size():
    config = TrainConfig(batch_size=64, sample_rate=0.1, steps=10)
    small = train_round(NextActionPolicy(), _examples(n=200), config)
    large = train_round(NextActionPolicy(), _examples(n=2000), config)
    assert small.planned == large.planned
    assert large.planned is not None
    assert (large.planned.steps, large.planned.sample_rate) == (10, 0.1)


def test_non_private_training_learns_a_simple_rule():
    model = NextActionPolicy()
    data = _examples(n=2000)
    for _ in range(5):
        train_round(
            model, data, TrainConfig(private=False, learning_rate=0.5, sample_rate=0.1, steps=20)
        )
    assert evaluate(model, _examples(n=500, seed=1))["top1"] > 0.9


def test_invalid_config_is_refused_with_a_message():
    with pytest.raises(ValueError, match="delta"):
        TrainConfig(delta=2.0)


def test_dp_step_clips_each_example_before_summing():
    """Without noise, one full-batch DP step is exactly SGD on per-example clipped gradients."""
    examples = _examples(n=16)
    config = TrainConfig(
        batch_size=16,
        sample_rate=1.0,
        steps=1,
        noise_multiplier=0.0,
        max_grad_norm=0.05,
        learning_rate=1.0,
    )
    torch.manual_seed(3)
    model = NextActionPolicy()
    start = {k: torch.from_numpy(v) for k, v in get_arrays(model).items()}
    expected = {k: torch.zeros_like(v) for k, v in start.items()}
    norms = []
    for i in range(len(examples)):
        reference = NextActionPolicy()
        reference.load_state_dict(start)
        part = examples.slice(i, i + 1)
        loss = torch.nn.functional.cross_entropy(
            reference(torch.from_numpy(part.context), torch.from_numpy(part.category)),
            torch.from_numpy(part.target),
        )
        grads = torch.autograd.grad(loss, list(reference.parameters()))
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        norms.append(float(norm))
        scale = min(1.0, config.max_grad_norm / (float(norm) + 1e-6))
        for (name, _), g in zip(reference.named_parameters(), grads, strict=True):
            expected[name] -= config.learning_rate * scale * g / config.batch_size
    assert min(norms) > config.max_grad_norm  # every example is actually clipped
    result = train_round(model, examples, config)
    for (name, want), got in zip(expected.items(), result.delta, strict=True):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-6, err_msg=name)


@pytest.mark.parametrize("padding_idx", [None, 0])
@pytest.mark.parametrize(
    ("rows", "dim", "window"),
    [(12, 4, 8), (60, 16, 8), (12, 4, 1)],  # each-example table, K x K form, one position
)
def test_the_embedding_norm_sampler_gives_each_examples_exact_gradient_norm(
    padding_idx, rows, dim, window
):
    """Each form equals the norm of each example's own embedding gradient, repeats included."""
    torch.manual_seed(0)
    layer = torch.nn.Embedding(rows, dim, padding_idx=padding_idx)
    ids = torch.randint(0, 12, (32, window))
    ids[::2, : min(3, window)] = 0  # left padding, and ids repeated within a window
    backprops = torch.randn(32, window, dim)
    got = embedding_norm_sample(layer, [ids], backprops)[layer.weight]
    for i in range(32):
        out = layer(ids[i : i + 1])
        (grad,) = torch.autograd.grad((out * backprops[i : i + 1]).sum(), [layer.weight])
        assert abs(float(got[i]) - float(grad.norm())) < 1e-5
