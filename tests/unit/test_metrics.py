"""One table of metrics drives the printed lines, their parsing and SageMaker's MetricDefinitions."""

import re

from train.metrics import (
    METRICS,
    format_epoch_line,
    format_final_line,
    parse_epoch,
    parse_line,
    sagemaker_metric_definitions,
)


def test_epoch_line_round_trips():
    line = format_epoch_line(3, 10, {"train_loss": 0.41, "val_accuracy": 0.87, "lr": 0.0001234})
    assert line.startswith("epoch=3 epochs=10 ")
    assert parse_epoch(line) == (3, 10)
    assert parse_line(line) == {"train_loss": 0.41, "val_accuracy": 0.87, "lr": 0.0001234}


def test_final_line_round_trips_and_is_not_an_epoch_line():
    line = format_final_line({"test_accuracy": 0.9125, "test_loss": 0.25})
    assert parse_epoch(line) is None
    assert parse_line(line) == {"test_accuracy": 0.9125, "test_loss": 0.25}


def test_similar_keys_do_not_capture_each_other():
    assert parse_line("best_val_accuracy=0.9 val_accuracy=0.8") == {
        "best_val_accuracy": 0.9,
        "val_accuracy": 0.8,
    }


def test_sagemaker_definitions_match_the_printed_lines():
    line = format_epoch_line(1, 2, {"train_loss": 1.5, "val_loss": 1.25, "val_accuracy": 0.5})
    line += " " + format_final_line({"test_accuracy": 0.75})
    definitions = sagemaker_metric_definitions()
    assert len(definitions) == len(METRICS)
    found = {d["Name"]: float(m.group(1)) for d in definitions if (m := re.search(d["Regex"], line))}
    assert found == {
        "train:loss": 1.5,
        "validation:loss": 1.25,
        "validation:accuracy": 0.5,
        "test:accuracy": 0.75,
    }
