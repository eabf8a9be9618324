"""The optimiser's parameter groups: the classifier at a fraction of the rate, the body at the full rate."""

import pytest

from artifact.architectures import ARCHITECTURES, build
from train.config import TrainConfig
from train.engine import build_optimizer, classifier


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_classifier_trains_at_head_lr_scale_times_the_rate(arch, optimizer):
    model = build(arch, 10)
    config = TrainConfig(arch=arch, optimizer=optimizer, learning_rate=0.2, head_lr_scale=0.1)
    groups = build_optimizer(model, config).param_groups
    head = {id(p) for p in classifier(model).parameters()}

    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    for group in groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1
        assert group["lr"] == pytest.approx(0.02 if in_head == {True} else 0.2)
    assert groups[0]["lr"] == 0.2 and groups[0]["weight_decay"] == config.weight_decay  # the logged `lr`


def test_norms_and_biases_are_not_decayed():
    model = build("resnet18", 10)
    for group in build_optimizer(model, TrainConfig()).param_groups:
        assert group["weight_decay"] == (0.0 if all(p.ndim <= 1 for p in group["params"]) else 5e-4)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_classifier_is_the_layer_that_produces_the_logits(arch):
    assert classifier(build(arch, 7)).out_features == 7
