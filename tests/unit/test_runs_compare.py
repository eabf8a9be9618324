"""`mlops runs compare`: every metric of either version, the delta, and better or worse by its goal."""

from __future__ import annotations

from infra.cli.runs import compare_rows


def test_each_metric_is_judged_by_its_own_goal():
    rows = {
        row[0]: row
        for row in compare_rows(
            {"test_accuracy": 0.91, "test_loss": 0.30, "best_val_accuracy": 0.9},
            {"test_accuracy": 0.89, "test_loss": 0.25, "best_val_accuracy": 0.9, "old_metric": 1.0},
        )
    }
    assert rows["test_accuracy"][3:] == ("+0.0200", "better")
    assert rows["test_loss"][3:] == ("+0.0500", "worse")  # lower is better
    assert rows["best_val_accuracy"][4] == "same"
    assert rows["old_metric"][1:] == ("", "1.0000", "", "")  # only one side has it: shown, not judged
