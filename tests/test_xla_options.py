"""Tests of `jaxdl.compiler_options`: on XLA:CPU, 2-D convolutions kept off YNNPACK and nothing
else changed; which programs get the options; values as with XLA's defaults.

Compiled HLO is read for ``"__ynn_fusion"``, the fusion kind of work handed to YNNPACK.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdl
from jaxdl import xla_options as options_module
from jaxdl.train import build_program

ON_CPU = jax.default_backend() == "cpu"
needs_cpu = pytest.mark.skipif(not ON_CPU, reason="the options are for XLA:CPU")


def compiled_hlo(fn, *args, options=None) -> str:
    return jax.jit(fn, compiler_options=options).lower(*args).compile().as_text()


def ynn_fused_ops(hlo: str) -> set[str]:
    """Ops of the computations XLA:CPU fused for YNNPACK (``kind=kCustom`` ``__ynn_fusion``)."""
    called = re.findall(r"calls=%([\w.\-]+), [^\n]*\"kind\":\"__ynn_fusion\"", hlo)
    ops = set()
    for name in called:
        body = re.search(rf"%{re.escape(name)} \([^\n]*\{{\n(.*?)\n\}}", hlo, re.S)
        ops |= set(re.findall(r"= \S+ (\w[\w-]*)\(", body.group(1))) if body else set()
    return ops


def conv2d(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def skip_unless_ynnpack_takes_convolutions():
    """Skips a test that checks convolutions leave YNNPACK where XLA never puts them there."""
    hlo = compiled_hlo(conv2d, jnp.ones((8, 12, 12, 32)), jnp.ones((3, 3, 32, 32)))
    if "convolution" not in ynn_fused_ops(hlo):
        pytest.skip("this XLA does not hand 2-D convolutions to YNNPACK by default")


IMAGES = jax.ShapeDtypeStruct((8, 28, 28, 1), jnp.float32)
CONVNET = jaxdl.convnet(channels=(32, 32), kernel=3)
OPTIONS = dict(options_module.CPU_OPTIONS)


def test_no_options_off_the_cpu_or_without_a_2d_convolution():
    assert jaxdl.compiler_options(CONVNET, IMAGES, backend="gpu") is None
    mlp = jaxdl.mlp(hidden=(16,))
    assert jaxdl.compiler_options(mlp, jnp.zeros((8, 784)), backend="cpu") is None
    assert jaxdl.compiler_options(mlp, IMAGES, backend="cpu") is None  # flattens the images
    sequences = jax.ShapeDtypeStruct((8, 40, 1), jnp.float32)
    assert jaxdl.compiler_options(jaxdl.convnet(), sequences, backend="cpu") is None  # 1-D


@needs_cpu
def test_nets_with_a_2d_convolution_get_the_options():
    assert jaxdl.compiler_options(CONVNET, IMAGES) == OPTIONS
    assert jaxdl.compiler_options(CONVNET, np.zeros((500, 28, 28, 1), np.float32)) == OPTIONS
    tail = jaxdl.serial(("flatten", jaxdl.flatten), ("dense", jaxdl.dense(10)))
    for impl in ("canonical", "xla"):  # canonical: found inside its custom VJP and vmap
        net = jaxdl.serial(("conv", jaxdl.conv2d(8, 3, impl=impl)), ("tail", tail))
        assert jaxdl.compiler_options(net, IMAGES) == OPTIONS, impl
    im2col = jaxdl.serial(("conv", jaxdl.conv2d(8, 3, impl="im2col")), ("tail", tail))
    assert jaxdl.compiler_options(im2col, IMAGES) is None  # patches and a matmul: no conv


@needs_cpu
def test_no_options_where_this_xla_refuses_them(monkeypatch):
    monkeypatch.setattr(options_module, "_cpu_accepts", lambda options: False)
    assert jaxdl.compiler_options(CONVNET, IMAGES) is None


@needs_cpu
def test_this_xla_accepts_the_options():
    # Fails when a JAX upgrade drops or renames the experimental flag: compiler_options would
    # then quietly return None and convolutions would be on YNNPACK again.
    assert options_module._cpu_accepts(tuple(OPTIONS.items()))


def mlp_step(w1, w2, x):
    """An SGD step of a small MLP: dots, reductions and elementwise ops, no convolution."""

    def loss(ws):
        h = jnp.tanh(x @ ws[0])
        return jnp.mean(jax.nn.log_softmax(h @ ws[1]))

    return jax.tree.map(lambda w, g: w - 0.1 * g, (w1, w2), jax.grad(loss)((w1, w2)))


MLP_ARGS = (jnp.ones((40, 128)), jnp.ones((128, 10)), jnp.ones((128, 40)))


@needs_cpu
def test_xla_default_ynnpack_types_are_the_ones_the_options_start_from():
    """Fails when a JAX upgrade changes XLA:CPU's default list, which `CPU_OPTIONS` (the
    default without convolutions and reductions) must then follow."""
    listed = ",".join(f"LIBRARY_FUSION_TYPE_{t}" for t in options_module.XLA_DEFAULT_YNN_TYPES)
    explicit = {"xla_cpu_experimental_ynn_fusion_type": listed}
    for fn, args in (
        (mlp_step, MLP_ARGS),
        (conv2d, (jnp.ones((8, 14, 14, 32)), jnp.ones((5, 5, 32, 64)))),
    ):
        assert compiled_hlo(fn, *args, options=explicit) == compiled_hlo(fn, *args)


@needs_cpu
def test_the_options_keep_dots_on_ynnpack():
    hlo = compiled_hlo(mlp_step, *MLP_ARGS, options=OPTIONS)
    assert "dot" in ynn_fused_ops(hlo)


@needs_cpu
def test_the_options_keep_2d_convolutions_off_ynnpack():
    skip_unless_ynnpack_takes_convolutions()
    x, w = jnp.ones((8, 14, 14, 32)), jnp.ones((5, 5, 32, 64))
    hlo = compiled_hlo(conv2d, x, w, options=OPTIONS)
    assert "convolution" not in ynn_fused_ops(hlo)
    assert " convolution(" in hlo


def image_run():
    """``(model, config, device data)`` of a small 2-D ConvNet on random 12×12 images."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((80, 12, 12, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 80).astype(np.int32)
    data = jaxdl.data.Dataset(images[:64], labels[:64], images[64:], labels[64:], 10, "images")
    model = jaxdl.convnet(channels=(32, 32), kernel=3)
    config = jaxdl.TrainConfig(steps=4, batch_size=8, chunk_steps=2, eval_batch_size=16)
    return model, config, jaxdl.train.to_device(data)


EXAMPLE = jax.ShapeDtypeStruct((1, 12, 12, 1), jnp.float32)


@needs_cpu
def test_a_convnet_program_compiles_its_chunks_and_evaluation_with_the_options():
    skip_unless_ynnpack_takes_convolutions()
    model, config, device = image_run()
    program = build_program(model, config, EXAMPLE)
    seed = jaxdl.train.seed_array([0])[0]
    hparams = jaxdl.Hparams(lr=1e-3).as_arrays()
    state = program.init(seed, seed, hparams)
    for hlo in (
        program.chunks[2].lower(state, hparams, device).compile().as_text(),
        program.evaluate.lower(state, device).compile().as_text(),
    ):
        assert " convolution(" in hlo
        assert "convolution" not in ynn_fused_ops(hlo)


@needs_cpu
def test_a_population_in_parts_keeps_xla_defaults():
    """Parts run one member per core already: their convolutions stay on YNNPACK."""
    skip_unless_ynnpack_takes_convolutions()
    model, config, device = image_run()
    program = build_program(model, config, EXAMPLE, population=True, parts=2)
    seeds = jaxdl.train.seed_array([0, 1])
    ones = np.ones(2, np.float32)
    hparams = jaxdl.Hparams(lr=ones / 1000, weight_decay=None, init_scale=ones)
    state = program.init(seeds, seeds, hparams)
    parted = program.chunks[2].lower(state, hparams, device).compile().as_text()
    assert "convolution" in ynn_fused_ops(parted)


@needs_cpu
def test_an_mlp_program_on_images_keeps_xla_defaults():
    """YNNPACK's reductions (which the options drop) stay in an MLP's chunk on image inputs."""
    _, config, device = image_run()
    program = build_program(jaxdl.mlp(hidden=(64,)), config, EXAMPLE)
    seed = jaxdl.train.seed_array([0])[0]
    hparams = jaxdl.Hparams(lr=1e-3).as_arrays()
    state = program.init(seed, seed, hparams)
    chunk = program.chunks[2].lower(state, hparams, device).compile().as_text()
    assert ynn_fused_ops(chunk) & {"reduce", "reduce-window"}


@needs_cpu
def test_convolutions_off_ynnpack_agree_with_xla_defaults():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((16, 10, 10, 24)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 24, 40)), jnp.float32) / 15

    def loss(x, w):
        return jnp.sum(jnp.tanh(conv2d(x, w)) ** 2)

    grads = jax.grad(loss, argnums=(0, 1))
    default = jax.jit(grads)(x, w)
    eigen = jax.jit(grads, compiler_options=OPTIONS)(x, w)
    for a, b in zip(default, eigen, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_init_options_keep_what_this_xla_accepts(monkeypatch):
    assert options_module.init_options("gpu") is None
    full, fallback = options_module.CPU_INIT_OPTIONS, options_module.CPU_INIT_FALLBACK
    refused = set()
    monkeypatch.setattr(options_module, "_cpu_accepts", lambda items: not set(items) & refused)
    assert options_module.init_options("cpu") == dict(full)
    refused = {("xla_cpu_use_fusion_emitters", False)}  # jaxlib 0.11 dropped the flag
    assert options_module.init_options("cpu") == dict(fallback)
    refused = set(full.items()) | set(fallback.items())
    assert options_module.init_options("cpu") is None


@needs_cpu
def test_a_flag_this_xla_refuses_is_found_out():
    assert not options_module._cpu_accepts((("xla_cpu_no_such_flag", True),))
    assert options_module._cpu_accepts(tuple(options_module.CPU_INIT_FALLBACK.items()))


@needs_cpu
def test_build_program_compiles_the_init_with_init_options(monkeypatch):
    """A flag XLA refuses, handed to the init's jit through `init_options`, fails its compile:
    the init program is built with what `init_options` returns."""
    refused = {"xla_cpu_no_such_flag": True}
    monkeypatch.setattr(jaxdl.program, "init_options", lambda backend: dict(refused))
    _, config, _ = image_run()
    program = build_program(jaxdl.mlp(hidden=(8,)), config, EXAMPLE)
    seed = jaxdl.train.seed_array([0])[0]
    hparams = jaxdl.Hparams(lr=1e-3).as_arrays()
    with pytest.raises(jax.errors.JaxRuntimeError, match="xla_cpu_no_such_flag"):
        program.init(seed, seed, hparams)


@needs_cpu
@pytest.mark.parametrize("w_init", ["normal", "he_normal", "glorot_uniform", "classic"])
@pytest.mark.parametrize("members", [0, 3])
def test_the_init_options_give_the_level_0_values_bit_for_bit(w_init, members):
    """`fit` and every sweep member build the init with `init_options`; its values must be those
    of the level-0 build (what runs saved before the emitter flag was added) exactly."""
    model = jaxdl.serial(("d1", jaxdl.dense(33, w_init=w_init)), ("d2", jaxdl.dense(10)))
    config = jaxdl.TrainConfig(batch_size=8)
    example = jax.ShapeDtypeStruct((1, 20), jnp.float32)

    def init(init_seed, data_seed, hparams):
        init_key, data_key = jaxdl.train.seed_keys(init_seed, data_seed)
        state = jaxdl.init_state(
            model, config, hparams, example, init_key=init_key, data_key=data_key
        )
        return state._replace(key=jax.random.key_data(state.key))

    seeds = jaxdl.train.seed_array(list(range(11, 11 + max(members, 1))))
    scales = np.linspace(0.5, 2.0, len(seeds)).astype(np.float32)
    hparams = jaxdl.Hparams(lr=scales / 100, weight_decay=None, init_scale=scales)
    if members:
        init = jax.vmap(init)
    else:
        seeds, hparams = seeds[0], jax.tree.map(lambda a: a[0], hparams)
    states = [
        jax.jit(init, compiler_options=options)(seeds, seeds, hparams)
        for options in (options_module.init_options("cpu"), dict(options_module.CPU_INIT_FALLBACK))
    ]
    for a, b in zip(*map(jax.tree.leaves, states), strict=True):
        np.testing.assert_array_equal(a, b)
