"""`libra-jax run`: dataset-scale attribution in resumable shards, sharded over devices and processes.

One tiny random ViT (depth 1) saved as a checkpoint, 13 small PNGs of different sizes of which one
cannot be decoded, two methods under two presets. The in-process runs share one compilation; the
multi-device runs (8 virtual devices; 2 processes × 2 devices) and the killed run are subprocesses.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
import socket

import jax
import numpy as np
import pytest
from devices import finish, run_python, start_python, wait_for_file, wait_for_line
from helpers import TINY
from PIL import Image

from libra_jax import cli
from libra_jax.data.sources import BenchmarkDataset, ImageListDataset, open_source
from libra_jax.data.synthetic import BenchmarkConfig
from libra_jax.methods import attribution
from libra_jax.models import VisionTransformer, ViTConfig
from libra_jax.models.config import DataConfig
from libra_jax.preprocess import normalise
from libra_jax.run import RunMismatchError, RunOptions, load_results, read_manifest, resolve_methods, run_dataset
from libra_jax.run.prefetch import prefetch
from libra_jax.weights.formats import save_checkpoint

METHODS = ["libra_fullgrad_plus", "gradcam"]
OPTIONS = RunOptions(batch_size=5, shard_size=10, progress=False)  # 12 decodable images: shards of 10 + 2
BAD = "05.png"  # not an image
PROVENANCE = {"model": "tiny", "checkpoint": None, "data": "images"}
COMPILATIONS: dict[str, int] = {}  # XLA compilations of the reference run


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("run")
    model = VisionTransformer(ViTConfig(**{**TINY, "depth": 1}), DataConfig(input_size=(32, 32)))
    # random weights drawn from the shapes: an eager `model.init` spends seconds compiling single ops
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((32, 32, 3), np.float32))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: 0.1 * rng.standard_normal(s.shape, np.float32), shapes["params"])
    images = folder / "images"
    images.mkdir()
    for i in range(13):
        Image.fromarray(rng.integers(0, 256, (30 + 3 * i, 40, 3), dtype=np.uint8)).save(images / f"{i:02d}.png")
    (images / BAD).write_bytes(b"this is not a PNG")
    return {
        "folder": folder,
        "model": model,
        "params": params,
        "checkpoint": str(save_checkpoint(folder / "tiny.safetensors", model, params)),
        "images": images,
        "xla_cache": str(folder / "xla-cache"),  # persistent compilation cache shared by the subprocesses
    }


def _run(files, out) -> dict:
    model = files["model"]
    dataset = ImageListDataset.from_folder(files["images"], model.data_config)
    return run_dataset(model, files["params"], dataset, resolve_methods(METHODS), out, OPTIONS, provenance=PROVENANCE)


@pytest.fixture(scope="module")
def reference(files) -> pathlib.Path:
    """An uninterrupted single-device run, counting its XLA compilations."""
    compiles = []

    def count(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        _run(files, files["folder"] / "reference")
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    COMPILATIONS["reference"] = len(compiles)
    return files["folder"] / "reference"


def _assert_maps_close(maps: dict, expected: dict) -> None:
    for name, want in expected.items():
        np.testing.assert_allclose(maps[name], want, rtol=1e-4, atol=1e-5 * np.abs(want).max(), err_msg=name)


def _assert_same_rows(results: dict, expected: dict) -> None:
    np.testing.assert_array_equal(results["index"], expected["index"])
    np.testing.assert_array_equal(results["pred"], expected["pred"])
    _assert_maps_close(results["maps"], expected["maps"])


def _tree_bytes(out: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- single device, in process


def test_one_compilation_for_full_and_padded_batches(reference):
    assert COMPILATIONS["reference"] == 1  # batches of 5, 5, 5 (one undecodable image) and a padded 3


def test_manifest_lists_shards_and_undecodable_images(reference):
    manifest = read_manifest(reference)
    assert manifest["num_attributed"] == 12
    assert manifest["num_skipped"] == 1
    (skipped,) = manifest["skipped"]
    assert skipped["index"] == 5 and skipped["path"].endswith(BAD) and "cannot decode" in skipped["reason"]
    shards = [(e["shard"], e["start"], e["stop"], e["rows"]) for e in manifest["shards"]]
    assert shards == [(0, 0, 10, 9), (1, 10, 13, 3)]
    run = manifest["run"]
    assert run["methods"] == {"libra_fullgrad_plus": {"method": "fullgrad_plus", "preset": "libra"},
                              "gradcam": {"method": "gradcam", "preset": "vanilla"}}  # fmt: skip
    assert run["presets"] == ["libra", "vanilla"] and run["num_devices"] == 1
    assert len(run["params_sha256"]) == 64 and run["versions"]["jax"] == jax.__version__
    assert manifest["arrays"]["maps/gradcam"] == {"dtype": "float32", "shape": [4, 4]}
    assert not [p for p in reference.rglob(".*")], "no temporary files left"


def test_maps_equal_direct_attribution(files, reference):
    model, params = files["model"], files["params"]
    results = load_results(reference)
    assert results["index"].tolist() == [i for i in range(13) if i != 5]
    dataset = ImageListDataset.from_folder(files["images"], model.data_config)
    x = normalise(np.stack([dataset[int(i)]["image"] for i in results["index"]]), model.data_config)
    logits = np.asarray(jax.jit(model.apply)({"params": params}, x)[0])
    np.testing.assert_array_equal(results["pred"], logits.argmax(-1))
    np.testing.assert_array_equal(results["target"], results["pred"])
    np.testing.assert_allclose(results["score"], logits.max(-1), rtol=1e-5, atol=1e-6)
    direct = jax.jit(attribution(model, "fullgrad_plus", rules="libra"))(params, x, results["pred"])
    _assert_maps_close(results["maps"], {"libra_fullgrad_plus": np.asarray(direct)})
    assert results["label"].tolist() == [-1] * 12


def test_rows_name_their_source_files(reference):
    """Each row says which file its maps belong to (relative to the folder), in the order of the maps."""
    results = load_results(reference)
    assert results["source"].tolist() == [f"{i:02d}.png" for i in range(13) if i != 5]
    assert read_manifest(reference)["arrays"]["source"] == {"dtype": "str", "shape": []}


def test_results_of_format_version_1_are_read_but_not_resumed(files, reference, tmp_path):
    """Version 1 (before per-row sources): load_results returns the rows without 'source'; a run into the folder
    is refused, naming the version, before anything is written."""
    out = tmp_path / "old"
    shutil.copytree(reference, out)
    for path in (out / "manifest.json", out / "shards" / "index-p0.json"):
        record = json.loads(path.read_text())
        record["version"] = 1
        record.get("arrays", {}).pop("source", None)
        path.write_text(json.dumps(record))
    results = load_results(out)
    assert "source" not in results and results["index"].tolist() == load_results(reference)["index"].tolist()
    before = _tree_bytes(out)
    with pytest.raises(RunMismatchError, match="format version 1; .* version 2 .*run into a new output folder"):
        _run(files, out)
    assert _tree_bytes(out) == before


def test_other_run_in_the_folder_is_an_error(files, reference):
    before = _tree_bytes(reference)
    model, params = files["model"], files["params"]
    dataset = ImageListDataset.from_folder(files["images"], model.data_config)
    with pytest.raises(RunMismatchError, match=r"different run \(methods: \['gradcam', 'libra_fullgrad_plus'\]"):
        run_dataset(model, params, dataset, resolve_methods(["libra_ixg"]), reference, OPTIONS, provenance=PROVENANCE)
    other_params = jax.tree.map(lambda a: a + 1, params)
    with pytest.raises(RunMismatchError, match="params_sha256"):
        _run({**files, "params": other_params}, reference)
    code = cli.main(["run", "--model", files["checkpoint"], "--data", str(files["images"]), "--out", str(reference)])
    assert code == 2  # another model name, checkpoint and methods
    assert _tree_bytes(reference) == before, "nothing was touched"


def test_corrupt_or_truncated_shards_are_recomputed(files, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    first, second = out / "shards" / "shard-00000-p0.npz", out / "shards" / "shard-00001-p0.npz"
    first.write_bytes(first.read_bytes()[:-100])  # truncated
    data = bytearray(second.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern, same size
    second.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="shard-00000-p0.npz is truncated"):
        load_results(out)
    with pytest.warns(UserWarning) as caught:
        _run(files, out)
    messages = sorted(str(w.message) for w in caught)
    assert "shard-00000-p0.npz is truncated" in messages[0] and "recomputing" in messages[0]
    assert "shard-00001-p0.npz is corrupt (sha256 mismatch)" in messages[1]
    assert _tree_bytes(out) == _tree_bytes(reference)


def test_full_disk_names_the_problem_and_keeps_no_partial_shard(files, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_fdopen = os.fdopen

    class FullDisk:
        """A file that takes half of the data, then fails like a full disk."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data: bytes):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        return FullDisk(f) if ".shard-00001-p0.npz." in os.readlink(f"/proc/self/fd/{fd}") else f

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(OSError, match="no space left on device while writing .*shard-00001-p0.npz") as e:
        _run(files, out)
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC and "rerun the same command to resume" in str(e.value)
    assert sorted(p.name for p in out.rglob("*")) == ["index-p0.json", "shard-00000-p0.npz", "shards"]
    assert list(json.loads((out / "shards" / "index-p0.json").read_text())["shards"]) == ["0"]
    _run(files, out)  # resumes
    assert _tree_bytes(out) == _tree_bytes(reference)


def test_cli_user_errors(files, tmp_path, capsys):
    base = ["run", "--model", files["checkpoint"], "--out", str(tmp_path / "o")]
    assert cli.main([*base, "--data", str(tmp_path / "nowhere")]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert cli.main([*base, "--data", str(files["images"]), "--batch", "4", "--shard-size", "6"]) == 2
    assert "multiple of the batch size" in capsys.readouterr().err
    assert cli.main([*base, "--data", str(files["images"]), "--target", "label"]) == 2
    assert "has no label" in capsys.readouterr().err
    assert cli.main([*base, "--data", str(files["images"]), "--target", "7"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_cli_methods_rules_and_model_kw(files, tmp_path, capsys):
    """--method a b with --rules p q: every plain name under each preset, named <preset>_<name>; --model-kw is
    passed to the model (a 2-block model cannot take the 1-block weights)."""
    base = [
        "run",
        "--model",
        "vit_tiny_patch16_224",
        "--checkpoint",
        files["checkpoint"],
        "--data",
        str(files["images"]),
    ]
    base += ["--model-kw", *(f"{k}={v}" for k, v in TINY.items() if k != "depth"), "--limit", "2", "--batch", "2"]
    assert cli.main([*base, "--model-kw", "depth=2", "--out", str(tmp_path / "o")]) == 2  # repeatable
    assert "cannot load model" in capsys.readouterr().err
    argv = [*base, "--model-kw", "depth=1", "--method", "ixg", "libra_gradcam", "--rules", "vanilla", "libra"]
    assert cli.main([*argv, "--out", str(tmp_path / "o")]) == 0
    methods = read_manifest(tmp_path / "o")["run"]["methods"]
    assert methods == {
        "vanilla_ixg": {"method": "ixg", "preset": "vanilla"},
        "libra_ixg": {"method": "ixg", "preset": "libra"},
        "libra_gradcam": {"method": "gradcam", "preset": "libra"},
    }


# ---------------------------------------------------------------- data sources and helpers


def test_list_file_and_benchmark_sources(files, tmp_path):
    dc = files["model"].data_config
    listing = tmp_path / "list.txt"
    shutil.copy(files["images"] / "01.png", tmp_path / "01.png")
    listing.write_text(f"# images\n{files['images']}/00.png 3\n\n01.png 1\n")
    dataset = open_source(f"list:{listing}", dc)
    assert len(dataset) == 2 and dataset[0]["label"] == 3 and dataset[1]["image"].shape == (32, 32, 3)
    assert dataset.source_of(1) == "01.png"  # relative to the list file's folder, as written
    listing.write_text(f"{files['images']}/00.png 3\n{files['images']}/01.png\n")
    with pytest.raises(ValueError, match="line 2 .* every line has a label or none"):
        open_source(str(listing), dc)
    with pytest.raises(ValueError, match="the benchmark makes 64px images"):
        open_source("benchmark", dc, BenchmarkConfig(image_size=64))
    default = open_source("benchmark:val", dc, size=4)  # at the model's input size
    assert len(default) == 4 and default[3]["image"].shape == (32, 32, 3) and default.source_of(3) == "benchmark:val#3"
    pairs = BenchmarkDataset(BenchmarkConfig(image_size=32), dc, "pairs", size=3)
    assert 0 <= pairs[2]["label"] < 8 and pairs[2]["mask"].shape == (32, 32)


def test_prefetch_keeps_order_and_reraises():
    def items():
        yield from range(5)
        raise RuntimeError("decoder failed")

    seen = []
    with pytest.raises(RuntimeError, match="decoder failed"):
        for item in prefetch(items(), depth=2):
            seen.append(item)
    assert seen == list(range(5))
    stream = prefetch(iter(range(100)), depth=3)
    assert next(stream) == 0
    stream.close()  # stops the producer thread
    assert list(prefetch(range(3), depth=0)) == [0, 1, 2]


# ---------------------------------------------------------------- killed and restarted (subprocesses)

PAUSE = """
import os, sys, time
from libra_jax import cli
from libra_jax.run import store
write = store.write_atomic
def pause(path, data):
    name = os.path.basename(path)
    if name == os.environ["PAUSE_AT"]:
        with open(os.path.join(os.path.dirname(path), f".{name}.cut.tmp"), "wb") as f:
            f.write(data[: len(data) // 2])  # a write cut short by the kill
        print("paused", flush=True)
        time.sleep(600)
    write(path, data)
store.write_atomic = pause  # the shard writer's atomic write
sys.exit(cli.main(sys.argv[1:]))
"""
CLI = "import sys; from libra_jax import cli; sys.exit(cli.main(sys.argv[1:]))"


def _stats(paths) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def test_killed_run_resumes_to_identical_results(files, tmp_path):
    listing = tmp_path / "labels.txt"
    lines = [f"{p.name} {i % 5}" for i, p in enumerate(sorted(files["images"].iterdir()))] + ["missing.png 0"]
    listing.write_text("\n".join(lines))
    shutil.copytree(files["images"], tmp_path, dirs_exist_ok=True)
    args = ["run", "--model", files["checkpoint"], "--data", f"list:{listing}", "--method", METHODS[0]]
    args += ["--target", "label", "--batch", "2", "--shard-size", "4"]  # 4 shards, the last batch padded
    env = {"JAX_COMPILATION_CACHE_DIR": files["xla_cache"]}
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run_python(CLI, *args, "--out", str(whole), **env)

    killed = start_python(PAUSE, *args, "--out", str(resumed), PAUSE_AT="shard-00002-p0.npz", **env)
    wait_for_line(killed, "paused")
    killed.terminate()
    killed.wait(timeout=60)
    assert not (resumed / "manifest.json").exists()
    assert list(json.loads((resumed / "shards" / "index-p0.json").read_text())["shards"]) == ["0", "1"]
    assert not (resumed / "shards" / "shard-00002-p0.npz").exists()
    kept = _stats(resumed.glob("shards/shard-0000[01]-p0.npz"))

    _, err = run_python(CLI, *args, "--out", str(resumed), **env)
    assert "resuming: 2 of 4 shards already complete" in err and "img/s" in err
    assert _stats(resumed.glob("shards/shard-0000[01]-p0.npz")) == kept, "complete shards were not rewritten"
    assert _tree_bytes(resumed) == _tree_bytes(whole)  # manifest, index and every shard byte-identical
    results, manifest = load_results(whole), read_manifest(whole)
    assert manifest["num_skipped"] == 2 and manifest["run"]["target"] == "label"
    np.testing.assert_array_equal(results["target"], results["label"])
    np.testing.assert_array_equal(results["label"], [i % 5 for i in range(13) if i != 5])


# ---------------------------------------------------------------- several devices and processes (subprocesses)

EIGHT_DEVICES = """
import sys
import jax, numpy as np
from libra_jax import cli
from libra_jax.preprocess import normalise
from libra_jax.data.sources import open_source
from libra_jax import load
from libra_jax.run import data_mesh, fetch_local, make_step, padded_size, replicate, resolve_methods, shard_batch
from libra_jax.run import sharded_attribution
checkpoint, images, out = sys.argv[1:4]
assert jax.device_count() == 8
# the Python API on a batch of 5 padded to 8 (the run below reuses this compilation: same step, shapes, mesh)
model, params = load(checkpoint)
dataset = open_source(images, model.data_config)
x = normalise(np.stack([dataset[i]["image"] for i in range(5)]), model.data_config)
mesh = data_mesh()
assert padded_size(5, mesh) == 8
fn = sharded_attribution(make_step(model, resolve_methods(sys.argv[-1].split(","))), mesh)
padded = np.pad(x, ((0, 3), (0, 0), (0, 0), (0, 0)))
result = fn(replicate(params, mesh), shard_batch(padded, mesh, 8), shard_batch(np.zeros(8, np.int32), mesh, 8))
assert len(result["pred"].sharding.device_set) == 8
np.savez(out, **{k: v[:5] for k, v in fetch_local(result["maps"]).items()})
sys.exit(cli.main(sys.argv[4:-1]))
"""


def _run_args(files, out, methods=METHODS) -> list[str]:
    args = ["run", "--model", files["checkpoint"], "--data", f"folder:{files['images']}", "--method", *methods]
    return [*args, "--batch", "5", "--shard-size", "10", "--no-progress", "--out", str(out)]


def test_eight_devices_equal_one(files, reference, tmp_path):
    api = tmp_path / "api.npz"
    args = [files["checkpoint"], str(files["images"]), str(api), *_run_args(files, tmp_path / "out"), ",".join(METHODS)]
    run_python(EIGHT_DEVICES, *args, devices=8)
    manifest = read_manifest(tmp_path / "out")
    assert manifest["run"]["num_devices"] == 8 and manifest["skipped"] == read_manifest(reference)["skipped"]
    expected = load_results(reference)
    _assert_same_rows(load_results(tmp_path / "out"), expected)
    with np.load(api) as maps:  # images 0..4 (all decodable)
        _assert_maps_close(dict(maps), {k: v[:5] for k, v in expected["maps"].items()})


def _two_processes(files, out, pause_at: str | None = None) -> list:
    """Start `libra-jax run` as 2 processes × 2 devices over loopback; process 1 pauses before writing `pause_at`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    distributed = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id"]
    args = [*_run_args(files, out, METHODS[:1]), *distributed]  # one method: a faster compilation
    env = {"JAX_COMPILATION_CACHE_DIR": files["xla_cache"]}
    first = CLI if pause_at is None else PAUSE
    return [start_python(first if i else CLI, *args, str(i), devices=2, PAUSE_AT=pause_at or "", **env) for i in (0, 1)]


def _finish_all(procs) -> list[tuple[str, str]]:
    try:
        return [finish(p) for p in procs]
    finally:
        for p in procs:
            p.kill()


@pytest.fixture(scope="module")
def two_process_run(files, tmp_path_factory) -> tuple[pathlib.Path, list[tuple[str, str]]]:
    out = tmp_path_factory.mktemp("two-processes") / "out"
    return out, _finish_all(_two_processes(files, out))


def test_two_processes_with_two_devices_each(two_process_run, reference):
    out, outputs = two_process_run
    assert "attributed 12 images" in outputs[0][0] and "attributed" not in outputs[1][0]  # process 0 reports
    manifest = read_manifest(out)
    assert manifest["run"]["num_processes"] == 2 and manifest["run"]["num_devices"] == 4
    assert [(e["shard"], e["process"]) for e in manifest["shards"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert manifest["skipped"] == read_manifest(reference)["skipped"]
    expected = load_results(reference)
    _assert_same_rows(load_results(out), {**expected, "maps": {METHODS[0]: expected["maps"][METHODS[0]]}})


def test_two_processes_killed_and_restarted(files, two_process_run, tmp_path):
    """Process 1 dies while writing its rows of the last shard: every process redoes that shard on restart."""
    out = tmp_path / "out"
    procs = _two_processes(files, out, pause_at="shard-00001-p1.npz")
    wait_for_line(procs[1], "paused")
    # process 0 writes shard 0 after dispatching shard 1's batch, so process 1 can reach its pause first
    wait_for_file(out / "shards" / "shard-00000-p0.npz", procs[0])
    for p in procs:
        p.kill()
        p.wait(timeout=60)
    assert not (out / "manifest.json").exists() and not (out / "shards" / "shard-00001-p1.npz").exists()
    kept = _stats(out.glob("shards/shard-00000-p*.npz"))
    assert len(kept) == 2
    _finish_all(_two_processes(files, out))
    assert _stats(out.glob("shards/shard-00000-p*.npz")) == kept, "complete shards were not rewritten"
    assert _tree_bytes(out) == _tree_bytes(two_process_run[0])  # manifest, indices and every shard byte-identical
