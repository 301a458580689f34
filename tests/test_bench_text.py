"""benchmarks/bench_text.py and benchmarks/memory_8b.py run end to end on micro geometries (no timing asserted)."""

from __future__ import annotations

import pathlib

import pytest

from libra_jax.models.decoder import DecoderConfig

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_text
    import memory_8b

    return bench_text, memory_8b


def test_bench_text_writes_one_table_per_length(scripts, tmp_path):
    bench_text, _ = scripts
    out = tmp_path / "text.md"
    argv = ["--family", "llama", "--size", "micro", "--batch", "2", "--tokens", "6", "8", "--repeats", "1"]
    assert bench_text.main([*argv, "--out", str(out)]) == 0
    text = out.read_text()
    assert text.count("| variant | median ms | tokens/s | × floor") == 2
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    assert len(rows) == 2 * 5  # floor, libra FullGrad+, vanilla FullGrad+, all single-pass, attnlrp
    assert text.count("PASS ") + text.count("MISS ") == 2 * 2
    with pytest.raises(SystemExit):
        bench_text.parse_args(["--family", "bert", "--dtype", "bfloat16"])  # BERT has no bf16 compute option


def test_memory_8b_compiles_abstract_shapes_and_extrapolates(scripts, tmp_path, monkeypatch):
    _, memory_8b = scripts
    tiny = DecoderConfig(vocab_size=64, hidden_size=16, num_layers=5, num_heads=2, num_kv_heads=1, head_dim=8)
    monkeypatch.setattr(memory_8b, "LLAMA3_8B", tiny.replace(intermediate_size=32, max_positions=64))
    out = tmp_path / "fit.md"
    assert memory_8b.main(["--layers", "1", "3", "--tokens", "8", "--budget-gib", "1e-9", "--out", str(out)]) == 0
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ")][1:]
    assert [r[0].strip()[:1] for r in rows] == ["1"] * 3 + ["3"] * 3 + ["5"] * 3
    assert all(r[3].strip() == ("no" if "extrapolated" in r[0] else "-") for r in rows)  # a few KiB > 1 B
    assert memory_8b.extrapolate((2, 6.5), (4, 8.9), 32) == pytest.approx((8.9 + 1.2 * 28, 1.2))
