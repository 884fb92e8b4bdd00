import torch

from client.learning.featurize import featurize, split_held_out
from policy.events import (
    AppCategory,
    Button,
    Click,
    Focus,
    Key,
    KeyClass,
    KeyRun,
    PointerMove,
    Scroll,
    Suppressed,
)
from policy.model import ModelConfig, NextActionPolicy, count_parameters, get_arrays, set_arrays
from policy.vocabulary import PAD_ID, TOKEN_ID, TOKENS, UNKNOWN_GAP, actions, gap_bucket


def test_typed_text_and_scroll_gestures_collapse_into_one_action_and_moves_are_dropped():
    events = [
        Focus(0, 0.0, "code", AppCategory.EDITOR),
        Key(1, 0.1, KeyClass.LETTER),
        Key(2, 0.2, KeyClass.LETTER),
        PointerMove(3, 0.3, 0.5, 0.5),
        Key(4, 0.4, KeyClass.LETTER),
        Key(5, 0.5, KeyClass.SPACE),
        Key(6, 0.55, KeyClass.DIGIT),
        Scroll(7, 0.56, 0.5, 0.5, -1),
        Scroll(8, 0.57, 0.5, 0.5, -1),
        Click(9, 0.6, 0.9, 0.1, Button.LEFT),
        Suppressed(10, 0.7, 30.0),
    ]
    tokens = [TOKENS[a.token] for a in actions(events)]
    assert tokens == [
        "switch:editor",
        "key:letter",
        "key:digit",
        "scroll:down",
        "click:left:02",
        "suppressed",
    ]


def test_key_runs_and_old_per_key_events_give_the_same_actions():
    old = [
        Focus(0, 0.0, "code", AppCategory.EDITOR),
        *(Key(i, i * 0.1, KeyClass.LETTER) for i in range(1, 6)),
        Key(6, 0.6, KeyClass.SPACE),
        Key(7, 0.7, KeyClass.LETTER),
        Key(8, 0.8, KeyClass.DIGIT),
        Click(9, 0.9, 0.9, 0.1, Button.LEFT),
        Key(10, 1.0, KeyClass.ENTER),
    ]
    runs = [
        Focus(0, 0.0, "code", AppCategory.EDITOR),
        KeyRun(1, 0.0, KeyClass.LETTER, 7, 1.0),
        KeyRun(2, 1.0, KeyClass.DIGIT, 1, 0.0),
        Click(3, 0.9, 0.9, 0.1, Button.LEFT),
        KeyRun(4, 1.0, KeyClass.ENTER, 1, 0.0),
    ]
    # the same actions; their times differ only as a run's start is rounded to the second
    assert [(a.token, a.category) for a in actions(old)] == [
        (a.token, a.category) for a in actions(runs)
    ]
    assert len(featurize(runs, 4)) == 4


def test_action_category_is_the_app_in_front_before_the_action():
    events = [Focus(0, 0.0, "code", AppCategory.EDITOR), Key(1, 0.1, KeyClass.LETTER)]
    first, second = actions(events)
    assert first.category == 0  # nothing in front yet
    assert second.category != 0


def test_windows_are_left_padded_and_target_the_next_action():
    events = [Key(i, float(i), [KeyClass.LETTER, KeyClass.DIGIT][i % 2]) for i in range(5)]
    examples = featurize(events, context_length=3)
    assert len(examples) == 4
    assert examples.context[0].tolist() == [PAD_ID, PAD_ID, TOKEN_ID["key:letter"]]
    assert examples.target[0] == TOKEN_ID["key:digit"]
    assert examples.context[3].tolist()[-1] == TOKEN_ID["key:digit"]


def test_windows_carry_the_gaps_between_context_actions_never_the_one_before_the_target():
    times = [0.0, 0.1, 5.0, 5.1, 600.0]
    events = [Key(i, t, [KeyClass.LETTER, KeyClass.DIGIT][i % 2]) for i, t in enumerate(times)]
    examples = featurize(events, context_length=3)
    # the first action's gap is unknown; padding is unknown too
    assert examples.gaps[0].tolist() == [UNKNOWN_GAP, UNKNOWN_GAP, UNKNOWN_GAP]
    assert examples.gaps[2].tolist() == [UNKNOWN_GAP, gap_bucket(0.1), gap_bucket(4.9)]
    # the ten-minute break before the last action is the target's gap: in no window
    assert gap_bucket(595.9) not in examples.gaps
    assert gap_bucket(0.1) < gap_bucket(4.9) < gap_bucket(595.9)
    assert split_held_out(examples, 0.5)[1].gaps.shape == (2, 3)


def test_a_configuration_written_before_gaps_existed_loads_the_model_it_described():
    legacy = {k: v for k, v in ModelConfig().to_dict().items() if not k.startswith("gap_")}
    old = NextActionPolicy(ModelConfig.from_dict(legacy))
    assert old.config.gap_dim == 0 and old.gap_embedding is None
    assert [n for n, _ in old.named_parameters()] == [
        "tokens.weight", "category.weight", "hidden.weight", "hidden.bias", "out.weight",
        "out.bias",
    ]  # fmt: skip
    assert ModelConfig.from_dict(ModelConfig().to_dict()) == ModelConfig()


def test_gaps_change_the_prediction_and_none_reads_as_unknown():
    torch.manual_seed(0)
    model = NextActionPolicy(ModelConfig(context_length=4))
    context, category = torch.ones((1, 4), dtype=torch.long), torch.zeros(1, dtype=torch.long)
    unknown = torch.full((1, 4), UNKNOWN_GAP)
    assert torch.equal(model(context, category), model(context, category, unknown))
    assert not torch.equal(model(context, category), model(context, category, unknown + 3))


def test_held_out_split_keeps_time_order():
    events = [Key(i, float(i), [KeyClass.LETTER, KeyClass.DIGIT][i % 2]) for i in range(101)]
    train, held = split_held_out(featurize(events, 4), 0.2)
    assert (len(train), len(held)) == (80, 20)


def test_policy_is_small_and_maps_contexts_to_vocabulary_logits():
    model = NextActionPolicy()
    assert count_parameters(model) < 1_000_000
    logits = model(torch.zeros((5, 8), dtype=torch.long), torch.zeros(5, dtype=torch.long))
    assert logits.shape == (5, len(TOKENS))


def test_set_arrays_refuses_a_wrong_shape():
    model = NextActionPolicy(ModelConfig())
    arrays = list(get_arrays(model).values())
    arrays[0] = arrays[0][:1]
    try:
        set_arrays(model, arrays)
    except ValueError as err:
        assert "shape" in str(err)
    else:
        raise AssertionError("a wrong shape was accepted")
