"""The round table's footer says what the recorded row says, facing readers and the server."""

from __future__ import annotations

from server.report import round_table


def _row(vs_server: float | None) -> dict[str, object]:
    return {
        "round": 1,
        "fit": {"clients_trained": 900},
        "evaluate": {"top1": 0.5, "top3": 0.7, "loss": 2.0},
        "epsilon_example_cap": 10.0,
        "delta": 1e-5,
        "epsilon_user": 0.2,
        "epsilon_user_vs_server": vs_server,
        "epsilon_user_unit": "one user, every campaign within 365 days",
    }


def test_distributed_noise_gives_a_figure_facing_the_server() -> None:
    text = " ".join(round_table([_row(0.61)]).split())
    assert "one user, every campaign within 365 days" in text
    assert "facing the server, which saw only SecAgg+ sums" in text
    assert "epsilon 0.61" in text
    assert "no user-level figure holds" not in text


def test_without_it_no_figure_holds_facing_the_server() -> None:
    text = " ".join(round_table([_row(None)]).split())
    assert "no user-level figure holds (epsilon_user_vs_server: none)" in text
