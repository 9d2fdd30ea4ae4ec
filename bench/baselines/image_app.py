"""Baseline: the bare image handler a person writes by hand around the same graph.

API Gateway proxy event -> the one image (base64 under "image" in a JSON body, or a raw body)
-> Pillow: decode, EXIF upright, RGB, bilinear resize to the graph's size -> session.run ->
JSON body. The same decode and resize as dropflow.vocabulary.pixels, the same session options
and providers as dropflow's (intra-op threads = the CPUs this process may use, one inter-op
thread, sequential; CUDA first where onnxruntime has it); no checks, no limits, no routing, no
logging. BENCH_MODEL_DIR holds model.onnx and
the version's card.json (its classes and the input's height and width).
"""

import base64
import io
import json
import os

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

MODEL_DIR = os.environ["BENCH_MODEL_DIR"]
with open(os.path.join(MODEL_DIR, "card.json")) as f:
    CARD = json.load(f)
SIZE = (CARD["input"]["width"], CARD["input"]["height"])
OPTIONS = ort.SessionOptions()
OPTIONS.intra_op_num_threads = len(os.sched_getaffinity(0))
OPTIONS.inter_op_num_threads = 1
OPTIONS.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
# The providers dropflow's sessions take: CUDA first where this onnxruntime has it.
CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
PROVIDERS = [*(["CUDAExecutionProvider"] if CUDA else []), "CPUExecutionProvider"]
SESSION = ort.InferenceSession(os.path.join(MODEL_DIR, "model.onnx"), OPTIONS, providers=PROVIDERS)


def lambda_handler(event, context):
    if event.get("isBase64Encoded"):
        data = base64.b64decode(event["body"])
    else:
        data = base64.b64decode(json.loads(event["body"])["instances"][0]["image"])
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    pixels = np.asarray(image.resize(SIZE, Image.Resampling.BILINEAR), dtype=np.uint8)
    (probabilities,) = SESSION.run(["probabilities"], {"input": pixels[None]})
    body = {
        "predictions": [CARD["classes"][i] for i in probabilities.argmax(axis=1)],
        "probabilities": probabilities.tolist(),
    }
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }
