"""The large-model route carried by a real model (issue 14): a BERT-base-sized text network
(bench/text_large.py) exports to one ONNX file of about 414 MiB that passes parity, and
promotion's routing sends a file of that size to the container tier.

About 30 s on the 2-core test machine (build 4 s, export 12 s, parity 9 s): marked slow.
"""

from __future__ import annotations

import json

import pytest

from bench import text_large


@pytest.mark.slow
def test_a_bert_base_sized_text_model_exports_and_is_routed_to_the_container_tier(capsys):
    assert text_large.main(["--max-length", "128"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["parameters"] > 100_000_000
    assert report["model_mb"] > 400
    assert report["parity_max_abs_diff"] < 1e-4
    assert report["route"] == "container"
    assert "larger than the 200 MB the predict function takes" in report["route_reason"]
