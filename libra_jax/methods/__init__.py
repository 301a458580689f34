"""Attribution methods as pure functions `fn(params, x, y)`.

    libra_fullgrad_plus = libra_jax.methods.libra_fullgrad_plus(model)
    maps = jax.jit(libra_fullgrad_plus)(params, x, y)        # (B, gh, gw)

Every method has a vanilla-gradient constructor (`fullgrad_plus`) and a LibraGrad one
(`libra_fullgrad_plus`); `attnlrp`, `cp_lrp` and `decompx` are IxG under their presets.
For any other preset, or several methods from one pass, use `attribution`.
"""

from libra_jax.methods.api import METHODS, attribution, named, resolve_method, to_grid

ixg = named("ixg", "vanilla")
libra_ixg = named("ixg", "libra")
fullgrad = named("fullgrad", "vanilla")
libra_fullgrad = named("fullgrad", "libra")
fullgrad_plus = named("fullgrad_plus", "vanilla")
libra_fullgrad_plus = named("fullgrad_plus", "libra")
fullgrad_plus_skip = named("fullgrad_plus_skip", "vanilla")
libra_fullgrad_plus_skip = named("fullgrad_plus_skip", "libra")
hirescam = named("hirescam", "vanilla")
libra_hirescam = named("hirescam", "libra")
gradcam = named("gradcam", "vanilla")
libra_gradcam = named("gradcam", "libra")
xgradcam = named("xgradcam", "vanilla")
libra_xgradcam = named("xgradcam", "libra")
xgradcam_plus = named("xgradcam_plus", "vanilla")
libra_xgradcam_plus = named("xgradcam_plus", "libra")
gradsam = named("gradsam", "vanilla")
libra_gradsam = named("gradsam", "libra")
genatt = named("genatt", "vanilla")
libra_genatt = named("genatt", "libra")
rollout = named("rollout", "vanilla")
attcat = named("attcat", "vanilla")
libra_attcat = named("attcat", "libra")
tokentm = named("tokentm", "vanilla")
libra_tokentm = named("tokentm", "libra")
rawatt = named("rawatt", "vanilla")
ig = named("ig", "vanilla")
libra_ig = named("ig", "libra")
ig_tokenspace_paper = named("ig_tokenspace_paper", "vanilla")
smoothgrad = named("smoothgrad", "vanilla")
libra_smoothgrad = named("smoothgrad", "libra")
legrad = named("legrad", "vanilla")
libra_legrad = named("legrad", "libra")
transformer_attribution = named("transformer_attribution", "vanilla")
libra_transformer_attribution = named("transformer_attribution", "libra")
attn_gradcam = named("attn_gradcam", "vanilla")
libra_attn_gradcam = named("attn_gradcam", "libra")
full_lrp = named("full_lrp", "vanilla")
partial_lrp = named("partial_lrp", "vanilla")
attnlrp = named("ixg", "attnlrp")
cp_lrp = named("ixg", "cp_lrp")
decompx = named("ixg", "decompx")

__all__ = [
    "METHODS",
    "attribution",
    "named",
    "resolve_method",
    "to_grid",
    "ixg",
    "libra_ixg",
    "fullgrad",
    "libra_fullgrad",
    "fullgrad_plus",
    "libra_fullgrad_plus",
    "fullgrad_plus_skip",
    "libra_fullgrad_plus_skip",
    "hirescam",
    "libra_hirescam",
    "gradcam",
    "libra_gradcam",
    "xgradcam",
    "libra_xgradcam",
    "xgradcam_plus",
    "libra_xgradcam_plus",
    "gradsam",
    "libra_gradsam",
    "genatt",
    "libra_genatt",
    "rollout",
    "attcat",
    "libra_attcat",
    "tokentm",
    "libra_tokentm",
    "rawatt",
    "ig",
    "libra_ig",
    "ig_tokenspace_paper",
    "smoothgrad",
    "libra_smoothgrad",
    "legrad",
    "libra_legrad",
    "transformer_attribution",
    "libra_transformer_attribution",
    "attn_gradcam",
    "libra_attn_gradcam",
    "full_lrp",
    "partial_lrp",
    "attnlrp",
    "cp_lrp",
    "decompx",
]
