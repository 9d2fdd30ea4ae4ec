"""The text family: a table with a column of free text and a label, a transformer encoder.

Reading: the CSV and Parquet files under `datasets/<model>/` (key order, the same columns in
each, as for tables). The target is the tabular rule's (dropflow.vocabulary.target). The text
column is the one whose values are long and mostly distinct (TEXT_CHARS, DISTINCT_SHARE):
among every other column, or among the spec's `features:` (the first of them when none or
several look so; a single entry is the text column whatever it holds). The other columns (or
the spec's other features) are tabular features beside the text, read by the tabular family's
reader (training.data: numbers, categories, missing values, its checks and messages); a
spec's single text feature leaves the rest out. A missing text is the empty string; a row with
a missing target is dropped (by the tabular rule too, when there are tabular columns).

Tokens: `Examples.x` holds the token ids, int64 [rows, max_length], padded with the
tokenizer's pad id and truncated, as the published tokenizer.json (truncation and padding
set) produces them from a raw string at serving time. With tabular columns it is float32
[rows, max_length + T]: the ids (exact in float32 below 2**24), then the table's columns as
the tabular family's graph takes them (dropflow.vocabulary.card).

With `pretrained: true` the tokenizer and the encoder's weights are the checkpoint's, read
from `weights/<checkpoint>/` in the bucket when that folder exists (save_pretrained's files,
for accounts whose instances have no internet), else from the Hugging Face Hub; neither
reachable fails the job naming both. With `pretrained: false` a BERT-style encoder of the
spec's size gets random weights and a WordPiece tokenizer learns its vocabulary from the
training rows' texts only (the job's own seeded split, training.split, so no holdout text
shapes the vocabulary; train_tokenizer).

The network (TextNetwork): the encoder, mean pooling over the real tokens (the attention mask
is ids != pad id, computed inside), dropout and a linear head; the base class's task head on
top. With tabular columns (TextTableNetwork) the head reads the pooled text concatenated with
the columns as the tabular MLP encodes them (training.model: median fill, standardisation,
one-hot of categories; fitted to the training rows) through one layer of the text's width, so
the graph takes raw columns. It exports as every family does, with torch.export
(training.export; on torch 2.13 the graph of a BERT encoder, tiny to base, with or without
columns, matches torch to about 1e-7 at any batch size, and takes a few seconds longer than
the deprecated TorchScript exporter the family used before).
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch
from torch import nn

from dropflow.errors import UserInputError
from dropflow.ports import ObjectStore
from dropflow.vocabulary.card import Feature, InputSpec, Task
from dropflow.vocabulary.datasets import SPEC_FILE, data_files, dataset_prefix
from dropflow.vocabulary.spec import DEFAULT_MAX_LENGTH, DEFAULT_TEXT_SIZE, TEXT_FAMILY, Spec
from dropflow.vocabulary.target import choose_target
from training.data import MAX_INTEGER_CLASSES, load_dataset
from training.examples import Examples
from training.export import export_onnx
from training.families.base import Family
from training.families.tabular import category_counts
from training.model import Network, build_network
from training.network import TaskNetwork
from training.split import split_for

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
# The card's `files` role of the tokenizer (InputSpec.tokenizer names the file).
TOKENIZER_ROLE = "tokenizer"
# Where a checkpoint's saved files may lie in the bucket (save_pretrained's folder).
WEIGHTS_PREFIX = "weights/"
# The files of a checkpoint the job needs from the Hub: config, weights, tokenizer.
_HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]
# A column is free text when its present values average at least this many characters and at
# least this share of them are distinct (a category has few values, repeated).
TEXT_CHARS = 20
DISTINCT_SHARE = 0.5
# The head's dropout unless the spec's model.dropout says otherwise.
DROPOUT = 0.1
# Token ids beside tabular columns travel as float32, exact for integers below this.
EXACT_FLOAT32_IDS = 2**24
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass(frozen=True)
class EncoderSize:
    """A BERT-style encoder's shape, and the largest vocabulary its tokenizer may learn."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocabulary: int


# `base` is BERT-base's shape: about 110M parameters with a 30,522-token vocabulary.
SIZES = {
    "tiny": EncoderSize(hidden=64, layers=2, heads=2, intermediate=256, vocabulary=2000),
    "small": EncoderSize(hidden=256, layers=4, heads=4, intermediate=1024, vocabulary=8000),
    "base": EncoderSize(hidden=768, layers=12, heads=12, intermediate=3072, vocabulary=30522),
}


@dataclass(frozen=True)
class TextExamples(Examples):
    """Examples whose `x` are token ids (then tabular columns, when `tabular` lists any), with
    what build and publish need besides."""

    field: str  # the text column: the card's first feature and the instance key clients send
    tokenizer_json: str  # the tokenizer, truncation and padding set (published as is)
    pad_id: int
    max_length: int
    vocab_size: int
    # The checkpoint's saved files (pretrained), or None (an encoder built from scratch).
    checkpoint_folder: Path | None = None
    # Keeps the temporary folder holding checkpoint_folder alive as long as these examples.
    _folder: Any = None

    @property
    def tabular(self) -> list[Feature]:
        """The tabular features beside the text (columns max_length.. of `x`), or none."""
        return self.features[1:]


# --------------------------------------------------------------------------- the table
def _read_file(key: str, path: Path) -> pa.Table:
    try:
        if key.lower().endswith(".csv"):
            return pacsv.read_csv(path)
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserInputError(f"{key}: cannot be read as a table: {exc}") from None


def read_table(store: ObjectStore, model: str) -> tuple[pa.Table, list[str]]:
    """Every data file under the model's prefix as one table (columns in the first file's
    order), and the keys read. Raises UserInputError when there is none, or when a file's
    columns differ from the first's (naming both files)."""
    prefix = dataset_prefix(model)
    found = sorted(data_files(store.list(prefix)), key=lambda info: info.key)
    if not found:
        raise UserInputError(f"no .csv or .parquet files under {prefix}; drop the data there")
    tables: list[pa.Table] = []
    with tempfile.TemporaryDirectory(prefix="dropflow-text-") as folder:
        for number, info in enumerate(found):
            path = Path(folder) / str(number)
            store.get_file(info.key, path)
            tables.append(_read_file(info.key, path))
    first = tables[0].column_names
    for info, table in zip(found[1:], tables[1:], strict=True):
        if set(table.column_names) != set(first):
            raise UserInputError(
                f"{info.key}: its columns {table.column_names} differ from {found[0].key}'s "
                f"{first}; every data file of a model must have the same columns"
            )
    # Text in one file and numbers in another (a Parquet file beside a CSV file): as strings.
    differ = {n for n in first if len({t.schema.field(n).type for t in tables}) > 1}
    same = [
        pa.table({n: t.column(n).cast(pa.string()) if n in differ else t.column(n) for n in first})
        for t in tables
    ]
    return pa.concat_tables(same), [info.key for info in found]


def _strings(column: pa.ChunkedArray) -> list[str | None]:
    return column.cast(pa.string()).to_pylist()


def _looks_like_text(column: pa.ChunkedArray) -> bool:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return False
    present = column.drop_null()
    if len(present) == 0:
        return False
    mean_chars = pc.mean(pc.utf8_length(present)).as_py() or 0.0
    distinct = len(pc.unique(present))
    return mean_chars >= TEXT_CHARS and distinct >= DISTINCT_SHARE * len(present)


def choose_columns(
    table: pa.Table, target: str, spec: Spec, *, model: str
) -> tuple[str, list[str]]:
    """The text column and the tabular columns beside it, in table (or spec) order (module
    docstring). Raises UserInputError naming the columns and the spec line to add."""
    where = f"{dataset_prefix(model)}{SPEC_FILE}"
    others = [name for name in table.column_names if name != target]
    if spec.features:
        absent = [name for name in spec.features if name not in others]
        if absent:
            raise UserInputError(
                f"features: column {absent[0]!r} (from {where}) not found; "
                f"available columns: {', '.join(others)}"
            )
        texts = [name for name in spec.features if _looks_like_text(table.column(name))]
        field = texts[0] if len(texts) == 1 else spec.features[0]
        return field, [name for name in spec.features if name != field]
    texts = [name for name in others if _looks_like_text(table.column(name))]
    if len(texts) == 1:
        return texts[0], [name for name in others if name != texts[0]]
    rule = (
        f"values of {TEXT_CHARS} or more characters on average, at least "
        f"{DISTINCT_SHARE:.0%} of them distinct"
    )
    if texts:
        raise UserInputError(
            f"several columns hold free text ({', '.join(map(repr, texts))}); a text model "
            f"reads one: name it with the line `features: [{texts[0]}]` in {where} (then "
            f"the columns to read beside it as tabular features, if any, after it)"
        )
    raise UserInputError(
        f"no column holds free text ({rule}) besides the target {target!r}; columns: "
        f"{', '.join(others) or 'none'}. Name the text column with the line "
        f"`features: [<column>]` in {where}"
    )


def _targets(
    column: pa.ChunkedArray, task: Task | None, target: str
) -> tuple[Task, np.ndarray, list[Any] | None]:
    """The task, the target per row (class ids or float64 values) and the classes."""
    values = column.to_pylist()
    numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
    if task is None:
        whole = numeric and all(float(v).is_integer() for v in values)
        few = len(set(values)) <= MAX_INTEGER_CLASSES
        task = "regression" if numeric and not (whole and few) else "classification"
    if task == "regression":
        if not numeric:
            raise UserInputError(
                f"target {target!r} holds text; regression needs numbers (or say "
                f"`task: classification`)"
            )
        return task, np.asarray(values, dtype=np.float64), None
    if pa.types.is_floating(column.type) and all(float(v).is_integer() for v in values):
        values = [int(v) for v in values]
    classes = sorted(set(values), key=lambda v: (type(v).__name__, v))
    if len(classes) < 2:
        raise UserInputError(
            f"target {target!r} has a single class ({classes[0]!r}); a classifier needs two"
        )
    index = {value: i for i, value in enumerate(classes)}
    return task, np.asarray([index[v] for v in values], dtype=np.int64), classes


# --------------------------------------------------------------------------- the tokenizer
def train_tokenizer(texts: list[str], vocabulary: int) -> Any:
    """A WordPiece tokenizer (BERT's lower-casing normalisation and pre-tokenisation,
    [CLS] text [SEP]; [PAD] is id 0) whose vocabulary is learnt from `texts`: the special
    tokens, every character seen (alone and as a `##` continuation), then whole words by
    falling count (ties in alphabetical order) up to `vocabulary` tokens. A word never seen
    is spelt from known words and characters.

    The same texts always give the same tokenizer: a resumed job tokenizes again and must get
    the ids it trained on. The WordPiece trainer of `tokenizers` does not: equal pair counts
    are merged in an order that changes from one process to the next (its vocabulary, not
    only the ids, differed between runs on the same texts).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    characters = sorted({c for word in counts for c in word})
    tokens = [*SPECIAL_TOKENS, *characters, *(f"##{c}" for c in characters)]
    room = max(0, vocabulary - len(tokens))
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))[:room]
    vocab = {token: i for i, token in enumerate([*tokens, *words])}
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = splitter
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return tokenizer


def fixed_length(tokenizer: Any, pad_id: int, pad_token: str, max_length: int) -> Any:
    """`tokenizer` set to give exactly `max_length` ids per text: truncated, then padded."""
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(length=max_length, pad_id=pad_id, pad_token=pad_token)
    return tokenizer


def token_ids(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """The ids of `texts` (int64 [rows, max_length]) by a fixed_length tokenizer."""
    encodings = tokenizer.encode_batch(texts)
    return np.asarray([encoding.ids for encoding in encodings], dtype=np.int64).reshape(
        len(texts), -1
    )


# --------------------------------------------------------------------------- the checkpoint
def fetch_checkpoint(store: ObjectStore, checkpoint: str, folder: Path) -> Path:
    """A local folder with the checkpoint's saved files: `weights/<checkpoint>/` from the
    bucket copied into `folder` when it holds any, else the Hugging Face Hub's copy (its
    cache). Raises UserInputError naming both sources when neither has it."""
    prefix = f"{WEIGHTS_PREFIX}{checkpoint}/"
    objects = store.list(prefix)
    if objects:
        for info in objects:
            path = folder / info.key[len(prefix) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            store.get_file(info.key, path)
        log.info("checkpoint %s: %d files from %s in the bucket", checkpoint, len(objects), prefix)
        return folder
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(checkpoint, allow_patterns=_HUB_FILES))
    except Exception as exc:  # offline, unknown repo, gated repo: the hub raises several kinds
        reason = " ".join(str(exc).split())[:300]
        raise UserInputError(
            f"model.checkpoint {checkpoint!r}: no files under {prefix} in the bucket, and the "
            f"Hugging Face Hub could not provide it ({type(exc).__name__}: {reason}). Either "
            f"upload the checkpoint's save_pretrained folder (config.json, model.safetensors, "
            f"tokenizer files) to {prefix}, or let the training instance reach "
            f"huggingface.co and name a checkpoint that exists there"
        ) from None
    log.info("checkpoint %s: from the Hugging Face Hub", checkpoint)
    return local


def _pretrained_tokenizer(folder: Path, checkpoint: str) -> tuple[Any, int, str]:
    from transformers import AutoTokenizer

    try:
        loaded = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise UserInputError(
            f"model.checkpoint {checkpoint!r}: its tokenizer cannot be loaded: {exc}"
        ) from None
    backend = getattr(loaded, "backend_tokenizer", None)
    if backend is None or loaded.pad_token_id is None:
        raise UserInputError(
            f"model.checkpoint {checkpoint!r}: its tokenizer has no fast (tokenizers) form "
            "with a padding token; choose an encoder checkpoint such as a BERT model"
        )
    return backend, int(loaded.pad_token_id), str(loaded.pad_token)


# --------------------------------------------------------------------------- the network
def text_encoder(size: str, *, vocab_size: int, max_length: int, pad_id: int) -> nn.Module:
    """A BERT encoder of `size` (SIZES) with random weights, from torch's global generator."""
    from transformers import BertConfig, BertModel

    shape = SIZES[size]
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=max(max_length, 8),
        pad_token_id=pad_id,
    )
    return BertModel(config, add_pooling_layer=False)


class TextNetwork(TaskNetwork):
    """scores(ids) = linear(dropout(mean of the encoder's states over the real tokens))."""

    input_dtype = np.int64

    def __init__(
        self,
        task: Task,
        encoder: nn.Module,
        *,
        n_outputs: int,
        pad_id: int,
        dropout: float,
        beside: int = 0,
    ) -> None:
        """`beside`: how many inputs the head reads after the pooled text (TextTableNetwork)."""
        super().__init__(task)
        self.encoder = encoder
        self.pad_id = pad_id
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(int(encoder.config.hidden_size) + beside, n_outputs)

    def pooled(self, ids: torch.Tensor) -> torch.Tensor:
        """The mean of the encoder's states over the real tokens of `ids`, [batch, hidden]."""
        mask = ids != self.pad_id
        states = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pooled(x)))


class TextTableNetwork(TextNetwork):
    """scores(x) = linear(dropout([pooled text, gelu(linear(the tabular columns encoded))])):
    x is float32 [batch, max_length + T], token ids then a table's columns (module docstring)."""

    input_dtype = np.float32

    def __init__(
        self,
        task: Task,
        encoder: nn.Module,
        columns: Network,
        *,
        max_length: int,
        n_outputs: int,
        pad_id: int,
        dropout: float,
    ) -> None:
        """`columns`: a tabular MLP fitted to the training rows' columns (build_network), of
        which only the preprocessing (`encode`) is used."""
        hidden = int(encoder.config.hidden_size)
        super().__init__(
            task, encoder, n_outputs=n_outputs, pad_id=pad_id, dropout=dropout, beside=hidden
        )
        width = int(columns.x_mean.numel() + columns.one_hot_columns.numel())
        # Its own layers would be parameters no loss reaches, which DDP refuses.
        columns.mlp = nn.Identity()
        self.columns = columns
        # The encoded columns widened to the text's width: with Adam each weight moves about
        # one learning rate per step, so a head reading one standardised number through one
        # weight learnt its threshold far more slowly than the text's hundreds of inputs.
        self.column_layer = nn.Sequential(nn.Linear(width, hidden), nn.GELU())
        self.max_length = max_length

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        ids = x[:, : self.max_length].long()
        pooled = self.pooled(ids)
        table = self.column_layer(self.columns.encode(x[:, self.max_length :]))
        both = torch.cat([pooled, table.to(pooled.dtype)], dim=1)
        return self.classifier(self.dropout(both))


def export_text_onnx(network: TaskNetwork, example: np.ndarray, path: Path) -> Path:
    """The network as one ONNX file: `input` [batch, max_length] int64 (or float32 [batch,
    max_length + T] with tabular columns), dynamic batch axis. It is every family's export
    (training.export.export_onnx, torch.export's exporter), which the family uses as it is;
    named here for the benchmarks that export an encoder without a job."""
    return export_onnx(network, example, path)


# --------------------------------------------------------------------------- the family
class TextFamily(Family[TextExamples]):
    """Free text and a label: a transformer encoder fine-tuned, or trained from scratch."""

    name = TEXT_FAMILY

    def read(self, store: ObjectStore, model: str, spec: Spec) -> TextExamples:
        table, sources = read_table(store, model)
        target = choose_target(table.column_names, spec.target, model=model)
        field, tabular = choose_columns(table, target, spec, model=model)
        left_out = [c for c in table.column_names if c not in (target, field, *tabular)]
        if left_out:
            log.info("text model: columns left out: %s", left_out)
        columns: np.ndarray | None = None
        column_features: list[Feature] = []
        if tabular:
            # The tabular family's reader, on the same files: one set of rules for columns.
            dataset = load_dataset(store, model, spec.model_copy(update={"features": tabular}))
            if dataset.kept is None or len(dataset.kept) != len(table):
                raise UserInputError(
                    f"the data files under {dataset_prefix(model)} read as {len(table)} rows "
                    f"for the text but as {len(dataset.y) + dataset.dropped_rows} for the "
                    f"columns {tabular}; check the files' quoting and line ends"
                )
            table = table.take(pa.array(np.flatnonzero(dataset.kept)))
            columns, column_features = dataset.x, dataset.card_features()
            log.info("text model: tabular columns beside the text: %s", tabular)
        kept = pc.is_valid(table.column(target))
        dropped = len(table) - pc.sum(kept).as_py()
        if dropped:
            log.info("%d rows without a target dropped", dropped)
            if columns is not None:
                columns = columns[kept.to_numpy(zero_copy_only=False)]
        table = table.filter(kept)
        if len(table) == 0:
            raise UserInputError(f"target {target!r} has no values")
        task, y, classes = _targets(table.column(target), spec.task, target)
        texts = [text or "" for text in _strings(table.column(field))]
        max_length = spec.model.max_length or DEFAULT_MAX_LENGTH
        folder: Any = None
        checkpoint_folder: Path | None = None
        if spec.model.loads_checkpoint:
            checkpoint = str(spec.model.checkpoint)
            folder = tempfile.TemporaryDirectory(prefix="dropflow-checkpoint-")
            checkpoint_folder = fetch_checkpoint(store, checkpoint, Path(folder.name))
            tokenizer, pad_id, pad_token = _pretrained_tokenizer(checkpoint_folder, checkpoint)
        else:
            # The job's own split (the same seeded, stratified call): only training texts.
            labels = Examples(task, target, np.empty((len(y), 0)), y, classes, [], sources)
            train_rows = split_for(labels, spec.training).train
            size = SIZES[spec.model.size or DEFAULT_TEXT_SIZE]
            tokenizer = train_tokenizer([texts[i] for i in train_rows], size.vocabulary)
            pad_id, pad_token = int(tokenizer.token_to_id("[PAD]")), "[PAD]"
        fixed_length(tokenizer, pad_id, pad_token, max_length)
        x = token_ids(tokenizer, texts)
        if columns is not None:
            if tokenizer.get_vocab_size() > EXACT_FLOAT32_IDS:
                raise UserInputError(
                    f"model.checkpoint {spec.model.checkpoint!r}: its vocabulary of "
                    f"{tokenizer.get_vocab_size():,} tokens is too large to read beside "
                    f"tabular columns (at most {EXACT_FLOAT32_IDS:,}); list only the text "
                    f"column under features:"
                )
            x = np.concatenate([x.astype(np.float32), columns.astype(np.float32)], axis=1)
        return TextExamples(
            task=task,
            target=target,
            x=x,
            y=y,
            classes=classes,
            features=[Feature(name=field, dtype="text"), *column_features],
            sources=sources,
            field=field,
            tokenizer_json=tokenizer.to_str(),
            pad_id=pad_id,
            max_length=max_length,
            vocab_size=int(tokenizer.get_vocab_size()),
            checkpoint_folder=checkpoint_folder,
            _folder=folder,
        )

    def build(
        self, examples: TextExamples, x_train: np.ndarray, y_train: np.ndarray, spec: Spec
    ) -> TextNetwork:
        if examples.checkpoint_folder is not None:
            from transformers import AutoModel

            try:
                encoder = AutoModel.from_pretrained(str(examples.checkpoint_folder))
            except Exception as exc:
                raise UserInputError(
                    f"model.checkpoint {spec.model.checkpoint!r}: its weights cannot be "
                    f"loaded as an encoder: {exc}"
                ) from None
        else:
            encoder = text_encoder(
                spec.model.size or DEFAULT_TEXT_SIZE,
                vocab_size=examples.vocab_size,
                max_length=examples.max_length,
                pad_id=examples.pad_id,
            )
        classification = examples.task == "classification"
        n_outputs = examples.n_classes if classification else 1
        dropout = DROPOUT if spec.model.dropout is None else spec.model.dropout
        network: TextNetwork
        if examples.tabular:
            length = examples.max_length
            columns = build_network(
                examples.task,
                np.asarray(x_train)[:, length:],
                y_train,
                n_classes=examples.n_classes,
                hidden_layers=(),
                category_counts=category_counts(examples.tabular),
            )
            network = TextTableNetwork(
                examples.task,
                encoder,
                columns,
                max_length=length,
                n_outputs=n_outputs,
                pad_id=examples.pad_id,
                dropout=dropout,
            )
        else:
            network = TextNetwork(
                examples.task,
                encoder,
                n_outputs=n_outputs,
                pad_id=examples.pad_id,
                dropout=dropout,
            )
        if not classification:
            network.set_target_scale(float(np.mean(y_train)), float(np.std(y_train)) or 1.0)
        return network

    def input_spec(self, examples: TextExamples) -> InputSpec:
        return InputSpec(
            kind="text",
            max_length=examples.max_length,
            tokenizer=TOKENIZER_FILE,
            field=examples.field,
            pad_id=examples.pad_id,
        )

    def files(self, examples: TextExamples) -> dict[str, tuple[str, bytes]]:
        return {TOKENIZER_ROLE: (TOKENIZER_FILE, examples.tokenizer_json.encode())}


__all__ = [
    "SIZES",
    "TOKENIZER_FILE",
    "TextExamples",
    "TextFamily",
    "TextNetwork",
    "TextTableNetwork",
    "choose_columns",
    "export_text_onnx",
    "fetch_checkpoint",
    "read_table",
    "text_encoder",
    "train_tokenizer",
]
