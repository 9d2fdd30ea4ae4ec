"""`dropflow demo`: the whole loop once, on a real public dataset, then exit.

Default data: the Breast Cancer Wisconsin (Diagnostic) dataset (W. H. Wolberg, W. N. Street,
O. L. Mangasarian, UCI Machine Learning Repository), 569 tumours x 30 features, as shipped
inside scikit-learn (so the demo needs no network). The demo drops it into a local bucket,
lets the local runtime train, export, check and promote a model, then asks the HTTP API for
predictions on 127.0.0.1, exactly as a client would.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from dropflow.vocabulary.target import TARGET_NAMES

DEFAULT_MODEL = "breast-cancer"
DEFAULT_TARGET = "diagnosis"


def breast_cancer_csv() -> bytes:
    """The dataset as CSV with its 30 named features and a `diagnosis` of malignant/benign."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    labels = load_breast_cancer().target_names  # index 0 = malignant, 1 = benign
    frame[DEFAULT_TARGET] = [str(labels[i]) for i in frame.pop("target")]
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def model_name_for(path: Path) -> str:
    """A valid model name from a file name: 'My Data_v2.csv' -> 'my-data-v2'."""
    name = re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-")[:63]
    return name or "dataset"


def _http(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST" if data else "GET",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _examples(table: list[dict[str, str]], target: str, count: int = 4) -> list[dict[str, str]]:
    """A few rows showing as many different target values as there are, in file order."""
    picked: list[dict[str, str]] = []
    for row in table:
        if row[target] not in {p[target] for p in picked}:
            picked.append(row)
        if len(picked) == count:
            return picked
    return picked + [r for r in table if r not in picked][: count - len(picked)]


def _instance(row: dict[str, str], features: list[dict[str, Any]]) -> list[Any]:
    """A CSV row as the API takes it: numbers as numbers, categories as their raw text,
    empty cells as null."""
    values: list[Any] = []
    for feature in features:
        cell = row[feature["name"]].strip()
        if cell == "":
            values.append(None)
        elif feature.get("dtype") == "category":
            values.append(cell)
        else:
            values.append(float(cell))
    return values


def column_to_predict(data: Path, content: bytes, target: str | None) -> str:
    """The column of the CSV file `data` (its bytes: `content`) that the demo trains to
    predict: `target` (--target) when given, else the one column the training job would take
    (named target, label, class or y, in any case).

    Raises ValueError with what to type instead: the file's columns, and --target, never the
    dropflow.yaml the demo writes itself."""
    first = content.decode("utf-8-sig", errors="replace").splitlines()[:1]
    columns = [name.strip() for name in next(csv.reader(first), [])]
    listed = ", ".join(columns) or "none (is the first line a header?)"
    if target is not None:
        if target not in columns:
            raise ValueError(f"column {target!r} is not in {data}; its columns are: {listed}")
        return target
    named = [c for c in columns if c.lower() in TARGET_NAMES]
    if len(named) == 1:
        return named[0]
    if named:
        raise ValueError(
            f"{data} has several columns that could be the one to predict "
            f"({', '.join(named)}); choose with --target, e.g. --target {named[0]}"
        )
    raise ValueError(
        f"which column of {data} to predict is not known: none is named "
        f"{', '.join(TARGET_NAMES[:-1])} or {TARGET_NAMES[-1]}; its columns are: {listed}. "
        "Name it with --target COLUMN"
    )


def run_demo(data: Path | None, target: str | None, home: Path | None, timeout: float) -> int:
    """Run the loop once; 0 when a prediction came back over HTTP, 1 when the job failed,
    2 when --target names no column of --data (or none can be told without it)."""
    if home is None:
        with tempfile.TemporaryDirectory(prefix="dropflow-demo-") as tmp:
            return _run(data, target, Path(tmp), timeout)
    return _run(data, target, home, timeout)


def _run(data: Path | None, target: str | None, home: Path, timeout: float) -> int:
    from dropflow import wiring
    from dropflow_dev.local.runtime import LocalRuntime

    if data is None:
        model, filename, content, target = (
            DEFAULT_MODEL,
            "data.csv",
            breast_cancer_csv(),
            DEFAULT_TARGET,
        )
        predicted = DEFAULT_TARGET
        print("dataset: Breast Cancer Wisconsin (Diagnostic), UCI, via scikit-learn: 569 rows")
    else:
        model, filename, content = model_name_for(data), data.name, data.read_bytes()
        try:
            predicted = column_to_predict(data, content, target)
        except ValueError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 2
        print(f"dataset: {data} ({len(content)} bytes) -> model {model}, predicting {predicted}")

    runtime = LocalRuntime(home, port=0, poll_seconds=0.2, settle_seconds=0.3, say=print)
    runtime.start()
    try:
        store = wiring.store()
        if target:
            store.put(f"datasets/{model}/dropflow.yaml", f"target: {json.dumps(target)}\n".encode())
        store.put(f"datasets/{model}/{filename}", content)
        deadline = time.monotonic() + timeout
        champion = None
        while time.monotonic() < deadline:
            runtime.tick()
            champion = wiring.catalog().champion(model)
            if champion is not None:
                break
            jobs = wiring.jobs().for_model(model)
            if jobs and all(j.state.terminal for j in jobs) and jobs[-1].state.value == "failed":
                print(f"demo: the training job failed: {jobs[-1].reason}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        if champion is None:
            print(f"demo: no model was promoted within {timeout:.0f} s", file=sys.stderr)
            return 1

        card = _http(f"{runtime.url}/models/{model}")
        print(f"\nmodel {model} version {champion.version} ({card.get('task')})")
        metrics = card.get("metrics", {})
        for name, value in (metrics.get("holdout") or {}).items():
            baseline = (metrics.get("baseline") or {}).get(name)
            extra = f"   (naive baseline {baseline:.4f})" if baseline is not None else ""
            print(f"  holdout {name:<10} {value:.4f}{extra}")

        table = list(csv.DictReader(io.StringIO(content.decode())))
        rows = _examples(table, predicted)
        instances = [_instance(row, card["features"]) for row in rows]
        url = f"{runtime.url}/models/{model}/predict"
        answer = _http(url, {"instances": instances})
        print(f"\nPOST {url}")
        for row, label in zip(rows, answer["predictions"], strict=True):
            print(f"  predicted {label!s:<12} actual {row[predicted]}")
        print(f"served by {answer.get('served_by')}, version {answer.get('version')}")
        return 0
    finally:
        runtime.stop()
