"""The ERASER loader on a tiny Movie Reviews-layout fixture written by the test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from libra_jax.data.eraser import load_split, pad_rationales

DOCS = {
    "negR_000.txt": "this movie was bad .\nthe plot was dull and boring .\n",
    "posR_001.txt": "a truly great film .\n",
}


def _evidence(docid, start, end):
    words = DOCS[docid].split()
    span = {"start_token": start, "end_token": end, "start_sentence": -1, "end_sentence": -1}
    return {"docid": docid, "text": " ".join(words[start:end]), **span}


ANNOTATIONS = [
    {
        "annotation_id": "negR_000.txt",
        "classification": "NEG",
        "docids": None,
        "query": "What is the sentiment of this review?",
        "query_type": None,
        "evidences": [[_evidence("negR_000.txt", 3, 4)], [_evidence("negR_000.txt", 8, 11)]],
    },
    {
        "annotation_id": "posR_001.txt",
        "classification": "POS",
        "docids": None,
        "query": "What is the sentiment of this review?",
        "query_type": None,
        "evidences": [[_evidence("posR_001.txt", 1, 3)]],
    },
]


def _write(folder, annotations=ANNOTATIONS, docs=DOCS, split="test"):
    (folder / "docs").mkdir(exist_ok=True)
    for docid, text in docs.items():
        (folder / "docs" / docid).write_text(text)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(a) + "\n" for a in annotations))
    return folder


def test_loads_documents_labels_and_rationales(tmp_path):
    examples = load_split(_write(tmp_path), "test")
    assert [e.annotation_id for e in examples] == ["negR_000.txt", "posR_001.txt"]
    neg, pos = examples
    assert neg.docid == "negR_000.txt" and neg.classification == "NEG" and neg.label == 0 and pos.label == 1
    assert neg.text == DOCS["negR_000.txt"]
    assert neg.words == ("this", "movie", "was", "bad", ".", "the", "plot", "was", "dull", "and", "boring", ".")
    np.testing.assert_array_equal(np.flatnonzero(neg.rationale), [3, 8, 9, 10])
    np.testing.assert_array_equal(pos.rationale, [False, True, True, False, False])
    assert len(neg.evidences) == 2 and neg.evidences[1].text == "dull and boring"
    assert neg.query.startswith("What is")
    rationale, valid = pad_rationales(examples)
    assert rationale.shape == valid.shape == (2, 12)
    np.testing.assert_array_equal(valid.sum(1), [12, 5])
    np.testing.assert_array_equal(rationale[1, :5], pos.rationale)


def _broken(**change):
    bad = json.loads(json.dumps(ANNOTATIONS[0]))
    bad["evidences"][0][0].update(change)
    return [bad]


@pytest.mark.parametrize(
    "annotations, match",
    [
        (_broken(end_token=40), "outside document"),
        (_broken(text="good"), "does not match"),
        (_broken(docid="posR_001.txt"), "documents"),
        ([{**ANNOTATIONS[0], "classification": "MEH"}], "not in classes"),
        ([{k: v for k, v in ANNOTATIONS[0].items() if k != "evidences"}], "missing field 'evidences'"),
    ],
)
def test_bad_annotations_are_named(tmp_path, annotations, match):
    with pytest.raises(ValueError, match=match):
        load_split(_write(tmp_path, annotations), "test")


def test_missing_files_and_unchecked_text(tmp_path):
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        load_split(tmp_path, "test")
    with pytest.raises(ValueError, match="unknown split"):
        load_split(tmp_path, "dev")
    _write(tmp_path, docs={"posR_001.txt": DOCS["posR_001.txt"]})
    with pytest.raises(FileNotFoundError, match="negR_000.txt"):
        load_split(tmp_path, "test")
    _write(tmp_path, _broken(text="good"))
    (neg,) = load_split(tmp_path, "test", check_text=False)
    np.testing.assert_array_equal(np.flatnonzero(neg.rationale), [3, 8, 9, 10])
