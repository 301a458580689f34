"""Errors at the edges of the command line: an output path that cannot be written and images that cannot be
decoded end in one line on stderr and exit code 2, before the model is loaded; `run` and `evaluate` skip such
images (their datasets raise `BadFileError`) and say why."""

from __future__ import annotations

import errno
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from libra_jax import cli, viz
from libra_jax.data.imagenet import BadFileError
from libra_jax.data.sources import open_source
from libra_jax.models.config import DataConfig
from libra_jax.run.lock import LOCK_FILE


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path, side: int = 20000) -> None:
    """A PNG whose header declares side × side RGB pixels (400 M for 20000: over PIL's limit) and holds none."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b""))


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return str(path)


def explain_error(capsys, *args) -> str:
    """Run `libra-jax explain` on the embedded ViT; assert exit code 2 and return its one stderr line."""
    assert cli.main(["explain", "--model", "synthetic_vit", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_out_under_a_file(tmp_path, image, capsys):
    """Also for `evaluate` and `run` (their folders are made, and locked, before any batch is computed)."""
    (tmp_path / "report").write_text("a file")
    err = explain_error(capsys, "--image", image, "--out", str(tmp_path / "report" / "sub" / "heat.png"))
    assert f"{tmp_path / 'report'} is a file, not a folder; choose another output path" in err
    for command in (["evaluate", "--n", "2"], ["run", "--data", "benchmark", "--limit", "2", "--no-progress"]):
        assert cli.main([*command, "--out", str(tmp_path / "report" / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{tmp_path / 'report'} is a file, not a folder" in err, err


def test_out_is_a_folder_or_a_pipe(tmp_path, image, capsys):
    err = explain_error(capsys, "--image", image, "--out", str(tmp_path))
    assert f"cannot write {tmp_path}: it is a folder; give a file name" in err
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    err = explain_error(capsys, "--image", image, "--out", str(pipe))
    assert "it is not a regular file" in err
    assert sorted(os.listdir(tmp_path)) == ["img.png", "pipe"], "nothing written, the pipe left in place"


def test_out_in_a_read_only_folder(tmp_path, image, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("this user (root) can write to a read-only folder")
        err = explain_error(capsys, "--image", image, "--out", str(folder / "heat.png"))
    finally:
        folder.chmod(0o755)
    assert f"cannot write {folder / LOCK_FILE}: permission denied; choose a folder you can write to" in err


def test_out_on_a_full_disk(tmp_path, image, capsys, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)  # the lock file is the first thing written
    err = explain_error(capsys, "--image", image, "--out", str(tmp_path / "heat.png"))
    monkeypatch.undo()
    assert f"cannot write {tmp_path / LOCK_FILE}: no space left on device; free some space" in err
    assert os.listdir(tmp_path) == ["img.png"], "no empty lock left behind"


def test_full_disk_while_writing_a_file(tmp_path, monkeypatch):
    def fdopen(fd, mode):
        os.close(fd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'heat.png'}: no space left on device") as e:
        viz.save_png(tmp_path / "heat.png", np.zeros((4, 4), np.uint8))
    assert e.value.errno == errno.ENOSPC and os.listdir(tmp_path) == []


def test_undecodable_and_decompression_bomb_images(tmp_path, capsys):
    bomb, junk = tmp_path / "bomb.png", tmp_path / "junk.png"
    bomb_png(bomb)
    junk.write_bytes(b"not an image")
    err = explain_error(capsys, "--image", str(bomb))
    assert f"cannot read image file {bomb}: too large to decode safely" in err
    assert "exceeds limit of" in err  # PIL's message gives the limit in pixels
    err = explain_error(capsys, "--image", str(junk))
    assert f"cannot decode image file {junk}: not a known image format" in err
    dataset = open_source(str(tmp_path), DataConfig(input_size=(32, 32)))  # what `run` and `evaluate` read
    for i, name in enumerate(["bomb.png", "junk.png"]):
        assert dataset.path_of(i).endswith(name)
        with pytest.raises(BadFileError, match=f"cannot decode .*{name}: " + ("DecompressionBomb" if i == 0 else "")):
            dataset[i]
