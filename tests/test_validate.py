"""Input checks: un-normalised images and missing targets raise one clear ValueError, eagerly and under jit."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers import tiny_model

from libra_jax import preprocess, validate
from libra_jax.methods import attribution
from libra_jax.models.config import DataConfig

NOT_NORMALISED = r"likely not normalised.*libra_jax\.preprocess\(model, images\).*check_inputs=False"


@pytest.fixture(scope="module")
def tiny():
    model, params = tiny_model(depth=1)
    model = model.clone(data_config=DataConfig(input_size=(32, 32)))  # mean = std = 0.5: values in [-1, 1]
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    pixels[0, 0, 0], pixels[1, 0, 0] = 0, 255  # the extremes of the range are allowed
    return model, params, pixels, np.array([1, 3])


def test_pixel_range_is_what_preprocess_makes_of_0_and_255():
    dc = DataConfig(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    extremes = preprocess(dc, np.array([[[0, 0, 0], [255, 255, 255]]] * 2, np.uint8))
    low, high = validate.pixel_range(dc, margin=0.0)
    np.testing.assert_allclose(extremes.min((0, 1, 2)), low, rtol=1e-6)
    np.testing.assert_allclose(extremes.max((0, 1, 2)), high, rtol=1e-6)


def test_normalised_images_pass_and_unnormalised_fail_eager_and_jit(tiny):
    model, params, pixels, y = tiny
    fn = attribution(model, "ixg")
    x = preprocess(model, pixels)
    np.testing.assert_array_equal(jax.jit(fn)(params, x, y), validate.jit(fn)(params, x, y))
    for bad in (pixels.astype(np.float32), (pixels / 255.0 - 0.5) / 0.5 * 255.0):  # 0-255; normalised but not /255
        with pytest.raises(ValueError, match=NOT_NORMALISED) as eager:
            fn(params, bad, y)
        with pytest.raises(ValueError, match=NOT_NORMALISED) as jitted:
            validate.jit(fn)(params, bad, y)
        assert str(jitted.value) == str(eager.value)  # reads the same
    with pytest.raises(jax.errors.JaxRuntimeError, match="likely not normalised"):  # what plain jax.jit reports
        jax.jit(fn)(params, pixels.astype(np.float32), y)
    assert attribution(model, "ixg", check_inputs=False)(params, pixels.astype(np.float32), y).shape == (2, 4, 4)


def test_other_runtime_errors_pass_through_validate_jit(tiny):
    model, params, pixels, _ = tiny
    fn = attribution(model, "ixg")
    with pytest.raises(ValueError, match=r"class index out of range: targets must lie in \[0, 5\)") as jitted:
        validate.jit(fn)(params, preprocess(model, pixels), np.array([0, 9]))
    assert jitted.value.__cause__ is None and jitted.value.__suppress_context__
    with pytest.raises(TypeError):  # not a failed check: jax's own error, untouched
        validate.jit(fn)(params, preprocess(model, pixels))


def test_missing_targets(tiny):
    model, params, pixels, _ = tiny
    for fn in (attribution(model, "ixg"), validate.jit(attribution(model, "ixg"))):
        with pytest.raises(ValueError, match=r"no targets: fn\(params, x, y\) needs y"):
            fn(params, preprocess(model, pixels), None)
