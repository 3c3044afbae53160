"""Choosing the Keras backend. Keras reads $KERAS_BACKEND once, at its first import, so this runs
before any `import keras` and refuses to switch afterwards."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
from pathlib import Path

from .config import BACKENDS
from .errors import UsageError

DEFAULT = "tensorflow"


def requested(explicit: str | None = None) -> str:
    """--backend, else $FMNIST_BACKEND, else TensorFlow."""
    name = (explicit or os.environ.get("FMNIST_BACKEND") or DEFAULT).strip().lower()
    if name not in BACKENDS:
        where = "" if explicit else " (from $FMNIST_BACKEND)"
        raise UsageError(f"Unknown backend {name!r}{where}. Choose one of: {', '.join(BACKENDS)}.")
    return name


def cache_dir() -> Path | None:
    """Where the JAX compilation cache goes; None when there is nowhere to put it (no home folder)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        if not home_exists():
            return None
        base = Path.home() / ".cache"
    return Path(base) / "fmnist"


def debug() -> bool:
    """FMNIST_DEBUG=1, or --debug anywhere on the command line (set_debug): the one switch that every
    reader asks, here and in cli.py; worker processes inherit it."""
    return os.environ.get("FMNIST_DEBUG", "") not in ("", "0")


def set_debug() -> None:
    os.environ["FMNIST_DEBUG"] = "1"


def home_exists() -> bool:
    try:
        return Path.home().is_dir()
    except (RuntimeError, KeyError, OSError):   # no $HOME and no passwd entry
        return False


def shelter_home() -> None:
    """Keras writes ~/.keras/keras.json when imported and matplotlib ~/.config/matplotlib: with a home
    folder that does not exist (HOME=/nonexistent, a service account) that would create it. Point them
    at a temporary folder instead, removed at exit; settings the user made ($KERAS_HOME, $MPLCONFIGDIR)
    stay. Worker processes inherit the variables, so they write there too."""
    if home_exists():
        return
    import atexit
    import tempfile

    for var, prefix in (("KERAS_HOME", "fmnist-keras-"), ("MPLCONFIGDIR", "fmnist-mpl-")):
        if os.environ.get(var):
            continue
        path = tempfile.mkdtemp(prefix=prefix)
        os.environ[var] = path
        SHELTERS.append(path)
    atexit.register(remove_shelters)


SHELTERS: list[str] = []   # temporary homes made by shelter_home, this process's own


def remove_shelters() -> None:
    """Also called on the quick exit after Ctrl-C, which skips atexit."""
    import shutil

    while SHELTERS:
        shutil.rmtree(SHELTERS.pop(), ignore_errors=True)


def configure(name: str | None = None) -> str:
    """Make `name` Keras's backend for this process and quiet TensorFlow's start-up chatter."""
    name = requested(name)
    if name == "jax" and importlib.util.find_spec("jax") is None:
        raise UsageError("The JAX backend needs JAX: pip install 'fmnist-cli[jax]' (or pip install jax).")
    if name == "tensorflow" and importlib.util.find_spec("tensorflow") is None:
        raise UsageError("The TensorFlow backend needs TensorFlow: pip install tensorflow.")
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != name:
            raise UsageError(f"Keras is already running on {current} in this process; "
                             f"run {name} in a separate fmnist command.")
        return name
    shelter_home()
    os.environ["KERAS_BACKEND"] = name
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _importing(), _hidden(KERAS_EXTRAS + (TENSORFLOW_EXTRAS if name == "tensorflow" else ())):
        if name == "jax":
            _configure_jax()
            _keep_tensorflow_out()
        else:
            _configure_tensorflow_xla_cache()
            _import_tensorflow_quietly()
        import keras  # noqa: F401   every caller needs it next; loaded here, under the same guard
    return name


# Optional libraries that Keras and TensorFlow import when they are themselves imported, for features
# fmnist never uses through them: they look absent meanwhile (each import is guarded: the library
# then defines that feature without them), and fmnist's own imports, later, load them as usual.
# - Keras: scikit-learn (and with it SciPy) for its scikit-learn wrappers, matplotlib for its image
#   gallery: 0.55 and 0.32 s of every command here.
# - TensorFlow: JAX, for TF Lite's JAX converter (0.4 s). (Not `requests`: one of TensorFlow's
#   imports of it is unguarded.)
KERAS_EXTRAS = ("sklearn", "matplotlib")
TENSORFLOW_EXTRAS = ("jax",)


@contextlib.contextmanager
def _hidden(modules):
    hidden = [name for name in modules if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None   # `import name` raises ImportError, which Keras catches
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


_IMPORTING = False     # inside _importing(): TensorFlow, JAX or Keras is loading
_REAL_STDERR = None    # stderr's own descriptor while stderr_silenced() points it at /dev/null


@contextlib.contextmanager
def _importing():
    """Ctrl-C while TensorFlow, JAX or Keras load leaves at once (exit 130, "Interrupted."). A
    KeyboardInterrupt raised inside TensorFlow's half-initialised C++ modules crashed the interpreter
    (SIGSEGV, no message: about 1 start-up in 8 interrupted at 1.5 s), and nothing exists yet that a
    graceful stop would save. Python's own handler is replaced meanwhile; a StopFlag's asks
    importing() itself, and an ignored SIGINT (worker processes) stays ignored."""
    import signal
    import threading

    global _IMPORTING
    own = (threading.current_thread() is threading.main_thread()
           and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    previous = signal.signal(signal.SIGINT, lambda *_: leave_if_importing()) if own else None
    _IMPORTING = True
    try:
        yield
    finally:
        _IMPORTING = False
        if own:
            signal.signal(signal.SIGINT, previous)


def importing() -> bool:
    return _IMPORTING


def restore_stderr() -> None:
    """Inside stderr_silenced(), on the way out of the process: the last words must be seen."""
    if _REAL_STDERR is not None:
        os.dup2(_REAL_STDERR, 2)


def leave_if_importing() -> None:
    """From a SIGINT handler: inside _importing(), say "Interrupted." and exit 130 now."""
    if not _IMPORTING:
        return
    from .entry import exit_interrupted

    exit_interrupted()


def compile_cache_on() -> bool:
    """FMNIST_COMPILE_CACHE=0 (or the older FMNIST_JAX_CACHE=0) turns the compile caches off."""
    return all(os.environ.get(var, "1") != "0" for var in ("FMNIST_COMPILE_CACHE", "FMNIST_JAX_CACHE"))


def _configure_tensorflow_xla_cache() -> None:
    """The fused engine's XLA programs, kept between processes as JAX's are: the first epoch of the
    book's model drops from about 1.8 s to 0.9 s. Read by TensorFlow at import, so set before it;
    a TF_XLA_FLAGS that already names a cache folder is left alone."""
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if "tf_xla_persistent_cache_directory" in flags or not compile_cache_on() or cache_dir() is None:
        return
    try:
        path = cache_dir() / "tf-xla"
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return   # a read-only cache folder only costs speed
    os.environ["TF_XLA_FLAGS"] = f"{flags} --tf_xla_persistent_cache_directory={path}".strip()


def _keep_tensorflow_out() -> None:
    """On JAX, Keras still imports TensorFlow (3 s) where it is installed, only to ask "is this a
    tf.TensorShape?" while saving. Nothing we run on JAX needs it, so tell Keras it is absent."""
    try:
        from keras.src.utils import module_utils

        if "tensorflow" not in sys.modules:
            module_utils.tensorflow._available = False
    except (ImportError, AttributeError):
        pass  # a newer Keras: we only lose the 3 s


@contextlib.contextmanager
def stderr_silenced(silence: bool = True):
    """Point stderr's file descriptor at /dev/null meanwhile: C++ libraries (TensorFlow's start-up
    notes, Ray's retry logs) write to it directly, past Python's sys.stderr and its log levels."""
    if not silence:
        yield
        return
    global _REAL_STDERR
    sys.stderr.flush()
    saved = os.dup(2)
    outer, _REAL_STDERR = _REAL_STDERR, saved
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        _REAL_STDERR = outer
        os.close(saved)


def _import_tensorflow_quietly() -> None:
    """TensorFlow's C++ start-up notes (oneDNN, absl) ignore TF_CPP_MIN_LOG_LEVEL; they would bury
    our one-line messages, so they go to /dev/null while it loads."""
    if debug():
        return
    with stderr_silenced():
        try:
            import tensorflow  # noqa: F401
        except Exception:
            pass  # the real import, later, raises with stderr restored


def _configure_jax() -> None:
    import jax

    # Compiling an epoch takes seconds; a persistent cache pays that once per configuration, not per run.
    if compile_cache_on() and cache_dir() is not None:
        try:
            path = cache_dir() / "jax"
            path.mkdir(parents=True, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", str(path))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        except (OSError, AttributeError):
            pass  # a read-only home only costs speed


def describe() -> dict:
    """Library versions, backend and device, for run.json."""
    import platform

    import keras
    import numpy

    from . import __version__
    from .cores import cpu_cores

    info = {"fmnist": __version__, "python": platform.python_version(), "keras": keras.__version__,
            "numpy": numpy.__version__, "backend": keras.backend.backend(), "machine": platform.machine(),
            "system": platform.system(), "cpus": cpu_cores()}   # those it may use (taskset, containers)
    commit = code_commit()
    if commit:
        info["commit"] = commit
    if info["backend"] == "jax":
        import jax
        import jaxlib

        from .engines.fused import jax_compiler_options

        dev = jax.devices()[0]
        info.update(jax=jax.__version__, jaxlib=jaxlib.__version__, device=f"{dev.platform}:{getattr(dev, 'device_kind', dev.platform)}")
        options = jax_compiler_options()
        if options:   # they change the last bits of some results: part of "same setup"
            info["compile_options"] = " ".join(f"{k}={v}" for k, v in options.items())
    else:
        import tensorflow as tf

        # the GPUs TensorFlow uses (a listed one may be unusable to it: too old a card), named by
        # the physical device's details
        gpus = tf.config.list_logical_devices("GPU") and tf.config.list_physical_devices("GPU")
        info.update(tensorflow=tf.__version__, device=f"gpu:{_tf_gpu_name(tf, gpus[0])}" if gpus else "cpu")
    return info


@functools.cache
def code_commit() -> str | None:
    """The git commit of fmnist's own code where it runs from a clone (`make setup` installs it
    editable). Where fmnist_cli/ differs from it (edited or new files), "+changes." and a digest of
    the differences follows, so that two runs name the same code only if it was the same. None for
    an installed copy, without git, or where git refuses the folder."""
    import hashlib
    import subprocess

    here = Path(__file__).resolve().parent
    head = None

    def git(*args):
        return subprocess.run(["git", "-C", str(here.parent), *args], capture_output=True, timeout=5)

    try:
        if not (here.parent / ".git").exists():
            return None
        head = git("rev-parse", "--verify", "HEAD")
        if head.returncode != 0:
            return None
        diff, untracked = git("diff", "HEAD", "--binary", "--", str(here)), \
            git("ls-files", "--others", "--exclude-standard", "-z", "--", str(here))
        if diff.returncode or untracked.returncode:
            raise OSError("git could not list the changes")
        diff, new = diff.stdout, untracked.stdout.split(b"\0")
        digest = hashlib.sha256(diff)
        for name in sorted(filter(None, new)):
            digest.update(name + b"\0" + (here.parent / name.decode()).read_bytes())
        changed = bool(diff) or any(new)
        return head.stdout.decode().strip() + (f"+changes.{digest.hexdigest()[:12]}" if changed else "")
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        # a commit whose changes could not be read: never the same code as another (see reuse)
        return (head.stdout.decode(errors="replace").strip() + "+changes.unknown") if head is not None else None


def _tf_gpu_name(tf, gpu) -> str:
    """A GPU's model ("NVIDIA H200", as JAX's device_kind says it), so that two GPU models are two
    setups (`compare --reuse`); "gpu" where TensorFlow does not say."""
    try:
        return str(tf.config.experimental.get_device_details(gpu).get("device_name") or "gpu")
    except Exception:   # details are experimental, and absent on some builds
        return "gpu"
