"""Baseline: the bare text handler a person writes by hand around the same graph.

API Gateway proxy event body JSON -> the strings -> the version's tokenizer.json (Hugging Face
`tokenizers`, loaded once; truncated and padded to the card's max_length with its pad_id) ->
int64 ids -> session.run -> JSON body. The same session options and providers as dropflow's
(intra-op threads = the CPUs this process may use, one inter-op thread, sequential; CUDA first
where onnxruntime has it); no checks, no routing, no logging. BENCH_MODEL_DIR holds
model.onnx, tokenizer.json and the version's card.json (its classes and the input's max_length
and pad_id).
"""

import json
import os

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MODEL_DIR = os.environ["BENCH_MODEL_DIR"]
with open(os.path.join(MODEL_DIR, "card.json")) as f:
    CARD = json.load(f)
LENGTH, PAD_ID = CARD["input"]["max_length"], CARD["input"]["pad_id"]
TOKENIZER = Tokenizer.from_file(os.path.join(MODEL_DIR, "tokenizer.json"))
TOKENIZER.enable_truncation(LENGTH)
TOKENIZER.enable_padding(
    length=LENGTH, pad_id=PAD_ID, pad_token=TOKENIZER.id_to_token(PAD_ID) or "[PAD]"
)
OPTIONS = ort.SessionOptions()
OPTIONS.intra_op_num_threads = len(os.sched_getaffinity(0))
OPTIONS.inter_op_num_threads = 1
OPTIONS.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
# The providers dropflow's sessions take: CUDA first where this onnxruntime has it.
CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
PROVIDERS = [*(["CUDAExecutionProvider"] if CUDA else []), "CPUExecutionProvider"]
SESSION = ort.InferenceSession(os.path.join(MODEL_DIR, "model.onnx"), OPTIONS, providers=PROVIDERS)


def lambda_handler(event, context):
    texts = json.loads(event["body"])["instances"]
    ids = np.array([e.ids for e in TOKENIZER.encode_batch(texts)], dtype=np.int64)
    (probabilities,) = SESSION.run(["probabilities"], {"input": ids})
    body = {
        "predictions": [CARD["classes"][i] for i in probabilities.argmax(axis=1)],
        "probabilities": probabilities.tolist(),
    }
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }
