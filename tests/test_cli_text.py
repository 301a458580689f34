"""`libra-jax explain --text` (text classifiers) and `--prompt` (decoder LMs): exit codes, the terminal lines
(plain when stdout is not a terminal, as under capsys) and the HTML page, parsed: one row per method / per
generated token and method, the words present; the clear errors for the wrong input kind and bad text.

The decoder is a tiny random Llama (tests/test_decoder.py's config) saved with `save_pretrained` and the
Llama-style tokenizer.json of tests/test_decoder_tokenizer.py in a temporary folder.
"""

from __future__ import annotations

import html.parser
import json
import sys

import numpy as np
import pytest
from PIL import Image
from test_bert import _hf_model
from test_decoder import COMMON
from test_decoder_tokenizer import llama_style_tokenizer

from libra_jax import cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXT = "the referee saw the goal in the stadium"
PROMPT = "the capital of france is"


class Page(html.parser.HTMLParser):
    """The rows of a `render_html` page: [(label, [words], [bold words])]."""

    def __init__(self, text: str):
        super().__init__()
        self.rows, self._cell, self._bold = [], None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append(["", [], []])
        elif tag in ("th", "span"):
            self._cell = tag
            self._bold = "font-weight:bold" in (dict(attrs).get("style") or "")
        elif tag == "small":
            self._cell = None

    def handle_endtag(self, tag):
        if tag in ("th", "span"):
            self._cell = None

    def handle_data(self, data):
        if self._cell == "th":
            self.rows[-1][0] += data
        elif self._cell == "span" and self.rows:
            self.rows[-1][1].append(data)
            if self._bold:
                self.rows[-1][2].append(data)


@pytest.fixture(scope="module")
def decoder_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_llama")
    tok = llama_style_tokenizer()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**COMMON, "vocab_size": tok.get_vocab_size()})
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    return folder


def explain(*args: str) -> int:
    return cli.main(["explain", *args])


def test_text_classifier_page_has_one_row_per_method(tmp_path, capsys):
    page = tmp_path / "page.html"
    assert (
        explain(
            "--model", "synthetic_bert", "--text", TEXT, "--method", "libra_fullgrad_plus", "ixg", "--out", str(page)
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "explaining class 0 with libra_fullgrad_plus, ixg" in out and f"wrote {page}" in out
    assert "\x1b[" not in out and "referee(" in out  # plain words when stdout is not a terminal
    rows = Page(page.read_text()).rows
    assert [label.split(" · ")[0] for label, _, _ in rows] == ["libra_fullgrad_plus", "ixg"]
    assert all(words == TEXT.split() for _, words, _ in rows)


def test_text_classifier_targets_and_colours_on_a_terminal(tmp_path, capsys, monkeypatch):
    page = tmp_path / "page.html"
    args = ("--model", "synthetic_bert", "--text", TEXT, "--text", "rain today", "--out", str(page))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # capsys's stdout, now claiming to be a terminal
    assert explain(*args, "--target", "2", "--target", "1") == 0
    out = capsys.readouterr().out
    assert "explaining class 2" in out and "\x1b[48;2;" in out and "referee(" not in out  # 24-bit backgrounds
    assert len(Page(page.read_text()).rows) == 2 * 2  # texts × targets, one method
    assert explain(*args, "--target", "sports") == 2
    assert "--target 'sports' is not a class of the model; the model names no labels" in capsys.readouterr().err


def test_hugging_face_classifier_folder_with_label_names(tmp_path, capsys):
    """A save_pretrained BERT folder (config.json id2label, vocab.txt): --target by label name."""
    model = _hf_model("bert")
    model.config.id2label = {0: "neg", 1: "mid", 2: "pos"}
    model.save_pretrained(tmp_path / "bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "fine", "film", "dull", "##s", "play"]
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    page = tmp_path / "page.html"
    args = ("--model", str(tmp_path / "bert"), "--text", "a fine film plays", "--out", str(page))
    assert explain(*args, "--target", "pos", "--method", "libra_fullgrad") == 0
    assert "explaining class 2 pos with libra_fullgrad" in capsys.readouterr().out
    assert Page(page.read_text()).rows[0][:2] == ["libra_fullgrad · class 2 pos", ["a", "fine", "film", "plays"]]
    assert explain(*args, "--target", "great") == 2
    assert (
        "--target 'great' is not a class of the model; the labels are ['mid', 'neg', 'pos']" in capsys.readouterr().err
    )


def test_decoder_generation_page_has_one_row_per_token_and_method(decoder_folder, tmp_path, capsys):
    page = tmp_path / "gen.html"
    methods = ("--method", "libra_fullgrad", "ixg")
    assert (
        explain("--model", str(decoder_folder), "--prompt", PROMPT, "--generate", "3", *methods, "--out", str(page))
        == 0
    )
    out = capsys.readouterr().out
    assert "continuation: " in out and "\x1b[" not in out and "capital(" in out
    rows = Page(page.read_text()).rows
    assert len(rows) == 3 * 2
    prompt_tokens = ["<s>", "the", "capital", "of", "france", "is"]
    for i, (label, words, bold) in enumerate(rows):
        assert label.startswith(("libra_fullgrad: ", "ixg: "))
        assert words[: len(prompt_tokens)] == prompt_tokens and len(words) == len(prompt_tokens) + i // 2 + 1
        assert bold == [words[-1]] and f": {words[-1]} (prob " in label  # the explained token, in bold


def test_decoder_continuation_and_target_token(decoder_folder, tmp_path, capsys):
    page = tmp_path / "p.html"
    model = ("--model", str(decoder_folder), "--prompt", PROMPT, "--out", str(page))
    assert explain(*model, "--continuation", " paris", "--target-kind", "log_prob") == 0
    assert "continuation: 'paris'" in capsys.readouterr().out
    rows = Page(page.read_text()).rows
    assert [bold for _, _, bold in rows] == [["paris"]] and "(log_prob " in rows[0][0]
    assert explain(*model, "--target-token", " paris", "--contrast", "mat", "--method", "ixg", "libra_ixg") == 0
    out = capsys.readouterr().out
    assert "explaining logit ' paris' − logit 'mat' with ixg, libra_ixg" in out and "next token: " in out
    rows = Page(page.read_text()).rows
    assert [label for label, _, _ in rows] == ["ixg", "libra_ixg"] and rows[0][1][-1] == "is"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--model", "synthetic_vit", "--text", TEXT),
            "--text explains a text classifier, but 'synthetic_vit' is an image model: explain it with --image FILE",
        ),
        (
            ("--model", "synthetic_bert", "--image", "IMAGE"),
            "--image explains an image model, but 'synthetic_bert' is a text classifier: explain it with --text TEXT",
        ),
        (("--model", "synthetic_bert", "--prompt", PROMPT), "is a text classifier: explain it with --text TEXT"),
        (("--model", "DECODER", "--text", TEXT), "is a decoder language model: explain it with --prompt TEXT"),
        (
            ("--model", "DECODER", "--prompt", "the capital of fr", "--continuation", "ance is paris"),
            "does not tokenize on its own after the prompt: at the seam",
        ),
        (("--model", "DECODER", "--prompt", "the cat sat on the mat " * 12), "but the model's context holds 64"),
        (("--model", "DECODER", "--prompt", PROMPT, "--generate", "60"), "exceed the model's context of 64"),
        (("--model", "DECODER", "--prompt", PROMPT, "--target-token", "paris is"), "is 2 tokens"),
        (("--model", "DECODER", "--prompt", PROMPT, "--contrast", "mat"), "--contrast needs --target-token"),
        (("--model", "DECODER", "--prompt", PROMPT, "--method", "rollout"), "read one fixed attention row"),
        (("--model", "synthetic_vit", "--image", "IMAGE", "--generate", "2"), "--generate explain a decoder's"),
        (("--model", "synthetic_bert", "--text", " "), "empty text"),
        (
            (
                "--model",
                "synthetic_bert",
            ),
            "nothing to explain: pass --image FILE",
        ),
    ],
)
def test_clear_errors(decoder_folder, tmp_path, capsys, args, message):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    args = [{"IMAGE": str(image), "DECODER": str(decoder_folder)}.get(a, a) for a in args]
    assert explain(*args, "--out", str(tmp_path / "page.html")) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
