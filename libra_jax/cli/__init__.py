"""The `libra-jax` command line: one module per command (explain, evaluate, run, train, demo; `explain` dispatches
from `explain_command` to its image, text-classifier and decoder modules), the shared vocabulary in `options`
(`--model`, `--checkpoint`, `--model-kw`, `--method`, `--rules`), the parser in `commands`.

    libra-jax explain --model synthetic_vit --image pair.png --method libra_fullgrad_plus gradcam
    libra-jax evaluate --model synthetic_vit --method ixg fullgrad --rules vanilla libra --n 200

Each command is a thin layer over a library function with typed arguments (`libra_jax.evaluate.evaluate_data`,
`libra_jax.run.run_dataset`, `libra_jax.train.train`, `libra_jax.demo.demo`).
"""

from libra_jax.cli.commands import build_parser, main
from libra_jax.cli.options import UserError

__all__ = ["UserError", "build_parser", "main"]
