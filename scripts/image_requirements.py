"""The pins one image installs: `python image_requirements.py train|serve` in a Dockerfile's deps stage.

Reads pyproject.toml (next to it in the build stage): the distribution names listed for the image in
[tool.mlops.images], each with its pin from [project].dependencies, so an image installs only what its
program imports, at the versions CI tests. Writes torch.txt (torch and torchvision, installed from the
image's TORCH_INDEX_URL) and requirements.txt (the rest, from PyPI, constrained by torch.txt so pip
cannot swap torch). A listed name without a pin fails the build. Standard library only: it runs before
anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

TORCH = ("torch", "torchvision")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def select(pyproject: dict, image: str) -> tuple[list[str], list[str]]:
    pins = {normalise(re.match(r"[A-Za-z0-9._-]+", r)[0]): r for r in pyproject["project"]["dependencies"]}
    images = pyproject["tool"]["mlops"]["images"]
    if image not in images:
        raise SystemExit(f"no image {image!r} in [tool.mlops.images]; known: {', '.join(images)}")
    wanted = [normalise(name) for name in images[image]]
    missing = [name for name in wanted if name not in pins]
    if missing:
        raise SystemExit(f"not pinned in [project].dependencies: {missing}")
    return [pins[n] for n in wanted if n in TORCH], [pins[n] for n in wanted if n not in TORCH]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit("usage: image_requirements.py train|serve")
    with Path("pyproject.toml").open("rb") as fh:
        torch, rest = select(tomllib.load(fh), argv[0])
    Path("torch.txt").write_text("\n".join(torch) + "\n")
    Path("requirements.txt").write_text("\n".join(rest) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
