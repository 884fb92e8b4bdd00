from collections import Counter
from itertools import pairwise

from client.learning.featurize import featurize, split_held_out
from policy.baselines import Bigram
from policy.events import Focus, Paused, Resumed, Suppressed, from_record, to_record
from simulations.apps import APPS
from simulations.generator import employee_persona, generate_employee
from simulations.personas import PERSONAS


def test_the_same_seed_gives_the_same_stream_and_another_seed_another():
    assert generate_employee(3, seed=11, hours=1) == generate_employee(3, seed=11, hours=1)
    assert generate_employee(3, seed=11, hours=1) != generate_employee(3, seed=12, hours=1)


def test_every_event_is_valid_schema_with_increasing_seq_and_time():
    events = generate_employee(0, seed=1, hours=2)
    assert [e.seq for e in events] == list(range(len(events)))
    assert all(a.t <= b.t for a, b in pairwise(events))
    assert all(from_record(to_record(e)) == e for e in events)


def test_there_are_five_personas_and_ten_apps_including_sensitive_ones():
    assert len(PERSONAS) >= 5
    assert len(APPS) >= 10
    assert {a.category.value for a in APPS.values() if a.sensitive} >= {
        "chat",
        "hr",
        "password_manager",
    }
    assert {employee_persona(i, 0).name for i in range(5)} == {p.name for p in PERSONAS}


def test_nothing_but_a_suppressed_gap_is_kept_while_a_sensitive_app_is_in_front():
    for employee in range(5):
        events = generate_employee(employee, seed=3, hours=4)
        sensitive = False
        for event in events:
            if isinstance(event, Focus):
                sensitive = APPS[event.app_id].sensitive
            elif sensitive:
                assert isinstance(event, Suppressed | Paused | Resumed), event


def test_personas_behave_differently():
    def distribution(employee):
        tokens = featurize(generate_employee(employee, seed=5, hours=4), 8).target
        counts = Counter(tokens.tolist())
        return {t: c / len(tokens) for t, c in counts.items()}

    engineer, designer = distribution(0), distribution(1)
    shared = set(engineer) | set(designer)
    total_variation = 0.5 * sum(abs(engineer.get(t, 0) - designer.get(t, 0)) for t in shared)
    assert total_variation > 0.3


def test_context_beyond_the_previous_action_predicts_better_than_a_bigram():
    bigram_hits = context_hits = total = 0
    for employee in range(5):
        train, held = split_held_out(featurize(generate_employee(employee, 7), 8), 0.2)
        bigram = Bigram(train.context[:, -1], train.target)
        bigram_hits += bigram.accuracy(held.context[:, -1], held.target, 1) * len(held)
        table: dict[tuple[int, ...], Counter[int]] = {}
        for x, c, y in zip(
            train.context.tolist(), train.category.tolist(), train.target.tolist(), strict=True
        ):
            table.setdefault((c, *x[-3:]), Counter())[y] += 1
        for x, c, y in zip(
            held.context.tolist(), held.category.tolist(), held.target.tolist(), strict=True
        ):
            key = (c, *x[-3:])
            guess = (
                table[key].most_common(1)[0][0]
                if key in table
                else bigram.ranked.get(x[-1], bigram.fallback)[0]
            )
            context_hits += guess == y
        total += len(held)
    assert 0.3 < bigram_hits / total < 0.7
    assert context_hits / total > bigram_hits / total + 0.08
