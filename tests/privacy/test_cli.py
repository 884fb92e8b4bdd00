import json

import pytest
from typer.testing import CliRunner

from privacy.accountants import epsilon_local, epsilon_per_action, epsilon_user
from privacy.cli import app
from privacy.policy import default_policy_text, load_policy, policy_hash
from server.checkpoints import save_checkpoint

runner = CliRunner()


def test_check_prints_the_policy_in_plain_words(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(default_policy_text())
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 0
    assert "Policy hash" in result.output


def test_check_refuses_a_bad_policy_with_one_line(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(default_policy_text().replace("delta = 1e-5", "delta = 5"))
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 1
    assert "'privacy.delta'" in result.output


def _plan_local(*args):
    result = runner.invoke(app, ["plan", "local", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_plan_local_spends_the_policys_round_shape_and_its_evaluations(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text(
        default_policy_text()
        .replace("sample_rate = 0.25", "sample_rate = 0.1")
        .replace("steps = 8", "steps = 20")
        .replace("evaluation_noise_multiplier = 8.0", "evaluation_noise_multiplier = 5.0")
    )
    plan = _plan_local("--policy", str(policy), "--rounds", "3", "--noise", "2.0")
    history = [(2.0, 0.1, 60), (5.0, 1.0, 3)]  # 3 rounds of 20 steps, one evaluation each
    assert plan["epsilon"] == pytest.approx(epsilon_local(history, 1e-5))
    assert plan["epsilon_per_action"] == pytest.approx(epsilon_per_action(history, 1e-5, 8))
    assert (plan["sample_rate"], plan["steps"], plan["evaluations"]) == (0.1, 20, 1)


def test_plan_local_counts_each_evaluation_release():
    once = _plan_local("--rounds", "5", "--noise", "2.0")
    thrice = _plan_local("--rounds", "5", "--noise", "2.0", "--evaluations", "3")
    none = _plan_local("--rounds", "5", "--noise", "2.0", "--evaluations", "0")
    assert none["epsilon"] < once["epsilon"] < thrice["epsilon"]


def test_plan_local_defaults_to_the_policys_noise_and_delta():
    plan = _plan_local("--rounds", "2")
    policy = load_policy()
    assert plan["noise_multiplier"] == policy.training.local_noise_multiplier
    assert plan["delta"] == policy.privacy.delta


def test_plan_local_finds_the_noise_for_a_target_and_says_its_units():
    plan = _plan_local("--rounds", "10", "--target-epsilon", "8")
    assert plan["epsilon"] <= 8.0
    forward = _plan_local("--rounds", "10", "--noise", str(plan["noise_multiplier"] - 0.01))
    assert forward["epsilon"] > 8.0
    assert plan["epsilon_per_action"] >= plan["epsilon"]
    assert plan["unit"] == "one example on one device"
    assert plan["adjacency"].startswith("add/remove one example")
    assert "9 examples" in plan["unit_per_action"]


def test_plan_local_table_names_units_delta_and_adjacency():
    result = runner.invoke(app, ["plan", "local", "--rounds", "2", "--noise", "2.0"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "one example on one device" in text and "one recorded action" in text
    assert "add/remove one example" in text and "delta 1e-05" in text


def test_plan_local_refuses_a_delta_not_below_a_tenth_of_one_over_the_examples():
    result = runner.invoke(app, ["plan", "local", "--rounds", "2", "--examples", "20000"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "hearth-privacy: delta 1e-05 must be below 1/(10 x --examples) = 5e-06"
    ]
    assert (
        runner.invoke(app, ["plan", "local", "--rounds", "2", "--examples", "9999"]).exit_code == 0
    )


def test_plan_user_table_shows_accountants_side_by_side():
    result = runner.invoke(
        app,
        [
            "plan",
            "user",
            "--population",
            "1000",
            "--cohort",
            "50",
            "--rounds",
            "20",
            "--delta",
            "1e-5",
            "--noise",
            "1.0",
        ],
    )
    assert result.exit_code == 0
    assert "rdp" in result.output and "pld" in result.output
    text = " ".join(result.output.split())
    assert "add/remove one user" in text and "facing the server" in text


def test_plan_user_faces_the_server_without_sampling_amplification():
    args = ["plan", "user", "--population", "1000", "--cohort", "50", "--rounds", "20"]
    result = runner.invoke(
        app, [*args, "--delta", "1e-5", "--noise", "1.0", "--joined", "4", "--json"]
    )
    plan = json.loads(result.output)
    assert plan["epsilon"] == pytest.approx(epsilon_user(1.0, 0.05, 20, 1e-5))
    assert plan["epsilon_vs_server"] == pytest.approx(epsilon_user(1.0, 1.0, 4, 1e-5))
    assert plan["epsilon_vs_server"] > plan["epsilon"]
    assert plan["adjacency"].startswith("add/remove one user")


def test_plan_needs_exactly_one_direction():
    result = runner.invoke(
        app,
        ["plan", "user", "--population", "10", "--cohort", "5", "--rounds", "2", "--delta", "1e-5"],
    )
    assert result.exit_code == 1


def _sidecar(directory, server_round, **fields):
    save_checkpoint(directory, server_round, [], [], {"delta": 1e-5, "policy_hash": "h1", **fields})


def test_audit_reads_older_sidecars_with_the_epsilon_devices_reported(tmp_path):
    for r, eps in ((1, 1.5), (2, 2.5)):
        _sidecar(tmp_path, r, cohort_size=4, epsilon_local_max=eps, epsilon_user=None)
    report = json.loads(runner.invoke(app, ["audit", str(tmp_path), "--json"]).output)
    assert report["epsilon_local_max"] == 2.5
    assert report["epsilon_example_cap"] is None
    assert report["policy_hashes"] == ["h1"]
    assert len(report["rounds"]) == 2
    text = " ".join(runner.invoke(app, ["audit", str(tmp_path)]).output.split())
    assert "older sidecar" in text and "not recorded" in text


def _new_campaign(directory, user, vs_server):
    for r in (1, 2):
        _sidecar(
            directory,
            r,
            cohort_size=5,
            epsilon_example_cap=10.0,
            epsilon_user=user and user * r,
            epsilon_user_vs_server=vs_server and vs_server * r,
            adjacency="add/remove one user" if user else "add/remove one example",
        )


def test_audit_says_the_example_cap_is_enforced_on_devices_and_no_user_guarantee(tmp_path):
    _new_campaign(tmp_path, user=None, vs_server=None)
    result = runner.invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "at most epsilon 10, enforced on each device" in text
    assert "facing readers of the model and checkpoints" in text
    assert "facing the server" in text
    assert text.count(": none.") == 2  # neither user-level figure exists
    assert "one example on one device" in text and "add/remove one example" in text
    assert "delta 1e-05" in text


def test_audit_json_totals_both_user_level_figures_with_their_units(tmp_path):
    _new_campaign(tmp_path, user=1.5, vs_server=4.0)
    report = json.loads(runner.invoke(app, ["audit", str(tmp_path), "--json"]).output)
    assert report["epsilon_example_cap"] == 10.0
    assert (report["epsilon_user"], report["epsilon_user_vs_server"]) == (3.0, 8.0)
    assert report["rounds"][0]["epsilon_user_vs_server"] == 4.0
    assert report["adjacency"] == ["add/remove one user"]
    assert report["figures"]["epsilon_user"]["unit"] == "one user across the campaign"
    assert "no sampling" in report["figures"]["epsilon_user_vs_server"]["adjacency"]


def test_audit_of_a_directory_without_sidecars_is_one_clear_line(tmp_path):
    result = runner.invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith("hearth-privacy: no round sidecars")


def test_audit_says_per_example_over_the_days_the_campaigns_policy_keeps_it(tmp_path):
    hashed = policy_hash(load_policy())
    for r in (1, 2):
        save_checkpoint(
            tmp_path,
            r,
            [],
            [],
            {"delta": 1e-5, "policy_hash": hashed, "epsilon_example_cap": 10.0, "cohort_size": 3},
        )
    text = " ".join(runner.invoke(app, ["audit", str(tmp_path)]).output.split())
    assert "per example, over the 14 days it is kept: at most epsilon 10" in text
    assert "per day of data are on each device" in text
    assert (
        json.loads(runner.invoke(app, ["audit", str(tmp_path), "--json"]).output)["retention_days"]
        == 14
    )
    other = tmp_path / "other"
    _new_campaign(other, user=None, vs_server=None)  # run under another policy ("h1")
    text = " ".join(runner.invoke(app, ["audit", str(other)]).output.split())
    assert "over the days the campaign's policy keeps it" in text


def test_plan_local_says_per_example_over_the_days_it_is_kept():
    text = " ".join(runner.invoke(app, ["plan", "local", "--rounds", "3"]).output.split())
    assert "over the 14 days it is kept" in text and "plan --rounds 3" in text
