"""Fresh Python interpreters with N virtual CPU devices, for multi-device and multi-process tests.

XLA reads `--xla_force_host_platform_device_count` once, when jax starts its CPU backend, so a test
that needs 8 devices cannot get them in the pytest process: it runs its code in a subprocess.
"""

from __future__ import annotations

import os
import pathlib
import select
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def device_env(devices: int, **extra: str) -> dict[str, str]:
    """The environment of a CPU-only jax process with `devices` virtual devices (plus `extra` variables)."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    return env | extra


def start_python(code: str, *args: str, devices: int = 1, **extra: str) -> subprocess.Popen:
    """Start `python -c code args...` with `devices` CPU devices; stdout and stderr are piped (text)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=device_env(devices, **extra),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[str, str]:
    """Wait for `proc`; (stdout, stderr), or AssertionError with both when it fails or times out."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"subprocess timed out after {timeout}s\nstdout:\n{out}\nstderr:\n{err}") from None
    if proc.returncode != 0:
        raise AssertionError(f"subprocess exited with {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}")
    return out, err


def run_python(code: str, *args: str, devices: int = 1, timeout: float = 240, **extra: str) -> tuple[str, str]:
    """Run `python -c code args...` with `devices` CPU devices to completion; (stdout, stderr)."""
    return finish(start_python(code, *args, devices=devices, **extra), timeout)


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 240) -> None:
    """Block until `proc` prints a stdout line containing `text` (AssertionError if it exits or times out)."""
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if text in line:
            return
        if not ready or not line:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"no line with {text!r} from the subprocess\nstdout:\n{out}\nstderr:\n{err}")


def wait_for_file(path: pathlib.Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    """Block until `path` exists (written atomically by `proc`); AssertionError if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"{path} was not written\nstdout:\n{out}\nstderr:\n{err}")
        time.sleep(0.1)
