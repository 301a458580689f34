"""The CAM options against the peers' definitions, and the defaults against LibraGrad's.

pytorch-grad-cam computes, from a target layer's activation a and its gradient g (autograd hooks), for the raw
logit (`ClassifierOutputTarget`): GradCAM w = mean_t g, XGradCAM w = Σ_t g·a / (Σ_t a + 1e-7), map = Σ_c w·a,
and HiResCAM Σ_c g·a, over the patch tokens (its ViT `reshape_transform` drops token 0), then ReLU, upsampling
and min-max scaling, which we do not apply. The references below are those definitions, written here on a timm
ViT's hooks (no pytorch-grad-cam package), in float64; ours run in float32 at the highest matmul precision.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

import libra_jax
from libra_jax.methods import core
from libra_jax.report import table_note

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

pytestmark = pytest.mark.usefixtures("highest_precision")

ARCH = "vit_tiny_patch16_224"
KWARGS = dict(depth=3, embed_dim=32, num_heads=2, patch_size=8, img_size=32, num_classes=7)
RTOL = 1e-5


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """(timm model in float64, our model, params, images NHWC, labels) with the same random weights."""
    torch.manual_seed(0)
    ref = timm.create_model(ARCH, pretrained=False, **KWARGS).eval()
    with torch.no_grad():  # biases, norm affines and tokens off their 0 / 1 init, so no term is trivial
        for name, p in ref.named_parameters():
            if p.ndim == 1 or name in ("cls_token", "pos_embed"):
                p.add_(0.2 * torch.randn(p.shape))
    path = tmp_path_factory.mktemp("cam") / "vit.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model, params = libra_jax.load(ARCH, checkpoint=path, **KWARGS)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    return ref.double(), model, params, x, np.array([0, 3, 6])


def hooked(ref, module, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`module`'s output a and ∂(Σ_b logit_b[y_b])/∂a, (B, N, C) each, by torch autograd hooks (float64)."""
    saved = {}

    def hook(_, __, out):
        saved["a"] = out
        out.register_hook(lambda g: saved.setdefault("g", g))

    handle = module.register_forward_hook(hook)
    logits = ref(torch.from_numpy(x.transpose(0, 3, 1, 2)).double())
    logits.gather(1, torch.from_numpy(y)[:, None]).sum().backward()
    handle.remove()
    return saved["a"].detach().numpy(), saved["g"].numpy()


def peer_maps(a: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
    """pytorch-grad-cam's GradCAM / XGradCAM / HiResCAM on the patch tokens, before its ReLU: (B, P) each."""
    a, g = a[:, 1:], g[:, 1:]
    xgrad_w = (g * a / (a.sum(1, keepdims=True) + 1e-7)).sum(1)
    return {
        "gradcam": (a * g.mean(1)[:, None]).sum(-1),
        "xgradcam": (a * xgrad_w[:, None]).sum(-1),
        "hirescam": (g * a).sum(-1),
    }


def assert_close(ours, want: np.ndarray, name: str) -> None:
    ours = np.asarray(ours, np.float64).reshape(want.shape)
    err = np.abs(ours - want).max() / np.abs(want).max()
    assert err <= RTOL, f"{name}: {err:.2e} of the map's max"


@pytest.mark.parametrize("layer", ["norm1", 1])
def test_pytorch_grad_cam_recipes(vit, layer):
    """layer="norm1" is pytorch-grad-cam's ViT target `blocks[-1].norm1`; layer=1, its target `blocks[0]`."""
    ref, model, params, x, y = vit
    module = ref.blocks[-1].norm1 if layer == "norm1" else ref.blocks[layer - 1]
    want = peer_maps(*hooked(ref, module, x, y))
    methods = list(want)
    fn = libra_jax.attribution(model, methods, "vanilla", target="logit", layer=layer, prefix_tokens="exclude")
    ours = jax.jit(fn)(params, x, y)
    for name in methods:
        assert_close(ours[name], want[name], f"{name} at layer={layer!r}")


def test_defaults_are_libragrad_definitions(vit):
    """Defaults: the last block's input, channel weights over every token (the cls token included)."""
    ref, model, params, x, y = vit
    a, g = hooked(ref, ref.blocks[-2], x, y)
    want = {
        "gradcam": (a * g.mean(1)[:, None]).sum(-1),
        "xgradcam_plus": (a * ((g * np.abs(a)).sum(1) / (np.abs(a).sum(1) + 1e-7))[:, None]).sum(-1),
    }
    ours = jax.jit(libra_jax.attribution(model, list(want), "vanilla", target="logit", return_tokens=True))(
        params, x, y
    )
    for name in want:
        assert_close(ours[name], want[name], name)


def test_norm1_is_probed_only_on_request(vit):
    """The default record carries no norm1 probe (no added cost); asking adds one per block."""
    _, model, _, x, _ = vit

    def names(probes):
        return {"/".join(path) for path in flatten_dict(probes)}

    default = names(core.probe_template(model, x[0]))
    asked = names(core.probe_template(model, x[0], ("norm1",)))
    assert asked - default == {f"blocks_{i}/norm1_out" for i in range(KWARGS["depth"])}
    assert default <= asked


def test_table_note_flags_hirescam_under_a_plain_layernorm_gradient():
    row = {"mif": 0.3}
    assert "near-total cancellation" in table_note({("hirescam", "vanilla"): row, ("gradcam", "libra"): row})
    assert table_note({("hirescam", "libra"): row, ("gradcam", "vanilla"): row}) == ""


class TestErrors:
    def test_bad_layer_lists_the_choices(self, vit):
        _, model, params, x, y = vit
        for layer in (3, "norm2"):
            with pytest.raises(ValueError, match=r"block index in \[-3, 2\].*'norm1'"):
                jax.eval_shape(libra_jax.attribution(model, "gradcam", layer=layer), params, x, y)

    def test_bad_prefix_tokens(self, vit):
        _, model, params, x, y = vit
        with pytest.raises(ValueError, match="prefix_tokens must be one of"):
            jax.eval_shape(libra_jax.attribution(model, "xgradcam", prefix_tokens="drop"), params, x, y)

    def test_model_without_norm1(self):
        model, _ = libra_jax.load("synthetic_bert")
        with pytest.raises(ValueError, match="does not record.*layer=-1"):
            libra_jax.attribution(model, "hirescam", layer="norm1")
