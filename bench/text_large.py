"""A BERT-base-sized text model exports, passes parity and is routed to the container tier.

    python bench/text_large.py [--max-length 128] [--out DIR]

Builds the text family's network (training.families.text) with `size: base`, BERT-base's
shape (12 layers, 768 wide, a 30,522-token vocabulary: about 110M parameters), random
weights as a job with `pretrained: false` starts from, exports it as the job does (one ONNX
file, int64 ids [batch, max_length], dynamic batch axis), runs the job's parity check on a
few rows, and asks promotion's routing (dropflow.vocabulary.routing.decide_route, the rule
promotion.gate.route_for applies to a version's model.onnx) where such a file is served.
Prints the parameter count, the file's size, the times and the route as one JSON line, and
exits 1 unless the route is `container` and parity passed.

Why a script and not a test: on the 2-core test machine the export alone takes tens of
seconds and the file is about 440 MB, more than a test should write on every run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dropflow.vocabulary.routing import CONTAINER, decide_route
from training.export import check_parity
from training.families.text import SIZES, TextNetwork, export_text_onnx, text_encoder

ROWS = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None, help="keep model.onnx in this folder")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    started = time.perf_counter()
    encoder = text_encoder(
        "base", vocab_size=SIZES["base"].vocabulary, max_length=args.max_length, pad_id=0
    )
    network = TextNetwork("classification", encoder, n_outputs=2, pad_id=0, dropout=0.1).eval()
    parameters = sum(p.numel() for p in network.parameters())
    built = time.perf_counter()
    rng = np.random.default_rng(0)
    ids = rng.integers(5, SIZES["base"].vocabulary, size=(ROWS, args.max_length), dtype=np.int64)
    ids[:, 0], ids[1:, args.max_length // 2 :] = 2, 0  # [CLS] first; rows padded half way

    with tempfile.TemporaryDirectory(prefix="dropflow-bench-") as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = export_text_onnx(network, ids, folder / "model.onnx")
        exported = time.perf_counter()
        parity, _ = check_parity(path, network, ids)
        checked = time.perf_counter()
        size = path.stat().st_size
    decision = decide_route(size)
    report = {
        "parameters": parameters,
        "model_bytes": size,
        "model_mb": round(size / 2**20, 1),
        "max_length": args.max_length,
        "build_seconds": round(built - started, 1),
        "export_seconds": round(exported - built, 1),
        "parity_seconds": round(checked - exported, 1),
        "parity_max_abs_diff": parity.max_abs_diff,
        "route": decision.route,
        "route_reason": decision.reason,
    }
    print(json.dumps(report))
    return 0 if decision.route == CONTAINER and parity.passed else 1


if __name__ == "__main__":
    sys.exit(main())
