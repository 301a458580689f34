"""A hub model name without network: one clear line within 5 s, per interface, offline or unreachable.

Subprocesses, because huggingface_hub reads HF_HUB_OFFLINE / HF_ENDPOINT when it is imported; the time is
measured inside them, around the call alone (not the interpreter start and imports).
"""

from __future__ import annotations

import socket

import pytest
from devices import finish, start_python
from PIL import Image

MODEL = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
TIMED = """
import sys, time
from libra_jax import cli, load
start = time.perf_counter()
if sys.argv[1] == "python":
    try:
        load(sys.argv[2])
    except OSError as e:
        print(f"error: {e}")
else:
    code = cli.main(sys.argv[2:])
    print(f"exit {code}")
print(f"elapsed {time.perf_counter() - start:.3f}")
"""


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["HF_HUB_OFFLINE", "unreachable"])
def no_hub(request, tmp_path) -> dict[str, str]:
    """An empty cache, and either HF_HUB_OFFLINE=1 or an endpoint that refuses connections."""
    offline = "1" if request.param == "HF_HUB_OFFLINE" else "0"
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    return {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": offline, "HF_ENDPOINT": endpoint}


def _run(*args: str, env: dict[str, str]) -> tuple[list[str], list[str], float]:
    """(stdout lines but the last, stderr lines, seconds the call took)."""
    out, err = finish(start_python(TIMED, *args, **env))
    lines = out.strip().splitlines()
    return lines[:-1], err.strip().splitlines(), float(lines[-1].removeprefix("elapsed "))


def test_python_interface(no_hub):
    out, err, elapsed = _run("python", MODEL, env=no_hub)
    assert err == [] and len(out) == 1  # no retry messages, one line
    assert f"timm/{MODEL} is not in the local cache" in out[0] and "checkpoint=<local file>" in out[0]
    assert "--checkpoint" not in out[0]
    assert ("HF_HUB_OFFLINE is set" if no_hub["HF_HUB_OFFLINE"] == "1" else "cannot be reached") in out[0]
    assert elapsed < 5.0


def test_cli_interface(no_hub, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    args = ["explain", "--model", MODEL, "--image", str(tmp_path / "x.png"), "--out", str(tmp_path / "h.png")]
    out, err, elapsed = _run("cli", *args, env=no_hub)
    assert out == ["exit 2"] and len(err) == 1, err
    assert err[0].startswith("libra-jax explain: error: cannot load model") and "--checkpoint FILE" in err[0]
    assert "checkpoint=" not in err[0]
    assert elapsed < 5.0
