"""The fine-tuning throughput benchmark (bench/finetune_throughput.py) with --tiny networks: it
trains every case it can through the job's loop (in this process, and under torchrun on two
CPU ranks), skips the CUDA cases with their reason where torch sees no GPU, and reports one
JSON line per case and a markdown table. What is checked is the report's shape, never a
throughput figure. Besides, without training: when the meter (the loop's stop check) starts
and stops timing, and the halving of a batch that does not fit the GPU."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import finetune_throughput
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


# --------------------------------------------------------------------------- the meter
def polls_until_stop(meter: finetune_throughput.Meter, most: int = 100) -> int:
    """How many step boundaries the loop passes before `meter` stops it (most: never)."""
    for poll in range(most):
        if meter():
            return poll
    return most


def test_the_meter_times_at_least_min_steps_after_min_warm_steps_then_stops() -> None:
    syncs: list[int] = []
    meter = finetune_throughput.Meter(
        warmup=0.0, seconds=0.0, deadline=float("inf"), sync=lambda: syncs.append(1)
    )
    stopped_at = polls_until_stop(meter)
    assert stopped_at == finetune_throughput.MIN_WARM_STEPS + MIN_STEPS
    assert meter.steps == MIN_STEPS and meter.elapsed >= 0
    assert len(syncs) == 2  # the GPU's queue drained when timing begins and when it ends


def test_the_meter_of_a_rank_other_than_0_never_stops_the_loop() -> None:
    meter = finetune_throughput.Meter(
        warmup=0.0, seconds=0.0, deadline=0.0, sync=lambda: None, active=False
    )
    assert polls_until_stop(meter) == 100 and meter.steps == 0


def test_a_budget_spent_during_the_warm_up_stops_the_loop_with_nothing_timed() -> None:
    meter = finetune_throughput.Meter(warmup=0.0, seconds=0.0, deadline=0.0, sync=lambda: None)
    assert polls_until_stop(meter) == 0 and meter.steps == 0


def test_a_batch_that_does_not_fit_is_halved_and_the_row_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried: list[int] = []

    def measure(case: Any, placement: Any, *, batch: int, **_: Any) -> dict[str, Any]:
        tried.append(batch)
        if batch > 8:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return {"batch": batch, "status": "measured"}

    # The GPU's allocator cannot be made to run out here: the measurement is replaced.
    monkeypatch.setattr(finetune_throughput, "measure", measure)
    case = finetune_throughput.Case(finetune_throughput.TINY["bert-tiny"], "cpu", "fp32")
    big = dataclasses.replace(case, workload=dataclasses.replace(case.workload, cpu_batch=32))
    result = finetune_throughput.run_in_process(
        big, None, warmup=0.0, seconds=0.0, deadline=float("inf")
    )
    assert tried == [32, 16, 8]
    assert result["batch"] == 8
    assert result["reason"] == "batch 32 did not fit the GPU's memory"
