"""TorchServe handler for the benchmark: our classifier artifact, served the way `serve/` serves it.

Packaged by tests/benchmarks/torchserve.py into a .mar with `architectures.py` (a copy of
artifact/architectures.py), `manifest.json` (classes, input size, mean/std), `bench.json` (torch
threads) and the weights as a plain state dict (`weights.pt`, loaded with weights_only=True). Runs in
TorchServe's own environment, which does not have this project installed.

One call gets TorchServe's batch (up to its batch_size requests): each body is a PNG/JPEG; the same
preprocessing as serve/predictor.py (RGB, bilinear resize to the input size, /255, mean/std), one
forward pass for the whole batch, and per request `{"predictions": [{"top_k": [...]}]}`.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

TOP_K = 5


class ClassifierHandler:
    def __init__(self) -> None:
        self.initialized = False

    def initialize(self, context: Any) -> None:
        import torch

        model_dir = Path(context.system_properties["model_dir"])
        sys.path.insert(0, str(model_dir))
        from architectures import build  # the .mar's copy of artifact/architectures.py

        settings = json.loads((model_dir / "bench.json").read_text())
        if settings.get("threads"):
            torch.set_num_threads(int(settings["threads"]))
        manifest = json.loads((model_dir / "manifest.json").read_text())
        self.classes = list(manifest["classes"])
        self.size = int(manifest["input_size"])
        self.mean = torch.tensor(manifest["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(manifest["std"], dtype=torch.float32).view(1, 3, 1, 1)
        model = build(manifest["architecture"], len(self.classes))
        model.load_state_dict(torch.load(model_dir / "weights.pt", weights_only=True), strict=True)
        self.model = model.eval()
        self.top_k = min(TOP_K, len(self.classes))
        with torch.inference_mode():  # the first pass builds the kernels; no request should pay for it
            self.model(torch.zeros(1, 3, self.size, self.size))
        self.initialized = True

    def _pixels(self, body: bytes) -> Any:
        import numpy as np
        from PIL import Image

        with Image.open(io.BytesIO(body)) as image:
            rgb = image.convert("RGB")
            if rgb.size != (self.size, self.size):
                rgb = rgb.resize((self.size, self.size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        import numpy as np
        import torch

        bodies = [row.get("data") or row.get("body") or b"" for row in data]
        batch = torch.from_numpy(np.stack([self._pixels(bytes(b)) for b in bodies]))
        with torch.inference_mode():
            x = batch.permute(0, 3, 1, 2).float().div_(255).sub_(self.mean).div_(self.std)
            values, indices = torch.softmax(self.model(x), dim=1).topk(self.top_k, dim=1)
        return [
            {
                "predictions": [
                    {
                        "top_k": [
                            {"label": self.classes[i], "probability": round(p, 6)}
                            for i, p in zip(row_i, row_p, strict=True)
                        ]
                    }
                ]
            }
            for row_i, row_p in zip(indices.tolist(), values.tolist(), strict=True)
        ]
