"""Dataset-scale attribution runs (`libra-jax run`), sharded over every device and host.

    from libra_jax.run import RunOptions, load_results, resolve_methods, run_dataset
    from libra_jax.data.sources import open_source

    dataset = open_source("imagenet:/data/val", model.data_config)
    run_dataset(model, params, dataset, resolve_methods(["libra_fullgrad_plus", "gradcam"]), "out/",
                RunOptions(batch_size=128))
    results = load_results("out/")    # {'index', 'source', 'label', 'pred', 'target', 'score', 'maps': {name: ...}}

Output layout and manifest schema: docs/run.md.
"""

from libra_jax.methods.names import resolve_methods
from libra_jax.run.manifest import RunMismatchError, load_results, read_manifest
from libra_jax.run.runner import RunOptions, run_dataset
from libra_jax.run.sharding import data_mesh, fetch_local, padded_size, replicate, shard_batch, sharded_attribution
from libra_jax.run.step import make_step, predict_and_attribute

__all__ = [
    "RunMismatchError",
    "RunOptions",
    "data_mesh",
    "fetch_local",
    "load_results",
    "make_step",
    "padded_size",
    "predict_and_attribute",
    "read_manifest",
    "replicate",
    "resolve_methods",
    "run_dataset",
    "shard_batch",
    "sharded_attribution",
]
