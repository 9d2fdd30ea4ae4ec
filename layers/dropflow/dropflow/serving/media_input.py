"""The inputs of image and text models (a card with `input`, dropflow.vocabulary.card.InputSpec):
what a client sends, checked and turned into the tensor the graph takes.

An instance is an object with one key, the card's `input.field`, or its value alone (a bare
string; all the instances of a request one way or the other): `{"instances": [{"image":
"<base64>"}]}` and `{"instances": ["<base64>"]}` alike, `{"instances": ["great", "awful"]}`.
- image (`ImageInput`): the value is the encoded image (JPEG, PNG or WebP) in base64 (standard
  alphabet; line breaks and a `data:image/...;base64,` prefix are accepted), or its raw bytes
  (a raw image body, which the endpoint hands over as such). dropflow.vocabulary.pixels makes
  the uint8 [N, height, width, 3] pixels. All the images of one request hold at most
  MAX_REQUEST_PIXELS pixels as their headers declare (413 beyond: decoding is the costly part).
- text (`TextInput`): the value is a non-empty string. The version's tokenizer (Hugging Face
  `tokenizers` JSON) turns the strings into int64 [N, max_length] token ids, special tokens
  included, truncated to max_length and padded on the right with pad_id, as the card states
  (whatever the file itself says).
- text with tabular columns alongside (`TextTableInput`, a card whose features go on after the
  text): an instance is a table's row of every feature, the text first: an object with the
  text's key and every tabular feature's (`{"review": "...", "stars": 4, "channel": "email"}`),
  or a list in the card's feature order. The text is checked and tokenized as above, the
  tabular values checked and encoded exactly as a table model's (dropflow.serving.service.
  InputSchema: missing values, unknown categories and their warnings, wrong types, the same
  422s); the graph takes float32 [N, max_length + T], the ids then the columns.
A value that does not fit is a 422 naming the row and the problem (InvalidInstances).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from dropflow.serving.schema import describe_value, rows_problem
from dropflow.serving.service import (
    MAX_REPORTED_PROBLEMS,
    Encoded,
    InputSchema,
    InvalidInstances,
    TooManyInstances,
)
from dropflow.vocabulary.card import InputSpec
from dropflow.vocabulary.pixels import MAX_IMAGE_PIXELS, BadImage, image_pixels, image_size

# What the images of one request may hold in all (width x height as declared): two 48 MP
# photos, or thousands of small ones. Decoding costs by the pixel: a request of many small
# files that each declare millions of pixels must not hold the function for minutes.
MAX_REQUEST_PIXELS = 2 * MAX_IMAGE_PIXELS
_DATA_URL = re.compile(r"data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)


class MediaInput:
    """One value per instance, under the card's `input.field` (see the module docstring)."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.field = spec.field

    def values(self, instances: Sequence[Any]) -> list[Any]:
        """Each instance's value, or InvalidInstances naming the rows that have none."""
        if not isinstance(instances, list | tuple) or not instances:
            raise InvalidInstances("invalid instances: send a non-empty list of instances")
        values: list[Any] = []
        problems: list[str] = []
        for i, instance in enumerate(instances):
            if isinstance(instance, dict):
                other = [k for k in instance if k != self.field]
                if self.field not in instance or other:
                    problems.append(f"row {i}: {self._wrong_keys(instance)}")
                    continue
                values.append(instance[self.field])
            elif isinstance(instance, str | bytes):
                values.append(instance)
            else:
                problems.append(
                    f"row {i} is {describe_value(instance)}: send an object "
                    f'{{"{self.field}": ...}} or the {self.spec.kind} alone'
                )
            if len(problems) > MAX_REPORTED_PROBLEMS:
                break
        _raise(problems)
        return values

    def _wrong_keys(self, instance: dict[str, Any]) -> str:
        keys = ", ".join(repr(k) for k in list(instance)[:5]) or "no key"
        return f"the model takes one key, {self.field!r} (the {self.spec.kind}); got {keys}"


class ImageInput(MediaInput):
    """Images in, uint8 [N, height, width, 3] out (dropflow.vocabulary.pixels)."""

    def encode(self, instances: Sequence[Any]) -> Encoded:
        """The pixels of every instance's image, or InvalidInstances (422) naming each row
        whose image is not one the model takes, TooManyInstances (413) when they declare more
        than MAX_REQUEST_PIXELS pixels in all."""
        datas: list[bytes] = []
        declared = 0
        problems: list[str] = []
        # Headers first: every bad image is named, and the request's size is known, before
        # any pixel is decoded.
        for i, value in enumerate(self.values(instances)):
            try:
                data = _image_bytes(value)
                width, height = image_size(data)
            except BadImage as bad:
                problems.append(f"row {i}, {self.field!r}: {bad}")
                if len(problems) > MAX_REPORTED_PROBLEMS:
                    break
                continue
            datas.append(data)
            declared += width * height
        _raise(problems)
        if declared > MAX_REQUEST_PIXELS:
            raise TooManyInstances(
                f"the images of this request hold {declared:,} pixels in all; the limit is "
                f"{MAX_REQUEST_PIXELS:,}: send fewer or smaller images per request"
            )
        height, width = self.spec.height or 0, self.spec.width or 0
        batch = np.empty((len(datas), height, width, 3), dtype=np.uint8)
        for i, data in enumerate(datas):
            try:
                batch[i] = image_pixels(data, height, width)
            except BadImage as bad:  # a header that reads well over damaged pixel data
                problems.append(f"row {i}, {self.field!r}: {bad}")
                if len(problems) > MAX_REPORTED_PROBLEMS:
                    break
        _raise(problems)
        return Encoded(batch)


class TextInput(MediaInput):
    """Strings in, int64 [N, max_length] token ids out, with the version's tokenizer."""

    def __init__(self, spec: InputSpec, tokenizer_json: bytes) -> None:
        """`tokenizer_json`: the version's tokenizer file (already checked against its
        digest). Raises ValueError when it is not a tokenizer `tokenizers` reads."""
        super().__init__(spec)
        from tokenizers import Tokenizer  # loaded with the first text model, never before

        self.max_length = spec.max_length or 0
        self.pad_id = spec.pad_id or 0
        tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
        # The card's length and padding, whatever the file says: the graph takes exactly these.
        tokenizer.enable_truncation(self.max_length)
        pad_token = tokenizer.id_to_token(self.pad_id) or "[PAD]"
        tokenizer.enable_padding(
            direction="right", length=self.max_length, pad_id=self.pad_id, pad_token=pad_token
        )
        self.tokenizer = tokenizer

    def encode(self, instances: Sequence[Any]) -> Encoded:
        """The token ids of every instance's text, or InvalidInstances naming each row whose
        value is not a non-empty string."""
        texts = self.values(instances)
        _raise(self.text_problems(texts))
        return Encoded(self.ids(texts))

    def text_problems(self, texts: Sequence[Any]) -> list[str]:
        """What is wrong with each text that is not a non-empty string, naming its row."""
        problems = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                problems.append(
                    f"row {i}, {self.field!r}: expected text, got {describe_value(text)}"
                )
            elif not text.strip():
                problems.append(f"row {i}, {self.field!r}: the text is empty")
            if len(problems) > MAX_REPORTED_PROBLEMS:
                break
        return problems

    def ids(self, texts: Sequence[str]) -> np.ndarray:
        """The token ids of `texts` (checked), int64 [N, max_length]."""
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        return ids.reshape(len(texts), self.max_length)


class TextTableInput(TextInput):
    """Rows of a text and tabular values in, float32 [N, max_length + T] out (the module
    docstring)."""

    def __init__(self, spec: InputSpec, tokenizer_json: bytes, columns: InputSchema) -> None:
        """`columns`: the card's tabular features (those after the text) as a table's schema."""
        super().__init__(spec, tokenizer_json)
        self.columns = columns
        self.names = [self.field, *columns.names]

    def encode(self, instances: Sequence[Any]) -> Encoded:
        """The ids and the encoded columns of every row, with the columns' warnings, or
        InvalidInstances naming each row's problems (the text's, then the columns')."""
        problem = rows_problem(instances)
        if problem:
            raise InvalidInstances(f"invalid instances: {problem}; {self._contract()}")
        texts: list[Any] = []
        rows: list[Any] = []
        problems: list[str] = []
        for i, row in enumerate(instances):
            if isinstance(row, dict):
                if self.field not in row:
                    problems.append(f"row {i}: missing the text {self.field!r}")
                    continue
                texts.append(row[self.field])
                rows.append({k: v for k, v in row.items() if k != self.field})
            elif len(row) != len(self.names):
                problems.append(
                    f"row {i}: has {len(row)} values, the model expects {len(self.names)} "
                    f"({', '.join(map(repr, self.names))})"
                )
            else:
                texts.append(row[0])
                rows.append(list(row[1:]))
            if len(problems) > MAX_REPORTED_PROBLEMS:
                break
        _raise(problems)
        problems = self.text_problems(texts)
        try:
            table = self.columns.encode(rows)
        except InvalidInstances as exc:
            problems.append(str(exc).removeprefix("invalid instances: "))
        _raise(problems)
        ids = self.ids(texts).astype(np.float32)
        return Encoded(np.concatenate([ids, table.batch], axis=1), table.warnings)

    def _contract(self) -> str:
        return (
            f"each row is an object with the keys {', '.join(map(repr, self.names))} (the "
            f"text {self.field!r} and the tabular features), or a list of their values in "
            "that order"
        )


def _image_bytes(value: Any) -> bytes:
    """The encoded image a client's value carries: raw bytes, or base64 text."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise BadImage(f"expected the image in base64 text, got {describe_value(value)}")
    prefix = _DATA_URL.match(value)
    text = value[prefix.end() :] if prefix else value
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadImage(
            "not base64 text: send the image file's bytes in base64 (standard alphabet)"
        ) from None


def _raise(problems: list[str]) -> None:
    if not problems:
        return
    message = "invalid instances: " + "; ".join(problems[:MAX_REPORTED_PROBLEMS])
    if len(problems) > MAX_REPORTED_PROBLEMS:
        message += "; and more after these"
    raise InvalidInstances(message)
