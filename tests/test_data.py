"""Tests of jaxdl.data: built-in data sets, file readers, validation messages and batch indices."""

import functools
import gzip
import pickle
import random
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxdl
from jaxdl import data
from jaxdl.data import DataError
from jaxdl.data import builtin as data_builtin

# ----------------------------------------------------------------------------- file writers


def write_idx(path, array, *, gz=False):
    """Writes ``array`` (uint8) as an IDX file, built by hand so the reader is tested on its own."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + np.ascontiguousarray(array, np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def write_mnist_dir(directory, *, gz, num_train=20, num_test=10, seed=0):
    """Four IDX files of random 28x28 images and labels; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, num_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, num_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(directory / name, array, gz=gz)
    return list(arrays.values())


def write_cifar_dir(directory, *, per_batch=10, seed=0):
    """Six tiny CIFAR-10 batches pickled as dicts with bytes keys; returns (data, labels) each."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    batches = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)  # [N, 3 * 32 * 32]
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        batch = {b"batch_label": name.encode(), b"data": rows, b"labels": labels}
        (directory / name).write_bytes(pickle.dumps(batch))
        batches.append((rows, labels))
    return batches


# ----------------------------------------------------------------------------- built-in sets


def test_digits_shapes_dtypes_and_range():
    ds = data.load("digits")
    assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_test.shape == (360, 8, 8, 1)
    assert ds.y_train.shape == (1437,) and ds.y_test.shape == (360,)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert ds.x_test.min() >= 0.0 and ds.x_test.max() <= 1.0
    assert ds.num_classes == 10 and ds.name == "digits"
    assert ds.input_shape == (8, 8, 1) and (ds.num_train, ds.num_test) == (1437, 360)


def test_digits_split_is_stratified_and_fixed():
    ds = data.load("digits")
    total = np.bincount(np.concatenate([ds.y_train, ds.y_test]), minlength=10)
    in_test = np.bincount(ds.y_test, minlength=10)
    proportional = total * ds.num_test / total.sum()
    assert np.all(np.abs(in_test - proportional) <= 1), (in_test, proportional)
    again = data.load("digits")
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    np.testing.assert_array_equal(again.y_train, ds.y_train)


def test_mnist1d_shapes():
    ds = data.load("mnist1d")
    assert ds.x_train.shape == (4000, 40, 1) and ds.x_test.shape == (1000, 40, 1)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    assert ds.x_train.dtype == np.float32 and ds.y_test.dtype == np.int32
    assert set(np.unique(ds.y_train)) == set(range(10)) and ds.num_classes == 10


def test_mnist1d_shuffled_is_one_fixed_permutation_of_positions():
    plain, shuffled = data.load("mnist1d"), data.load("mnist1d_shuffled")
    np.testing.assert_array_equal(plain.y_train, shuffled.y_train)
    np.testing.assert_array_equal(plain.y_test, shuffled.y_test)
    # Position-independent: each example holds the same values, in another order.
    np.testing.assert_allclose(
        np.sort(plain.x_train, axis=1), np.sort(shuffled.x_train, axis=1), atol=1e-5
    )
    # The permutation that maps example 0 maps every example of both splits.
    x0, s0 = plain.x_train[0, :, 0], shuffled.x_train[0, :, 0]
    perm = np.argsort(x0)[np.argsort(np.argsort(s0))]  # s0 == x0[perm]
    assert not np.array_equal(perm, np.arange(40))
    np.testing.assert_allclose(shuffled.x_train, plain.x_train[:, perm, :], atol=1e-5)
    np.testing.assert_allclose(shuffled.x_test, plain.x_test[:, perm, :], atol=1e-5)


def test_mnist1d_leaves_global_random_state_alone():
    data_builtin._mnist1d_arrays.cache_clear()  # force the generator to run
    np.random.seed(123)
    random.seed(123)
    data.load("mnist1d")
    after_load = (np.random.rand(3), random.random())
    np.random.seed(123)
    random.seed(123)
    np.testing.assert_array_equal(after_load[0], np.random.rand(3))
    assert after_load[1] == random.random()


def test_mnist1d_returns_arrays_the_caller_may_change():
    ds = data.load("mnist1d")
    first = ds.x_train[0].copy()
    ds.x_train[0] = 99.0
    np.testing.assert_array_equal(data.load("mnist1d").x_train[0], first)


def test_subset_takes_the_first_examples():
    ds = data.load("digits")
    small = ds.subset(num_train=7, num_test=3)
    assert (small.num_train, small.num_test) == (7, 3)
    np.testing.assert_array_equal(small.x_train, ds.x_train[:7])
    np.testing.assert_array_equal(small.y_test, ds.y_test[:3])
    assert ds.subset(num_test=5).num_train == ds.num_train
    with pytest.raises(DataError, match=r"num_train=2000 but the split has 1437"):
        ds.subset(num_train=2000)
    with pytest.raises(DataError, match=r"num_test must be a positive int, got 0"):
        ds.subset(num_test=0)


# ----------------------------------------------------------------------------- IDX / MNIST


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_round_trip(tmp_path, gz, name):
    x_train, y_train, x_test, y_test = write_mnist_dir(tmp_path, gz=gz)
    ds = data.load(name, path=tmp_path)
    assert ds.x_train.shape == (20, 28, 28, 1) and ds.x_test.shape == (10, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_allclose(ds.x_train[..., 0], x_train / 255.0, rtol=1e-6)
    np.testing.assert_allclose(ds.x_test[..., 0], x_test / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.name == name and ds.num_classes == 10


def test_read_idx_detects_gzip_by_magic_without_extension(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    gz_path = write_idx(tmp_path / "images", array, gz=True)
    renamed = gz_path.rename(tmp_path / "images-no-extension")
    out = data.read_idx(renamed)
    np.testing.assert_array_equal(out, array)
    assert out.dtype == np.uint8 and out.flags.writeable


def test_read_idx_truncated_names_file_and_sizes(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((20, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    expected = 16 + 20 * 28 * 28  # 4-byte magic, three 4-byte sizes, then the pixels
    pattern = (
        f"{re.escape(str(path))}: truncated .*expected {expected} bytes.*found {expected - 100}"
    )
    with pytest.raises(DataError, match=pattern):
        data.read_idx(path)
    with pytest.raises(DataError, match="truncated"):
        data.load("mnist", path=tmp_path)  # the first file the loader reads


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(b"\x12\x34\x08\x01" + bytes(8))
    with pytest.raises(DataError, match=r"not an IDX file: magic number 0x12340801"):
        data.read_idx(path)


def test_mnist_missing_file_is_named(tmp_path):
    write_mnist_dir(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing IDX file t10k-labels-idx1-ubyte"):
        data.load("mnist", path=tmp_path)


# ----------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("parent", [False, True])
def test_cifar10_round_trip_with_hwc_layout(tmp_path, parent):
    batches = write_cifar_dir(tmp_path / "cifar-10-batches-py")
    ds = data.load("cifar10", path=tmp_path if parent else tmp_path / "cifar-10-batches-py")
    assert ds.x_train.shape == (50, 32, 32, 3) and ds.x_test.shape == (10, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    rows = np.concatenate([r for r, _ in batches[:5]])
    # Pixel (h, w) of channel c sits at c * 1024 + h * 32 + w of a stored row.
    n, h, w, c = 13, 5, 30, 2
    assert ds.x_train[n, h, w, c] == np.float32(rows[n, c * 1024 + h * 32 + w]) / 255
    expected = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / 255.0
    np.testing.assert_allclose(ds.x_train, expected, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, np.concatenate([y for _, y in batches[:5]]))
    np.testing.assert_array_equal(ds.y_test, batches[5][1])


def test_cifar10_batch_pickle_cannot_run_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must not run",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Payload(), b"labels": [0]}))
    with pytest.raises(DataError, match=r"refusing to load global builtins.print"):
        data.read_cifar10_batch(path)


# ----------------------------------------------------------------------------- npz


def test_npz_with_both_splits(tmp_path):
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(12, 5)), rng.normal(size=(4, 5))
    y_train, y_test = np.array([0, 1, 2, 3] * 3), np.array([1, 2, 3, 6])
    path = tmp_path / "set.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    ds = data.load("npz", path=path)
    np.testing.assert_allclose(ds.x_train, x_train.astype(np.float32))
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.num_classes == 7 and ds.input_shape == (5,)
    assert data.load("npz", path=path, num_classes=12).num_classes == 12


def test_npz_with_x_and_y_keeps_the_last_fifth_for_test(tmp_path):
    x, y = np.arange(30, dtype=np.float32).reshape(10, 3), np.arange(10) % 4
    path = tmp_path / "xy.npz"
    np.savez(path, x=x, y=y)
    ds = data.load("npz", path=path)
    assert (ds.num_train, ds.num_test, ds.num_classes) == (8, 2, 4)
    np.testing.assert_array_equal(ds.x_test, x[8:])
    np.testing.assert_array_equal(ds.y_train, y[:8])


def test_npz_with_unknown_layout(tmp_path):
    path = tmp_path / "odd.npz"
    np.savez(path, inputs=np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"expected arrays x_train, .* found \['inputs'\]"):
        data.load("npz", path=path)


def test_npz_with_string_inputs_names_the_split_and_dtype(tmp_path):
    path = tmp_path / "text.npz"
    np.savez(path, x=np.array([["a", "b"]] * 10), y=np.zeros(10, np.int64))
    with pytest.raises(DataError, match=r"npz train: inputs must be numbers .* got dtype <U1"):
        data.load("npz", path=path)


# ----------------------------------------------------------------------------- validation


def save_xy(tmp_path, x, y):
    path = tmp_path / "xy.npz"
    np.savez(path, x=x, y=y)
    return path


def test_label_out_of_range(tmp_path):
    y = np.array([0, 1, 2, 5, 1, 7, 0, 1, 2, 0])
    path = save_xy(tmp_path, np.zeros((10, 2)), y)
    with pytest.raises(DataError, match=r"npz train: 2 label\(s\) outside \[0, 3\), .*y\[3\] = 5"):
        data.load("npz", path=path, num_classes=3)


def test_negative_label():
    with pytest.raises(DataError, match=r"s: 1 negative label\(s\), .*y\[1\] = -1"):
        data.validate(np.zeros((3, 2)), np.array([0, -1, 2]), num_classes=10, name="s")


def test_nan_in_inputs(tmp_path):
    x = np.zeros((10, 4))
    x[3, 1], x[6, 0] = np.nan, np.inf
    path = save_xy(tmp_path, x, np.zeros(10, int))
    with pytest.raises(DataError, match=r"npz train: x has 2 non-finite .* in example 3"):
        data.load("npz", path=path)


def test_mismatched_lengths():
    with pytest.raises(DataError, match=r"^split: x has 100 examples but y has 99$"):
        data.validate(np.zeros((100, 2)), np.zeros(99, int), num_classes=2, name="split")


def test_empty_set(tmp_path):
    with pytest.raises(DataError, match=r"split: the data set is empty"):
        data.validate(np.zeros((0, 2)), np.zeros(0, int), num_classes=2, name="split")
    path = save_xy(tmp_path, np.zeros((4, 2)), np.zeros(4, int))  # a fifth of 4 is 0 examples
    with pytest.raises(DataError, match=r"npz test: the data set is empty"):
        data.load("npz", path=path)


def test_float_labels_are_refused():
    with pytest.raises(DataError, match=r"labels y must be integers, got dtype float64"):
        data.validate(np.zeros((2, 2)), np.zeros(2), num_classes=2, name="split")


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(DataError, match=r"unknown data set 'mnits', expected one of \[.*'mnist'"):
        data.load("mnits")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "npz"])
def test_file_formats_need_a_path(name):
    message = (
        f"data set '{name}' is read from files: give their path (path=..., on the command line"
    )
    with pytest.raises(DataError, match=re.escape(message + " --data-path)")):
        data.load(name)


def test_built_in_sets_refuse_a_path_and_unknown_options(tmp_path):
    with pytest.raises(DataError, match=r"'digits' is built in and takes no path"):
        data.load("digits", path=tmp_path)
    with pytest.raises(DataError, match=r"unknown option\(s\) \['num_clases'\], expected \['num"):
        data.load("npz", path=tmp_path / "x.npz", num_clases=3)


# ----------------------------------------------------------------------------- batching


@functools.partial(jax.jit, static_argnums=2)
def _jitted_permutation(key, epoch, num_examples):
    return data.epoch_permutation(key, epoch, num_examples)


def step_indices(key, step, num_examples, batch_size):
    """The batch of one step, computed alone: the reference for `chunk_indices`."""
    spe = num_examples // batch_size
    perm = np.asarray(_jitted_permutation(key, step // spe, num_examples))
    position = step % spe
    return perm[position * batch_size : (position + 1) * batch_size]


def test_steps_per_epoch():
    assert data.steps_per_epoch(23, 5) == 4
    assert data.steps_per_epoch(20, 20) == 1
    with pytest.raises(DataError, match=r"num_examples=23\], got batch_size=24"):
        data.steps_per_epoch(23, 24)
    with pytest.raises(DataError, match=r"num_examples=23\], got batch_size=0"):
        data.steps_per_epoch(23, 0)


@pytest.mark.parametrize("num_examples", [20, 23])
def test_each_epoch_visits_examples_at_most_once(num_examples):
    batch_size, epochs = 5, 4
    spe = data.steps_per_epoch(num_examples, batch_size)
    idx = np.asarray(data.chunk_indices(jax.random.key(0), 0, epochs * spe, num_examples, 5))
    assert idx.shape == (epochs * spe, batch_size) and idx.dtype == np.int32
    per_epoch = idx.reshape(epochs, spe * batch_size)
    for order in per_epoch:
        assert len(np.unique(order)) == spe * batch_size
        assert order.min() >= 0 and order.max() < num_examples
    if num_examples % batch_size == 0:
        np.testing.assert_array_equal(
            np.sort(per_epoch, axis=1), np.tile(np.arange(num_examples), (epochs, 1))
        )
    assert all(not np.array_equal(per_epoch[0], order) for order in per_epoch[1:])


def test_epoch_permutation_is_a_permutation():
    perm = data.epoch_permutation(jax.random.key(3), 2, 17)
    assert perm.shape == (17,) and perm.dtype == jnp.int32
    np.testing.assert_array_equal(np.sort(perm), np.arange(17))
    traced = jax.jit(data.epoch_permutation, static_argnums=2)(jax.random.key(3), jnp.int32(2), 17)
    np.testing.assert_array_equal(traced, perm)


@pytest.mark.parametrize("num_examples", [5, 10, 23])
def test_epoch_order_is_uniform_over_keys(num_examples):
    # Each example is equally likely at each position: a chi-square test over 4,000 keys.
    draws = 4000
    keys = jax.random.split(jax.random.key(0), draws)
    perms = np.asarray(jax.jit(jax.vmap(lambda k: _jitted_permutation(k, 3, num_examples)))(keys))
    counts = np.stack([np.bincount(column, minlength=num_examples) for column in perms.T])  # [P, N]
    expected = draws / num_examples
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    dof = (num_examples - 1) ** 2
    assert chi2 < dof + 5 * np.sqrt(2 * dof), (chi2, dof)
    fixed_points = (perms == np.arange(num_examples)).sum(axis=1)  # uniform: mean 1, variance 1
    assert abs(fixed_points.mean() - 1) < 0.1 and abs(fixed_points.var() - 1) < 0.15


def test_large_epoch_is_a_permutation_without_order_left():
    num_examples = 60_000  # MNIST: 2**16 > N, so about 1 value in 12 needs a second pass
    perm = np.asarray(data.epoch_permutation(jax.random.key(1), 0, num_examples))
    np.testing.assert_array_equal(np.sort(perm), np.arange(num_examples))
    assert abs(np.corrcoef(np.arange(num_examples), perm)[0, 1]) < 0.02
    assert abs(np.corrcoef(perm[:-1], perm[1:])[0, 1]) < 0.02  # neighbours are unrelated


@settings(max_examples=10, deadline=None)
@given(
    first_start=st.integers(0, 1000),
    num_steps=st.integers(1, 12),
    num_examples=st.integers(1, 25),
    batch_fraction=st.floats(0.0, 1.0),
)
def test_chunk_equals_steps_computed_one_at_a_time(
    first_start, num_steps, num_examples, batch_fraction
):
    batch_size = 1 + int(batch_fraction * (num_examples - 1))  # in [1, num_examples]
    key = jax.random.key(42)
    chunk = jax.jit(data.chunk_indices, static_argnums=(2, 3, 4))
    # 40 consecutive start steps (one compilation: start_step is traced) cross epoch boundaries.
    for start in range(first_start, first_start + 40):
        got = chunk(key, jnp.int32(start), num_steps, num_examples, batch_size)
        steps = range(start, start + num_steps)
        expected = np.stack([step_indices(key, s, num_examples, batch_size) for s in steps])
        np.testing.assert_array_equal(got, expected, err_msg=f"start_step={start}")


def test_chunk_under_jit_with_traced_start_step_compiles_once():
    traces = []

    @jax.jit
    def chunk(key, start_step):
        traces.append(start_step)
        return data.chunk_indices(key, start_step, 6, 23, 5)

    key = jax.random.key(7)
    for start in [0, 3, 4, 17, 41]:
        expected = np.stack([step_indices(key, s, 23, 5) for s in range(start, start + 6)])
        np.testing.assert_array_equal(chunk(key, jnp.int32(start)), expected)
    assert len(traces) == 1


@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey])
def test_chunk_under_vmap_over_keys(make_key):
    keys = jax.random.split(make_key(0), 3)
    indices = functools.partial(
        data.chunk_indices, start_step=9, num_steps=5, num_examples=23, batch_size=5
    )
    batched = jax.jit(jax.vmap(lambda k: indices(k)))(keys)
    assert batched.shape == (3, 5, 5)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], jax.jit(indices)(keys[i]))
    assert not np.array_equal(batched[0], batched[1])


def test_same_key_same_indices_other_key_other_indices():
    first = data.chunk_indices(jax.random.key(5), 2, 8, 23, 5)
    np.testing.assert_array_equal(first, data.chunk_indices(jax.random.key(5), 2, 8, 23, 5))
    assert not np.array_equal(first, data.chunk_indices(jax.random.key(6), 2, 8, 23, 5))


def test_chunk_needs_a_positive_num_steps():
    with pytest.raises(DataError, match=r"num_steps must be a positive static int, got 0"):
        data.chunk_indices(jax.random.key(0), 0, 0, 23, 5)


# ----------------------------------------------------------------------------- review fixes


def test_read_idx_with_huge_dimensions_reports_the_true_size(tmp_path):
    path = tmp_path / "huge"
    path.write_bytes(bytes([0, 0, 0x08, 2]) + np.array([2**32 - 1] * 2, ">u4").tobytes())
    expected = 12 + (2**32 - 1) ** 2  # np.prod of the sizes overflowed int64 to a negative count
    with pytest.raises(DataError, match=rf"truncated IDX file: expected {expected} bytes"):
        data.read_idx(path)


def test_mnist_refuses_images_that_are_not_bytes(tmp_path):
    write_mnist_dir(tmp_path, gz=False)
    images = np.full((20, 28, 28), 0.5, ">f4")  # type code 0x0D: dividing by 255 is wrong
    header = bytes([0, 0, 0x0D, 3]) + np.asarray(images.shape, ">u4").tobytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + images.tobytes())
    with pytest.raises(
        DataError, match=r"^mnist train: expected uint8 images \(IDX type code 0x08\), got float32$"
    ):
        data.load("mnist", path=tmp_path)


@pytest.mark.parametrize(
    "pixels, found",
    [
        (np.full((2, 3072), 300, np.int64), r"dtype int64 with values in \[300, 300\]"),
        (np.full((2, 3072), 0.5), r"dtype float64 with values in \[0.5, 0.5\]"),
    ],
)
def test_cifar10_batch_refuses_pixels_a_uint8_cast_would_change(tmp_path, pixels, found):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": pixels, b"labels": [0, 1]}))
    pattern = (
        rf"^{re.escape(str(path))}: expected data of uint8 pixels in \[0, 255\], found {found}$"
    )
    with pytest.raises(DataError, match=pattern):
        data.read_cifar10_batch(path)


def test_cifar10_batch_accepts_integer_pixels_in_byte_range(tmp_path):
    rows = np.arange(2 * 3072).reshape(2, 3072) % 256  # int64, as a list-of-ints batch unpickles
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": rows, b"labels": [3, 4]}))
    x, y = data.read_cifar10_batch(path)
    assert x.dtype == np.uint8
    np.testing.assert_array_equal(x, rows.reshape(2, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(y, [3, 4])


def test_cifar10_batch_with_too_few_labels_is_named(tmp_path):
    batches = tmp_path / "cifar-10-batches-py"
    write_cifar_dir(batches)
    path = batches / "data_batch_3"
    path.write_bytes(pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 9}))
    found = r"expected labels of shape \[10\] \(one per image\), found \(9,\)"
    pattern = rf"^{re.escape(str(path))}: {found}$"
    with pytest.raises(DataError, match=pattern):
        data.load("cifar10", path=tmp_path)


@pytest.mark.parametrize(
    "x, y, shapes",
    [
        (np.zeros((10, 2)), np.zeros(9, int), r"x of shape \(10, 2\) and y of shape \(9,\)"),
        (np.float32(3.0), np.int64(1), r"x of shape \(\) and y of shape \(\)"),
    ],
)
def test_npz_x_and_y_of_different_lengths_name_the_file(tmp_path, x, y, shapes):
    path = save_xy(tmp_path, x, y)
    pattern = rf"^{re.escape(str(path))}: x and y must hold one entry per example, found {shapes}$"
    with pytest.raises(DataError, match=pattern):
        data.load("npz", path=path)


@pytest.mark.parametrize(
    "field, args, bad", [("batch_size", (10, 2.5), "2.5"), ("num_examples", (10.0, 2), "10.0")]
)
def test_steps_per_epoch_refuses_sizes_that_are_not_ints(field, args, bad):
    assert data.steps_per_epoch(np.int64(10), np.int32(2)) == 5  # NumPy ints are ints
    with pytest.raises(DataError, match=rf"^{field} must be a static int, got {bad}$"):
        data.steps_per_epoch(*args)
    with pytest.raises(DataError, match=rf"^{field} must be a static int, got {bad}$"):
        data.chunk_indices(jax.random.key(0), 0, 2, *args)


@pytest.mark.parametrize("batch_size", [0, -3])
def test_evaluate_refuses_a_batch_size_below_one(batch_size):
    from jaxdl.evaluation import evaluate  # jaxdl.evaluation: padded batches of the test set

    model = jaxdl.mlp(hidden=(4,))
    params, state = model.init(jax.random.key(0), jnp.zeros((1, 3)))
    x, y = jnp.ones((5, 3)), jnp.zeros(5, jnp.int32)
    match = rf"^evaluate: batch_size must be a positive int, got {batch_size}$"
    with pytest.raises(ValueError, match=match):
        evaluate(model, params, state, x, y, batch_size=batch_size)
    whole = evaluate(model, params, state, x, y, batch_size=5)
    padded = evaluate(model, params, state, x, y, batch_size=2)  # 5 = 2 + 2 + 1 (+ 1 padding)
    np.testing.assert_allclose(padded["loss"], whole["loss"], rtol=1e-6)
    assert float(padded["accuracy"]) == float(whole["accuracy"])


def test_evaluate_ignores_padding_rows_whose_loss_is_not_finite():
    from jaxdl.evaluation import evaluate

    def apply(params, state, x, *, key=None, train=False):  # log(0) = -inf on a zero row
        return jnp.log(jnp.abs(x).sum(-1, keepdims=True)) * jnp.arange(3.0)[None], state

    model = jaxdl.Layer(lambda key, x: ({}, {}), apply, "log_norm")
    x, y = jnp.ones((5, 2)), jnp.zeros(5, jnp.int32)  # padding rows are zeros
    whole = evaluate(model, {}, {}, x, y, batch_size=5)
    # Op by op: compiled, XLA:CPU turns a product with the mask into a select by itself.
    with jax.disable_jit():
        padded = evaluate(model, {}, {}, x, y, batch_size=2)  # one padding row
    assert np.isfinite(float(padded["loss"]))
    np.testing.assert_allclose(padded["loss"], whole["loss"], rtol=1e-6)


def test_npz_that_is_empty_or_a_folder_is_named(tmp_path):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=rf"^{re.escape(str(empty))}: cannot read as \.npz"):
        data.read_npz(empty)
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path))}: a folder, expected"):
        data.read_npz(tmp_path)


def test_cifar10_batch_with_ragged_labels_is_named(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [[0], [1, 2]]})
    )
    pattern = rf"^{re.escape(str(path))}: expected data \[N, 3072\] and labels \[N\], got "
    with pytest.raises(DataError, match=pattern):  # was numpy's bare ValueError
        data.read_cifar10_batch(path)


def test_npz_labels_beyond_int32_are_refused_not_wrapped(tmp_path):
    path = save_xy(tmp_path, np.zeros((10, 2)), np.full(10, 2**40))  # 2**40 cast to int32 is 0
    match = r"^npz: num_classes must be at most 2147483647 \(labels are stored as int32\), got "
    with pytest.raises(DataError, match=match + rf"{2**40 + 1} "):
        data.load("npz", path=path)
    with pytest.raises(DataError, match=match + rf"{2**41}"):
        data.load("npz", path=path, num_classes=2**41)


def test_permutation_and_chunk_take_numpy_sizes_and_refuse_others():
    key = jax.random.key(0)
    np.testing.assert_array_equal(  # np.int64 has no bit_length: an AttributeError before
        data.epoch_permutation(key, 1, np.int64(10)), data.epoch_permutation(key, 1, 10)
    )
    np.testing.assert_array_equal(
        data.chunk_indices(key, 0, 3, np.int64(10), 3), data.chunk_indices(key, 0, 3, 10, 3)
    )
    for bad in (0, -3, 5.0):  # [], an OverflowError, an AttributeError before
        with pytest.raises(
            DataError, match=rf"^num_examples must be a positive static int, got {bad}$"
        ):
            data.epoch_permutation(key, 0, bad)


def test_on_device_validation_refuses_a_bool_num_classes():
    from jaxdl.data.validation import validate_on_device

    x, y = jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32)
    with pytest.raises(DataError, match=r"^t: num_classes must be a positive int, got True$"):
        validate_on_device(x, y, num_classes=True, name="t")  # as the host `validate` does
    validate_on_device(x, y, num_classes=np.int64(1), name="t")


# ----------------------------------------------------------------------------- named files


def test_npz_given_a_npy_file_says_an_archive_was_expected(tmp_path):
    path = tmp_path / "plain.npy"
    np.save(path, np.zeros((3, 2)))  # np.load returns the array: a TypeError in `with` before
    found = r"found a \.npy array of shape \(3, 2\), float64$"
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: expected a \.npz .*{found}"):
        data.load("npz", path=path)


def test_read_idx_of_an_empty_file_says_it_is_empty(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"")  # reported as "magic number 0x" before
    expected = "empty IDX file: expected at least the 4-byte magic number, found 0 bytes"
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: {expected}$"):
        data.read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match=r": truncated IDX file: .* magic number, found 2 bytes$"):
        data.read_idx(path)


@pytest.mark.parametrize(
    "stem, array, found",
    [  # labels holding images; images stored flat
        (
            "train-labels-idx1-ubyte",
            np.zeros((20, 28, 28), np.uint8),
            r"expected labels \[N\] \(IDX magic 0x00000801\), found shape \(20, 28, 28\)",
        ),
        (
            "t10k-images-idx3-ubyte",
            np.zeros((10, 784), np.uint8),
            r"expected images \[N, rows, cols\] \(IDX magic 0x00000803\), found shape \(10, 784\)",
        ),
        (
            "train-labels-idx1-ubyte",
            np.full(20, 12, np.uint8),
            r"20 label\(s\) outside \[0, 10\), the first is y\[0\] = 12",
        ),
    ],
)
def test_mnist_malformed_file_is_named(tmp_path, stem, array, found):
    write_mnist_dir(tmp_path, gz=False)
    path = write_idx(tmp_path / stem, array)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: {found}$"):
        data.load("mnist", path=tmp_path)


def test_mnist_images_and_labels_of_different_counts_name_both_files(tmp_path):
    write_mnist_dir(tmp_path, gz=False)
    labels = write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(15, np.uint8))
    images = re.escape(str(tmp_path / "train-images-idx3-ubyte"))
    pattern = rf"^mnist train: {images} has 20 images but {re.escape(str(labels))} has 15 labels$"
    with pytest.raises(DataError, match=pattern):
        data.load("mnist", path=tmp_path)


def test_cifar10_bad_label_names_the_batch_file_and_index_within_it(tmp_path):
    batches = tmp_path / "cifar-10-batches-py"
    write_cifar_dir(batches)  # 10 images a batch: joined, y[24] was reported before
    path = batches / "data_batch_3"
    labels = [0, 1, 2, 3, 10, 5, 6, 7, 8, 9]
    path.write_bytes(pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": labels}))
    pattern = rf"^{re.escape(str(path))}: 1 label\(s\) outside \[0, 10\), the first is y\[4\] = 10$"
    with pytest.raises(DataError, match=pattern):
        data.load("cifar10", path=tmp_path)


def test_npz_errors_about_a_split_name_the_file_and_its_slice(tmp_path):
    x = np.zeros((10, 4))
    x[3, 1] = np.nan
    path = save_xy(tmp_path, x, np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 5]))
    where = re.escape(f"; in {path}, x[:8] and y[:8]")
    with pytest.raises(DataError, match=rf"^npz train: x has 1 non-finite .* example 3{where}$"):
        data.load("npz", path=path)
    x[3, 1] = 0.0
    path = save_xy(tmp_path, x, np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 5]))
    where = re.escape(f"; in {path}, x[8:] and y[8:]")  # the test split's y[1] is the file's y[9]
    with pytest.raises(DataError, match=rf"^npz test: 1 label\(s\) .* y\[1\] = 5{where}$"):
        data.load("npz", path=path, num_classes=3)


def test_npz_inputs_that_overflow_float32_are_named_without_a_warning(tmp_path):
    x_train = np.zeros((6, 3))
    x_train[2, 0], x_train[4, 1] = 1e39, -3e39  # inf in float32: "NaN or inf" and a warning before
    path = tmp_path / "big.npz"
    y = np.zeros(6, int)
    np.savez(path, x_train=x_train, y_train=y, x_test=np.zeros((2, 3)), y_test=y[:2])
    found = r"x has 2 value\(s\) that overflow float32 \(largest magnitude 3e\+39, float32 holds"
    where = re.escape(f"; in {path}, arrays x_train and y_train")
    with pytest.raises(DataError, match=rf"^npz train: {found} .* in example 2{where}$"):
        data.load("npz", path=path)  # pytest turns the RuntimeWarning into an error
    np.savez(path, x_train=x_train[:2], y_train=y[:2], x_test=np.zeros((2, 3)), y_test=y[:2])
    assert data.load("npz", path=path).x_train.dtype == np.float32  # float64 that fits: accepted
