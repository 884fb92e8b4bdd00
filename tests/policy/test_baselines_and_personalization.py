"""Per-person n-gram baselines and the personal copy a device fine-tunes (never uploaded)."""

from collections.abc import Callable

import numpy as np
import torch

from client.learning.featurize import Examples
from client.learning.personal_ngram import (
    BACKOFF_STRENGTH,
    SMOOTHING,
    PersonalCounts,
    PersonalPolicy,
)
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


def test_personal_counts_back_off_from_unseen_contexts_to_the_previous_action():
    ex = _examples([3, 5, 6, 4, 5, 7] * 20)
    counts = PersonalCounts(ex, vocab_size=10, order=3)
    p = counts.probabilities(np.array([[0, 3, 5], [0, 4, 5], [0, 9, 5], [0, 9, 8]]), np.zeros(4))
    assert np.allclose(p.sum(axis=1), 1.0) and (p > 0).all()  # nothing is impossible
    assert p[0].argmax() == 6 and p[1].argmax() == 7  # two actions back decide
    assert np.isclose(p[2][6], p[2][7])  # (9, 5) unseen: what follows 5
    assert p[3].argmax() == 5  # 8 never seen: the person's most frequent action


def test_a_four_gram_matches_witten_bell_counted_by_hand():
    # Windows of 3; examples i3 (1,2,3)->4, i7 (1,2,3)->5, i11 (6,2,3)->4 follow a 3.
    ex = _examples([1, 2, 3, 4, 1, 2, 3, 5, 6, 2, 3, 4])
    frequency = {2: 3, 3: 3, 4: 2, 1: 1, 5: 1, 6: 1}  # the 11 targets

    def unigram(a: int) -> float:
        return (frequency.get(a, 0) + SMOOTHING) / (11 + 10 * SMOOTHING)

    def witten_bell(seen: dict[int, int], lower: Callable[[int], float]) -> Callable[[int], float]:
        total, kinds = sum(seen.values()), len(seen)
        trust = total / (total + BACKOFF_STRENGTH * kinds)
        return lambda a: trust * seen.get(a, 0) / total + (1 - trust) * lower(a)

    after_3 = witten_bell({4: 2, 5: 1}, unigram)
    after_3_in_app = witten_bell({4: 2, 5: 1}, after_3)  # one category throughout
    after_2_3 = witten_bell({4: 2, 5: 1}, after_3_in_app)
    after_1_2_3 = witten_bell({4: 1, 5: 1}, after_2_3)
    after_6_2_3 = witten_bell({4: 1}, after_2_3)
    counts = PersonalCounts(ex, vocab_size=10, order=4)
    p = counts.probabilities(np.array([[1, 2, 3], [6, 2, 3], [9, 2, 3]]), np.zeros(3))
    for row, expected in zip(p, (after_1_2_3, after_6_2_3, after_2_3), strict=True):
        assert np.allclose(row, [expected(a) for a in range(10)])
    trigram = PersonalCounts(ex, vocab_size=10, order=3)  # a 4-gram's first back-off
    assert np.allclose(trigram.probabilities(np.array([[1, 2, 3]]), np.zeros(1))[0], p[2])


def test_personal_counts_tell_apps_apart_and_back_off_from_an_unseen_one():
    # After 5 comes 6 in one app and 7 in another: only the app in focus says which.
    ex = _examples([3, 5, 6, 3, 5, 7] * 20)
    category = np.where(ex.target == 7, 2, 1)
    ex = Examples(ex.context, category, ex.target)
    counts = PersonalCounts(ex, vocab_size=10)
    window = np.array([[9, 3, 5]] * 4)
    p = counts.probabilities(window, np.array([1, 2, 3, 99]))
    assert p[0].argmax() == 6 and p[1].argmax() == 7
    assert np.allclose(p[2], p[3]) and np.isclose(p[2][6], p[2][7])  # what follows 5


def test_the_personal_mixture_ranks_by_both_parts_and_never_touches_the_global_model():
    torch.manual_seed(0)
    mine = _examples([3, 5, 6, 4, 5, 7] * 40, k=8)
    model = NextActionPolicy(ModelConfig())
    before = [a.copy() for a in get_arrays(model).values()]
    counts_only = personalize(
        model, mine, PersonalizeConfig(epochs=0, counts_weight=1.0, global_weight=0)
    )
    assert isinstance(counts_only, PersonalPolicy)
    assert evaluate(counts_only, mine)["top1"] == 1.0  # the counts alone know the habit
    assert not isinstance(
        personalize(model, mine, PersonalizeConfig(epochs=1, counts_weight=0, global_weight=0)),
        PersonalPolicy,
    )
    after = list(get_arrays(model).values())
    assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_the_personal_mixture_is_a_normalized_product_of_its_parts():
    torch.manual_seed(0)
    mine = _examples([3, 5, 6, 4, 5, 7] * 20, k=8)
    model, shared = NextActionPolicy(ModelConfig()), NextActionPolicy(ModelConfig())
    counts = PersonalCounts(mine, model.config.vocab_size)
    context, category = torch.from_numpy(mine.context), torch.from_numpy(mine.category)
    gaps = torch.from_numpy(mine.gaps)
    with torch.no_grad():
        model_log_p = torch.log_softmax(model(context, category, gaps), dim=1)
        shared_log_p = torch.log_softmax(shared(context, category, gaps), dim=1)
        counts_p = counts.probabilities(mine.context, mine.category)
        counts_log_p = torch.from_numpy(np.log(counts_p)).float()
        mixed = PersonalPolicy(model, counts, 0.3)(context, category, gaps)
        three = PersonalPolicy(model, counts, 0.3, shared, 0.2)(context, category, gaps)
        only_counts = PersonalPolicy(model, counts, 1.0)(context, category, gaps)
    assert torch.allclose(mixed.exp().sum(dim=1), torch.ones(len(mine)), atol=1e-5)
    expected = torch.log_softmax(0.3 * counts_log_p + 0.7 * model_log_p, dim=1)
    assert torch.allclose(mixed, expected, atol=1e-5)  # log space, not a sum of probabilities
    expected = torch.log_softmax(0.3 * counts_log_p + 0.5 * model_log_p + 0.2 * shared_log_p, 1)
    assert torch.allclose(three, expected, atol=1e-5)
    assert torch.allclose(only_counts, counts_log_p, atol=1e-5)


def test_the_personal_policy_keeps_its_own_copy_of_the_received_model():
    # The next round loads new weights into the global model; the personal policy
    # must not change with it.
    mine = _examples([3, 5, 6, 4, 5, 7] * 10, k=8)
    model = NextActionPolicy(ModelConfig())
    personal = personalize(
        model, mine, PersonalizeConfig(epochs=0, counts_weight=0.3, global_weight=0.5)
    )
    context, category = torch.from_numpy(mine.context), torch.from_numpy(mine.category)
    with torch.no_grad():
        before = personal(context, category)
        for param in model.parameters():
            param.add_(1.0)
        assert torch.equal(personal(context, category), before)
