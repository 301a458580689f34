"""Static model and preprocessing configurations (frozen, hashable dataclasses)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar


def pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """An int or a 2-sequence as a (height, width) tuple."""
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(x) for x in v)
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair, got {v}")
    return v


class PatchGrid:
    """Patch-grid geometry shared by the model configs (fields img_size, patch_size)."""

    img_size: tuple[int, int]
    patch_size: tuple[int, int]

    def _check_grid(self) -> None:
        """In __post_init__: img_size / patch_size as (height, width) pairs, the image a whole number of patches."""
        object.__setattr__(self, "img_size", pair(self.img_size))
        object.__setattr__(self, "patch_size", pair(self.patch_size))
        for i in range(2):
            if self.img_size[i] % self.patch_size[i]:
                raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]


@dataclasses.dataclass(frozen=True)
class ViTConfig(PatchGrid):
    """Architecture of a timm `VisionTransformer` (and its DeiT-distilled variant).

    Field names follow timm's constructor arguments so that timm kwargs map one-to-one;
    `mlp_layer` names timm's MLP class: "mlp" (`Mlp`), "glu" (`GluMlp`/`SwiGLUPacked`, gate
    first) or "swiglu" (`SwiGLU`, split fc1_g/fc1_x).
    """

    family: ClassVar[str] = "vit"

    img_size: tuple[int, int] = (224, 224)
    patch_size: tuple[int, int] = (16, 16)
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_norm: bool = False
    proj_bias: bool = True
    scale_attn_norm: bool = False
    scale_mlp_norm: bool = False
    init_values: float | None = None
    class_token: bool = True
    reg_tokens: int = 0
    dist_token: bool = False
    no_embed_class: bool = False
    pos_embed: bool = True
    pre_norm: bool = False
    final_norm: bool = True
    fc_norm: bool | None = None
    global_pool: str = "token"
    act: str = "gelu"
    mlp_layer: str = "mlp"
    norm_eps: float = 1e-6
    final_norm_eps: float | None = None  # eps of norm / fc_norm when it differs (Chefer's ViT_LRP: 1e-5)
    patch_bias: bool | None = None

    def __post_init__(self):
        self._check_grid()
        if self.global_pool not in ("token", "avg", "max", "avgmax", "map", ""):
            raise ValueError(f"unsupported global_pool {self.global_pool!r}")
        if self.mlp_layer not in ("mlp", "glu", "swiglu"):
            raise ValueError(f"unsupported mlp_layer {self.mlp_layer!r}; expected 'mlp', 'glu' (packed) or 'swiglu'")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs a class token")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def num_prefix_tokens(self) -> int:
        """cls + distillation + register tokens, which come before the patch tokens."""
        return int(self.class_token) + int(self.dist_token) + self.reg_tokens

    @property
    def num_tokens(self) -> int:
        return self.num_patches + self.num_prefix_tokens

    @property
    def mlp_hidden(self) -> int:
        """fc1 width (timm: int(dim·mlp_ratio); for packed GLU both halves together)."""
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def use_fc_norm(self) -> bool:
        return self.global_pool in ("avg", "avgmax", "max") if self.fc_norm is None else self.fc_norm

    @property
    def use_patch_bias(self) -> bool:
        return not self.pre_norm if self.patch_bias is None else self.patch_bias

    # Variant hooks: computed, not fields, so plain ViT configs (and their registry entries) carry none of them.

    @property
    def qkv_layout(self) -> str:
        """How q/k/v are projected: 'fused' (one `qkv` Linear with one bias, or none), 'qv_bias' (one `qkv`
        kernel, separate q and v biases, k bias 0: BEiT / EVA) or 'separate' (`q_proj`, bias-free `k_proj`,
        `v_proj`: EVA with qkv_fused=False)."""
        return "fused"

    @property
    def rel_pos_window(self) -> tuple[int, int] | None:
        """Window of each block's own relative-position bias table (BEiT), or None."""
        return None

    @property
    def shared_rel_pos_window(self) -> tuple[int, int] | None:
        """Window of the one relative-position bias table all blocks share (BEiT option), or None."""
        return None

    @property
    def rope(self) -> RopeSpec | None:
        """The rotary position embedding of the non-prefix q/k (EVA), or None."""
        return None

    @property
    def droppable_tokens(self) -> bool:
        """Whether tokens may be removed from the sequence (faithfulness): not when attention depends on the
        token's grid position through a fixed-size table (BEiT's relative-position bias)."""
        return True

    def replace(self, **changes) -> ViTConfig:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class RopeSpec:
    """timm `RotaryEmbeddingCat` (language-style bands, 'index' grid) as EVA builds it.

    Attributes:
      grid: patch grid (H, W) the table covers.
      head_dim: per-head width the rotation acts on.
      ref_feat_shape: grid the positions are rescaled to (EVA's fine-tune scheme), or None.
      temperature: band temperature.
      grid_offset: added to the integer positions.
      grid_indexing: 'ij' or 'xy' (torch.meshgrid indexing).
    """

    grid: tuple[int, int]
    head_dim: int
    ref_feat_shape: tuple[int, int] | None = None
    temperature: float = 10000.0
    grid_offset: float = 0.0
    grid_indexing: str = "ij"


@dataclasses.dataclass(frozen=True)
class BeitConfig(ViTConfig):
    """Architecture of a timm `Beit` (BEiT, BEiTv2): a ViT whose attention has q and v biases (no k bias)
    and a learned relative-position bias, mean pooling + fc_norm by default, no absolute position
    embedding in the released models.

    Extra fields are timm's `Beit` arguments: `use_rel_pos_bias` (one table per block) and
    `use_shared_rel_pos_bias` (one table for all blocks). `pos_embed` is timm's use_abs_pos_emb;
    `init_values` gives the LayerScale `gamma_1/gamma_2`.
    """

    family: ClassVar[str] = "beit"

    global_pool: str = "avg"
    use_rel_pos_bias: bool = False
    use_shared_rel_pos_bias: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.global_pool not in ("avg", "token", ""):
            raise ValueError(f"unsupported global_pool {self.global_pool!r}; timm Beit pools by 'avg', 'token' or ''")
        # timm Beit always has exactly one cls token, a pre-norm-free stem and an Mlp / SwiGLU MLP.
        unsupported = {
            "reg_tokens": self.reg_tokens,
            "dist_token": self.dist_token,
            "no_embed_class": self.no_embed_class,
            "pre_norm": self.pre_norm,
            "class_token=False": not self.class_token,
            "mlp_layer='glu'": self.mlp_layer == "glu",
        }
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise ValueError(f"timm Beit has no {', '.join(bad)} option")

    @property
    def qkv_layout(self) -> str:
        return "qv_bias" if self.qkv_bias else "fused"

    @property
    def rel_pos_window(self) -> tuple[int, int] | None:
        return self.grid_size if self.use_rel_pos_bias else None

    @property
    def shared_rel_pos_window(self) -> tuple[int, int] | None:
        return self.grid_size if self.use_shared_rel_pos_bias else None

    @property
    def droppable_tokens(self) -> bool:
        # The official code zeroes BEiT tokens (droppable_tokens_p=False): its bias tables index the full grid.
        return False


@dataclasses.dataclass(frozen=True)
class EvaConfig(ViTConfig):
    """Architecture of a timm `Eva` (EVA-02): a ViT with q/v biases (k bias 0), 2-D RoPE on the non-prefix
    q/k, SwiGLU MLPs and optional inner norms.

    Extra fields follow timm's `Eva` arguments: `qkv_fused` (one `qkv` kernel + q_bias/v_bias, else
    q_proj/k_proj/v_proj), `use_rot_pos_emb` and the RoPE settings `ref_feat_shape`, `rope_temperature`,
    `rope_grid_offset`, `rope_grid_indexing`. Unlike `ViTConfig`, `mlp_ratio` is timm `Eva`'s: the width of
    *one* half of a gated MLP (packed 'glu' fc1 is twice as wide). `scale_attn_norm` / `scale_mlp_norm`
    are timm's scale_attn_inner / scale_mlp.
    """

    family: ClassVar[str] = "eva"

    global_pool: str = "avg"
    qkv_fused: bool = True
    use_rot_pos_emb: bool = False
    ref_feat_shape: tuple[int, int] | None = None
    rope_temperature: float = 10000.0
    rope_grid_offset: float = 0.0
    rope_grid_indexing: str = "ij"

    def __post_init__(self):
        super().__post_init__()
        if self.ref_feat_shape is not None:
            object.__setattr__(self, "ref_feat_shape", pair(self.ref_feat_shape))
        if self.rope_grid_indexing not in ("ij", "xy"):
            raise ValueError(f"rope_grid_indexing must be 'ij' or 'xy', got {self.rope_grid_indexing!r}")
        if self.dist_token:
            raise ValueError("timm Eva has no distillation token")

    @property
    def mlp_hidden(self) -> int:
        """fc1 width: timm Eva's int(dim·mlp_ratio) per half, doubled for the packed gated MLP."""
        hidden = int(self.embed_dim * self.mlp_ratio)
        return 2 * hidden if self.mlp_layer == "glu" else hidden

    @property
    def qkv_layout(self) -> str:
        if not self.qkv_fused:
            return "separate"
        return "qv_bias" if self.qkv_bias else "fused"

    @property
    def rope(self) -> RopeSpec | None:
        if not self.use_rot_pos_emb:
            return None
        return RopeSpec(
            grid=self.grid_size,
            head_dim=self.embed_dim // self.num_heads,
            ref_feat_shape=self.ref_feat_shape,
            temperature=self.rope_temperature,
            grid_offset=self.rope_grid_offset,
            grid_indexing=self.rope_grid_indexing,
        )


@dataclasses.dataclass(frozen=True)
class MixerConfig(PatchGrid):
    """Architecture of a timm `MlpMixer` (MLP-Mixer `mixer_*`, gMixer `gmixer_*`).

    Field names follow timm's constructor arguments. `mlp_ratio` = (token-mixing, channel-mixing)
    hidden widths as multiples of `embed_dim` (timm: int(r·embed_dim), a float r meaning (r, r));
    `mlp_layer` names timm's MLP class: "mlp" (`Mlp`) or "glu" (`GluMlp`, whose fc1 halves are
    (value, gate): the gate is the *second* half, timm's default gate_last=True).
    Mixers have no prefix tokens and no attention.
    """

    family: ClassVar[str] = "mixer"
    num_prefix_tokens: ClassVar[int] = 0  # as `ViTConfig`'s count: every token is a patch

    img_size: tuple[int, int] = (224, 224)
    patch_size: tuple[int, int] = (16, 16)
    in_chans: int = 3
    num_classes: int = 1000
    num_blocks: int = 8
    embed_dim: int = 512
    mlp_ratio: tuple[float, float] = (0.5, 4.0)
    mlp_layer: str = "mlp"
    act: str = "gelu"
    norm_eps: float = 1e-6
    global_pool: str = "avg"

    def __post_init__(self):
        self._check_grid()
        ratio = self.mlp_ratio
        ratio = (ratio, ratio) if isinstance(ratio, int | float) else tuple(ratio)
        if len(ratio) != 2:
            raise ValueError(f"mlp_ratio must be a number or a (tokens, channels) pair; got {self.mlp_ratio}")
        object.__setattr__(self, "mlp_ratio", tuple(float(r) for r in ratio))
        if self.global_pool not in ("avg", ""):
            raise ValueError(f"unsupported global_pool {self.global_pool!r}; MlpMixer pools by 'avg' or ''")
        if self.mlp_layer not in ("mlp", "glu"):
            raise ValueError(f"unsupported mlp_layer {self.mlp_layer!r}; expected 'mlp' or 'glu' (timm GluMlp)")

    @property
    def depth(self) -> int:
        return self.num_blocks

    @property
    def num_tokens(self) -> int:
        return self.num_patches

    @property
    def mlp_hidden(self) -> tuple[int, int]:
        """fc1 widths (token-mixing, channel-mixing): int(r·embed_dim), both GLU halves together."""
        return tuple(int(r * self.embed_dim) for r in self.mlp_ratio)

    def replace(self, **changes) -> MixerConfig:
        return dataclasses.replace(self, **changes)


ModelConfig = ViTConfig | BeitConfig | EvaConfig | MixerConfig
CONFIG_CLASSES: dict[str, type[ModelConfig]] = {c.family: c for c in (ViTConfig, BeitConfig, EvaConfig, MixerConfig)}
"""Config class of each model family, by its `family` name (registry entries and checkpoint files name it)."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Preprocessing expected by a checkpoint (timm `pretrained_cfg`)."""

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    input_size: tuple[int, int] = (224, 224)
    crop_pct: float = 0.9
    interpolation: str = "bicubic"
    crop_mode: str = "center"

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "input_size", pair(self.input_size))

    @classmethod
    def from_pretrained_cfg(cls, cfg: dict, default_size: tuple[int, int]) -> DataConfig:
        """Build from a timm `pretrained_cfg` dict (HF `config.json`)."""
        size = cfg.get("input_size")
        return cls(
            mean=tuple(cfg.get("mean", cls.mean)),
            std=tuple(cfg.get("std", cls.std)),
            input_size=tuple(size[-2:]) if size else default_size,
            crop_pct=float(cfg.get("crop_pct", cls.crop_pct)),
            interpolation=str(cfg.get("interpolation", cls.interpolation)),
            crop_mode=str(cfg.get("crop_mode", cls.crop_mode)),
        )
