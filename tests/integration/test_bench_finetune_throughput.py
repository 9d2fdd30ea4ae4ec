"""The fine-tuning throughput benchmark (bench/finetune_throughput.py) with --tiny networks: it
trains every case it can through the job's loop (in this process, and under torchrun on two
CPU ranks), skips the CUDA cases with their reason where torch sees no GPU, and reports one
JSON line per case and a markdown table. What is checked is the report's shape, never a
throughput figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.finetune_throughput import MIN_STEPS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "finetune_throughput.py"
# Generous: two torchrun launches (two interpreters importing torch each) on a busy machine.
BUDGET = 240
TIMEOUT = 420


@pytest.fixture(scope="module")
def report() -> tuple[list[dict[str, Any]], str, int]:
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tiny",
            "--budget",
            str(BUDGET),
            "--seconds",
            "0.3",
            "--warmup",
            "0.1",
            "--cpu-ranks",
            "2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    lines = done.stdout.splitlines()
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    tables = "\n".join(line for line in lines if line.startswith("|"))
    assert rows, done.stdout + done.stderr
    return rows, tables, done.returncode


def test_every_case_is_reported_once_and_the_run_exits_0(
    report: tuple[list[dict[str, Any]], str, int],
) -> None:
    rows, _, code = report
    assert code == 0, [r for r in rows if r["status"] == "failed"]
    keys = [(r["workload"], r["device"], r["precision"], r["ranks"]) for r in rows]
    assert len(keys) == len(set(keys))
    for workload in ("resnet-tiny", "bert-tiny"):
        assert {(k[1], k[2]) for k in keys if k[0] == workload and k[3] == 1} == {
            ("cuda", "bf16"),
            ("cuda", "fp32"),
            ("cpu", "fp32"),
            ("cpu", "bf16"),
        }
        assert (workload, "cpu", "fp32", 2) in keys  # --cpu-ranks 2
        assert any(k[0] == workload and k[1] == "cuda" and k[3] > 1 for k in keys)


def test_cpu_cases_are_measured_with_the_throughputs_of_their_family(
    report: tuple[list[dict[str, Any]], str, int],
) -> None:
    rows, _, _ = report
    cpu = [r for r in rows if r["device"] == "cpu"]
    assert len(cpu) == 6
    for row in cpu:
        assert row["status"] == "measured", row
        assert row["steps"] >= MIN_STEPS and row["seconds"] > 0
        assert row["samples_per_s"] > 0 and row["batch"] == 8
        assert row["threads"] == 1  # the job's CPU training (training.loop.reproducible)
        if row["family"] == "image":
            assert row["images_per_s"] == row["samples_per_s"]
            assert "tokens_per_s" not in row
        else:
            # Real tokens are fewer than the padded positions the encoder computes.
            assert 0 < row["tokens_per_s"] < row["padded_tokens_per_s"]
            assert row["padded_tokens_per_s"] == pytest.approx(row["samples_per_s"] * 16, 1e-3)
            assert "images_per_s" not in row


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report without a GPU")
def test_without_a_gpu_the_cuda_cases_are_skipped_naming_why(
    report: tuple[list[dict[str, Any]], str, int],
) -> None:
    rows, _, _ = report
    cuda = [r for r in rows if r["device"] == "cuda"]
    assert len(cuda) == 6
    for row in cuda:
        assert row["status"] == "skipped"
        assert "no GPU" in row["reason"]
        assert "samples_per_s" not in row


def test_the_table_has_a_row_per_case_with_its_figures(
    report: tuple[list[dict[str, Any]], str, int],
) -> None:
    rows, tables, _ = report
    header, rule, *body = tables.splitlines()
    assert "images/s" in header and "tokens/s (non-pad)" in header
    assert rule.count("---") == header.count("|") - 1
    assert len(body) == len(rows)
    for line, row in zip(body, rows, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row["workload"] and cells[2] == str(row["ranks"])
        if row["status"] == "measured":
            shown = float(cells[5].replace(",", ""))
            assert shown == pytest.approx(row["samples_per_s"], abs=0.06)
        else:
            assert cells[-1].startswith("skipped: ")
