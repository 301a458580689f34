"""One writer per output folder: concurrent `libra-jax run`s, stale locks of killed runs, other hosts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from devices import REPO, device_env, finish, start_python, wait_for_line

from libra_jax.run.lock import LOCK_FILE, FolderLockedError, folder_lock

CLI = "import sys; from libra_jax import cli; sys.exit(cli.main(sys.argv[1:]))"
# the embedded model on 6 benchmark images; the first run pauses after its first shard so the second overlaps it
RUN = ["run", "--model", "synthetic_vit", "--data", "benchmark", "--limit", "6", "--batch", "2", "--shard-size", "2"]
RUN += ["--method", "libra_fullgrad_plus"]
PAUSE_AFTER_FIRST_SHARD = """
import os, sys, time
from libra_jax import cli
from libra_jax.run import manifest
write = manifest.write_index
def pause(*args, **kwargs):
    write(*args, **kwargs)
    if os.environ.get("PAUSE") and len(args[3]) == 1:
        print("paused", flush=True)
        time.sleep(float(os.environ["PAUSE"]))
manifest.write_index = pause
sys.exit(cli.main(sys.argv[1:]))
"""


def _tree_bytes(out) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_second_run_is_refused_while_the_first_finishes(tmp_path):
    env = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla-cache")}
    solo, shared = tmp_path / "solo", tmp_path / "shared"
    first = start_python(PAUSE_AFTER_FIRST_SHARD, *RUN, "--out", str(shared), PAUSE="20", **env)
    wait_for_line(first, "paused")
    second = subprocess.run(
        [sys.executable, "-c", CLI, *RUN, "--method", "gradcam", "--out", str(shared)],
        env=device_env(1, **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert second.returncode == 2
    message = second.stderr.strip().splitlines()[-1]
    assert f"output folder {shared} is in use by another run (pid {first.pid} on host {socket.gethostname()}" in message
    assert "libra_fullgrad_plus" in message and "wait for it to finish" in message
    assert first.poll() is None, "the refused run must not disturb the first"
    finish(first)
    finish(start_python(CLI, *RUN, "--out", str(solo), **env))
    assert not (shared / LOCK_FILE).exists()
    assert _tree_bytes(shared) == _tree_bytes(solo)  # complete and byte-identical to a run alone


def test_lock_of_a_killed_run_does_not_block_the_resume(tmp_path):
    out = tmp_path / "out"
    killed = start_python(PAUSE_AFTER_FIRST_SHARD, *RUN, "--out", str(out), PAUSE="600")
    wait_for_line(killed, "paused")
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == killed.pid  # left behind
    _, err = finish(start_python(CLI, *RUN, "--out", str(out)))
    assert "resuming: 1 of 3 shards already complete" in err
    assert not (out / LOCK_FILE).exists()


def test_lock_is_released_on_errors_and_reentrant(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), folder_lock(tmp_path, "first") as path:
        assert json.loads(path.read_text())["command"] == "first"
        with folder_lock(tmp_path, "nested"):  # the same process: re-entered, not refused
            pass
        assert path.exists()  # the inner exit leaves the outer holder's lock
        raise RuntimeError("boom")
    assert not path.exists()


def test_lock_from_another_host_is_never_taken_over(tmp_path):
    record = {"pid": 1, "host": "elsewhere", "start": None, "command": "libra-jax run --out x", "time": "t"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(record))
    with pytest.raises(FolderLockedError, match=f"pid 1 on host elsewhere.*delete {tmp_path / LOCK_FILE}"):
        with folder_lock(tmp_path):
            pass
    assert json.loads((tmp_path / LOCK_FILE).read_text()) == record


def test_dead_pid_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"pid": dead.pid, "host": socket.gethostname(), "start": None, "command": "old", "time": "t"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(record))
    with folder_lock(tmp_path, "new") as path:
        assert json.loads(path.read_text())["command"] == "new"
    assert not path.exists()
