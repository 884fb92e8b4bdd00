import json

from typer.testing import CliRunner

from privacy.cli import app
from privacy.policy import default_policy_text
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


def test_plan_local_json_both_directions():
    args = [
        "plan",
        "local",
        "--examples",
        "5000",
        "--batch-size",
        "100",
        "--epochs",
        "3",
        "--delta",
        "1e-5",
        "--json",
    ]
    forward = json.loads(runner.invoke(app, [*args, "--noise", "1.0"]).output)
    back = json.loads(
        runner.invoke(app, [*args, "--target-epsilon", str(forward["epsilon"])]).output
    )
    assert {"epsilon", "delta", "noise_multiplier", "unit"} <= set(forward)
    assert back["noise_multiplier"] == __import__("pytest").approx(1.0, abs=0.01)


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


def test_plan_needs_exactly_one_direction():
    result = runner.invoke(
        app,
        ["plan", "user", "--population", "10", "--cohort", "5", "--rounds", "2", "--delta", "1e-5"],
    )
    assert result.exit_code == 1


def test_audit_totals_a_campaign(tmp_path):
    for r, eps in ((1, 1.5), (2, 2.5)):
        save_checkpoint(
            tmp_path,
            r,
            [],
            [],
            {
                "cohort_size": 4,
                "epsilon_local_max": eps,
                "epsilon_user": None,
                "delta": 1e-5,
                "policy_hash": "h1",
            },
        )
    report = json.loads(runner.invoke(app, ["audit", str(tmp_path), "--json"]).output)
    assert report["epsilon_local_max"] == 2.5
    assert report["policy_hashes"] == ["h1"]
    assert len(report["rounds"]) == 2
