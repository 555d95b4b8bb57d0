"""The persistent compilation cache: where it lives, that a second process reads what the first
wrote, and that the ``jaxdl`` command uses it unless told not to.

Each check that turns the cache on runs in a fresh subprocess: the setting is global to JAX, and
the test process must not start writing to a cache.
"""

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys

import jax
import pytest

from jaxdl import cli, compilation_cache
from jaxdl.compilation_cache import ENV_VAR, default_cache_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Compiles one program after enabling the cache; prints the cache hits JAX recorded.
PROGRAM = """
import json, sys
import jax, jax.numpy as jnp
import jaxdl
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event.endswith("/cache_hits") else None
)
path = jaxdl.enable_compilation_cache(sys.argv[1])
jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
print(json.dumps({"path": path, "hits": len(hits)}))
"""


def run(args, env=None, code=None):
    """``(returncode, stdout, stderr)`` of ``python -c code args`` or ``python -m jaxdl args``."""
    command = (
        [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "jaxdl", *args]
    )
    env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    return done.returncode, done.stdout, done.stderr


def test_second_process_reads_what_the_first_wrote(tmp_path):
    cache = tmp_path / "xla"
    status, stdout, stderr = run([str(cache)], code=PROGRAM)
    assert status == 0, stderr
    first = json.loads(stdout.splitlines()[-1])
    assert first == {"path": str(cache), "hits": 0}
    assert os.listdir(cache)  # created, and every program saved (min compile time 0)
    status, stdout, stderr = run([str(cache)], code=PROGRAM)
    assert status == 0, stderr
    assert json.loads(stdout.splitlines()[-1])["hits"] >= 1


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "mine"))
    assert default_cache_dir() == str(tmp_path / "mine")
    for off in ("off", "none", "0", ""):
        monkeypatch.setenv(ENV_VAR, off)
        assert default_cache_dir() is None
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == str(tmp_path / "xdg" / "jaxdl" / "xla")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == os.path.expanduser(os.path.join("~", ".cache", "jaxdl", "xla"))


def test_enabling_with_the_environment_off_names_the_variable(monkeypatch):
    import jaxdl

    monkeypatch.setenv(ENV_VAR, "off")
    with pytest.raises(ValueError, match=f"{ENV_VAR}='off' disables"):
        jaxdl.enable_compilation_cache()


TRAIN = ["train", "--data", "digits", "--hidden", "8", "--steps", "4", "--chunk-steps", "4"]
TRAIN += ["--eval-every", "4", "--batch-size", "16", "--no-progress"]


def test_command_fills_the_cache(tmp_path):
    cache = tmp_path / "xla"
    status, _, stderr = run([*TRAIN, "--out", str(tmp_path / "run")], env={ENV_VAR: str(cache)})
    assert status == 0, stderr
    assert len(os.listdir(cache)) >= 3  # init, chunk and evaluation at least


@pytest.fixture
def no_cache_configured():
    """JAX's cache folder unset for the test (another test may have run the command here)."""
    before = jax.config.jax_compilation_cache_dir
    enabled = jax.config.jax_enable_compilation_cache  # --no-compilation-cache turns it off
    jax.config.update("jax_compilation_cache_dir", None)
    yield
    jax.config.update("jax_compilation_cache_dir", before)
    jax.config.update("jax_enable_compilation_cache", enabled)


@pytest.mark.parametrize("option, environment", [(True, "/tmp/unused"), (False, "off")])
def test_command_leaves_the_cache_off_when_told(
    monkeypatch, no_cache_configured, option, environment
):
    calls = []
    monkeypatch.setattr(compilation_cache, "enable_compilation_cache", calls.append)
    monkeypatch.setenv(ENV_VAR, environment)
    cli._use_compilation_cache(argparse.Namespace(no_compilation_cache=option))
    assert calls == []
    monkeypatch.setenv(ENV_VAR, "/tmp/wanted")  # the option still wins; the variable now allows
    cli._use_compilation_cache(argparse.Namespace(no_compilation_cache=option))
    assert calls == ([] if option else ["/tmp/wanted"])


def test_the_option_is_listed_by_every_command():
    _, parsers = cli.build_parser()
    for name, parser in parsers.items():
        assert "--no-compilation-cache" in parser.valid_options(), name


def test_command_warns_once_about_a_cache_folder_it_cannot_write(
    monkeypatch, no_cache_configured, tmp_path
):
    """An existing folder it may not write to: one warning, not JAX's for every program."""
    cache = tmp_path / "xla"
    cache.mkdir()
    cache.chmod(0o555)
    readable = os.access
    monkeypatch.setattr(  # root may write anywhere: as if it were another user
        os, "access", lambda path, mode: readable(path, mode) and str(path) != str(cache)
    )
    monkeypatch.setenv(ENV_VAR, str(cache))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        cli._use_compilation_cache(argparse.Namespace(no_compilation_cache=False))
    assert err.getvalue() == f"warning: no compilation cache (Permission denied: {cache})\n"
    assert jax.config.jax_compilation_cache_dir is None


def test_the_option_turns_off_a_cache_the_user_set_up(tmp_path):
    """--no-compilation-cache compiles afresh, as it says, with JAX_COMPILATION_CACHE_DIR set
    too; without it, that folder is used instead of jaxdl's."""
    env = {**os.environ, "PYTHONPATH": ROOT, ENV_VAR: str(tmp_path / "jaxdl")}
    env.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax"))
    env.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    for run, option in (("off", ["--no-compilation-cache"]), ("on", [])):
        command = [sys.executable, "-m", "jaxdl", *TRAIN, "--out", str(tmp_path / run), *option]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert not os.path.exists(tmp_path / "jaxdl")
        saved = os.listdir(tmp_path / "jax") if os.path.exists(tmp_path / "jax") else []
        assert bool(saved) == (not option), saved
