"""Loader for ERASER rationale datasets in their released layout (Movie Reviews: DeYoung et al. 2020).

Layout of a dataset folder (e.g. the unpacked `movies.zip`)::

    train.jsonl, val.jsonl, test.jsonl   one annotation per line:
        {"annotation_id": "negR_000.txt", "classification": "NEG", "query": "...", "docids": null,
         "evidences": [[{"docid": "negR_000.txt", "text": "...", "start_token": 12, "end_token": 17,
                         "start_sentence": -1, "end_sentence": -1}], ...]}
    docs/<docid>                         the document text: one sentence per line, tokens separated
                                         by single spaces

Evidence spans index the document's whitespace tokens (`text.split()`, all lines flattened), end
exclusive; an evidence's `text` is its tokens joined by spaces. Chefer's benchmark feeds the raw
document text to the tokenizer and scores words of `text.split()`, so
both are returned. Every evidence group of the annotation counts toward the rationale.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

SPLIT_NAMES = ("train", "val", "test")
MOVIES_CLASSES = ("NEG", "POS")
"""The Movie Reviews labels in Chefer's class order (`bert_pipeline.py`)."""


@dataclasses.dataclass(frozen=True)
class Evidence:
    """One annotated span: tokens start_token … end_token−1 of document `docid`."""

    docid: str
    text: str
    start_token: int
    end_token: int
    start_sentence: int
    end_sentence: int


@dataclasses.dataclass(frozen=True)
class EraserExample:
    """One annotation with its document.

    Attributes:
      annotation_id, docid, classification (the label string), label (its index in the classes),
      query: as in the jsonl.
      text: the raw document text (what the tokenizer reads).
      words: the document's whitespace tokens (the unit of the evidence spans), W of them.
      rationale: (W,) bool, the union of all evidence spans.
      evidences: every evidence, groups flattened.
    """

    annotation_id: str
    docid: str
    classification: str
    label: int
    query: str
    text: str
    words: tuple[str, ...]
    rationale: np.ndarray
    evidences: tuple[Evidence, ...]


def _evidence(raw: dict, where: str) -> Evidence:
    try:
        return Evidence(
            docid=str(raw["docid"]),
            text=str(raw.get("text", "")),
            start_token=int(raw["start_token"]),
            end_token=int(raw["end_token"]),
            start_sentence=int(raw.get("start_sentence", -1)),
            end_sentence=int(raw.get("end_sentence", -1)),
        )
    except KeyError as e:
        raise ValueError(f"{where}: evidence lacks the field {e}; expected docid, start_token, end_token") from None


def _docid(raw: dict, evidences: Sequence[Evidence], where: str) -> str:
    """The one document of an annotation: `docids`, else the evidences' docid, else the annotation id."""
    docids = list(raw.get("docids") or []) or sorted({e.docid for e in evidences}) or [raw["annotation_id"]]
    if len(docids) != 1:
        raise ValueError(
            f"{where}: the annotation refers to {len(docids)} documents {docids}; this loader reads "
            "single-document datasets (Movie Reviews)"
        )
    return str(docids[0])


def _example(raw: dict, folder: str | os.PathLike, index: dict[str, int], check_text: bool, where: str):
    """One jsonl annotation → `EraserExample`, reading its document from `folder`/docs."""
    for field in ("annotation_id", "classification", "evidences"):
        if field not in raw:
            raise ValueError(f"{where}: missing field {field!r}; is this an ERASER annotation file?")
    if raw["classification"] not in index:
        raise ValueError(f"{where}: label {raw['classification']!r} is not in classes {tuple(index)}")
    evidences = tuple(_evidence(e, where) for group in raw["evidences"] for e in group)
    docid = _docid(raw, evidences, where)
    doc_path = os.path.join(folder, "docs", docid)
    if not os.path.isfile(doc_path):
        raise FileNotFoundError(f"{where}: document {doc_path} not found; the docs/ folder must hold it")
    with open(doc_path, encoding="utf-8") as d:
        text = d.read()
    words = tuple(text.split())
    rationale = np.zeros(len(words), bool)
    for e in evidences:
        span = f"tokens {e.start_token}..{e.end_token}"
        if e.docid != docid:
            raise ValueError(f"{where}: evidence in document {e.docid!r}, the annotation's document is {docid!r}")
        if not 0 <= e.start_token < e.end_token <= len(words):
            raise ValueError(f"{where}: evidence {span} lie outside document {docid!r} of {len(words)} tokens")
        if check_text and e.text and " ".join(words[e.start_token : e.end_token]) != e.text:
            raise ValueError(
                f"{where}: evidence text {e.text!r} does not match the document's {span}; the document was "
                "tokenised differently (pass check_text=False to skip the check)"
            )
        rationale[e.start_token : e.end_token] = True
    return EraserExample(
        annotation_id=str(raw["annotation_id"]),
        docid=docid,
        classification=raw["classification"],
        label=index[raw["classification"]],
        query=str(raw.get("query") or ""),
        text=text,
        words=words,
        rationale=rationale,
        evidences=evidences,
    )


def load_split(
    folder: str | os.PathLike, split: str, classes: Sequence[str] = MOVIES_CLASSES, check_text: bool = True
) -> list[EraserExample]:
    """The annotations of `split` ('train', 'val', 'test') of the dataset in `folder`, with documents.

    Args:
      folder: the dataset folder ({split}.jsonl and docs/).
      split: which split.
      classes: the label strings by index.
      check_text: verify that each evidence's `text` equals its span's words joined by spaces
        (a mismatch means the document was tokenised differently from the annotation).
    Returns:
      One `EraserExample` per jsonl line, in file order.
    """
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLIT_NAMES}")
    path = os.path.join(folder, f"{split}.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found; pass the folder that holds {{train,val,test}}.jsonl and docs/")
    index = {c: i for i, c in enumerate(classes)}
    with open(path, encoding="utf-8") as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    return [_example(json.loads(line), folder, index, check_text, f"{path}:{n}") for n, line in lines]


def pad_rationales(examples: Sequence[EraserExample]) -> tuple[np.ndarray, np.ndarray]:
    """Word rationales of several documents as one array: (rationale (n, W), valid (n, W)) bool, W = longest."""
    width = max((len(e.words) for e in examples), default=0)
    rationale = np.zeros((len(examples), width), bool)
    valid = np.zeros((len(examples), width), bool)
    for j, e in enumerate(examples):
        rationale[j, : len(e.words)] = e.rationale
        valid[j, : len(e.words)] = True
    return rationale, valid
