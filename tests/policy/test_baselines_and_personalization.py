"""Per-person n-gram baselines and the personal copy a device fine-tunes (never uploaded)."""

import numpy as np
import torch

from client.learning.featurize import Examples
from client.learning.personal_ngram import PersonalCounts, PersonalPolicy
from client.learning.training import PersonalizeConfig, evaluate, personalize
from policy.baselines import Bigram, NGram
from policy.model import ModelConfig, NextActionPolicy, get_arrays


def _examples(tokens: list[int], k: int = 3) -> Examples:
    padded = [0] * k + tokens
    context = np.array([padded[i : i + k] for i in range(1, len(tokens))], dtype=np.int64)
    target = np.array(tokens[1:], dtype=np.int64)
    return Examples(context, np.zeros(len(target), dtype=np.int64), target)


def test_a_trigram_tells_apart_what_a_bigram_cannot():
    # After 5, the next is 6 if 3 came before it and 7 if 4 did: only two actions back say.
    ex = _examples([3, 5, 6, 4, 5, 7] * 20)
    bigram = Bigram(ex.context[:, -1], ex.target)
    trigram = NGram(ex.context, ex.target, 3)
    assert trigram.accuracy(ex.context, ex.target, 1) == 1.0
    assert bigram.accuracy(ex.context[:, -1], ex.target, 1) < 0.9


def test_an_order_two_ngram_ranks_as_the_bigram_and_unseen_contexts_back_off():
    ex = _examples([1, 2, 3, 2, 1, 2, 2, 3] * 10)
    bigram = Bigram(ex.context[:, -1], ex.target)
    ngram = NGram(ex.context, ex.target, 2)
    for k in (1, 3):
        assert ngram.accuracy(ex.context, ex.target, k) == bigram.accuracy(
            ex.context[:, -1], ex.target, k
        )
    assert NGram(ex.context, ex.target, 3).ranked([9, 9, 9])[0] == 2  # most frequent


def test_personalizing_fits_a_persons_habit_and_leaves_the_global_model_untouched():
    torch.manual_seed(0)
    mine = _examples([3, 5, 6, 4, 5, 7] * 40, k=8)
    model = NextActionPolicy(ModelConfig())
    before = [a.copy() for a in get_arrays(model).values()]
    personal = personalize(model, mine, PersonalizeConfig(epochs=10, learning_rate=2e-2))
    assert evaluate(personal, mine)["top1"] > 0.95 > evaluate(model, mine)["top1"]
    after = list(get_arrays(model).values())
    assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_personal_counts_are_a_smoothed_trigram_that_backs_off_for_unseen_contexts():
    ex = _examples([3, 5, 6, 4, 5, 7] * 20)
    counts = PersonalCounts(ex, vocab_size=10)
    p = counts.probabilities(np.array([[0, 3, 5], [0, 4, 5], [0, 9, 5], [0, 9, 8]]))
    assert np.allclose(p.sum(axis=1), 1.0) and (p > 0).all()  # nothing is impossible
    assert p[0].argmax() == 6 and p[1].argmax() == 7  # two actions back decide
    assert np.isclose(p[2][6], p[2][7])  # (9, 5) unseen: the bigram after 5
    assert p[3].argmax() == 5  # 8 never seen: the person's most frequent action


def test_the_personal_mixture_ranks_by_both_parts_and_never_touches_the_global_model():
    torch.manual_seed(0)
    mine = _examples([3, 5, 6, 4, 5, 7] * 40, k=8)
    model = NextActionPolicy(ModelConfig())
    before = [a.copy() for a in get_arrays(model).values()]
    counts_only = personalize(model, mine, PersonalizeConfig(epochs=0, counts_weight=1.0))
    assert isinstance(counts_only, PersonalPolicy)
    assert evaluate(counts_only, mine)["top1"] == 1.0  # the counts alone know the habit
    assert not isinstance(
        personalize(model, mine, PersonalizeConfig(counts_weight=0)), PersonalPolicy
    )
    after = list(get_arrays(model).values())
    assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_the_personal_mixture_is_a_normalized_product_of_both_parts():
    torch.manual_seed(0)
    mine = _examples([3, 5, 6, 4, 5, 7] * 20, k=8)
    model = NextActionPolicy(ModelConfig())
    counts = PersonalCounts(mine, model.config.vocab_size)
    context, category = torch.from_numpy(mine.context), torch.from_numpy(mine.category)
    gaps = torch.from_numpy(mine.gaps)
    with torch.no_grad():
        model_log_p = torch.log_softmax(model(context, category, gaps), dim=1)
        counts_log_p = torch.from_numpy(np.log(counts.probabilities(mine.context))).float()
        mixed = PersonalPolicy(model, counts, 0.3)(context, category, gaps)
        only_counts = PersonalPolicy(model, counts, 1.0)(context, category, gaps)
    assert torch.allclose(mixed.exp().sum(dim=1), torch.ones(len(mine)), atol=1e-5)
    expected = torch.log_softmax(0.3 * counts_log_p + 0.7 * model_log_p, dim=1)
    assert torch.allclose(mixed, expected, atol=1e-5)  # log space, not a sum of probabilities
    assert torch.allclose(only_counts, counts_log_p, atol=1e-5)
