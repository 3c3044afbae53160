import pytest

from helpers import invoke
from fmnist_cli import models
from fmnist_cli.config import ACTIVATIONS, OPTIMIZERS, RunConfig, parse_optimizer


@pytest.mark.parametrize("hidden,dropout", [((100,), 0.0), ((300, 100), 0.0), ((300, 100), 0.2), ((1,), 0.5),
                                            ((512, 256, 128), 0.1)])
def test_hand_count_equals_keras_count(hidden, dropout):
    config = RunConfig(hidden=hidden, dropout=dropout).validate()
    model = models.build_model(config)
    table = models.layer_table(config)
    assert models.summary(config)["total_params"] == model.count_params()
    assert [r["name"] for r in table] == [layer.name for layer in model.layers]
    assert [r["params"] for r in table] == [layer.count_params() for layer in model.layers]
    assert [tuple(r["output_shape"]) for r in table] == [tuple(layer.output.shape) for layer in model.layers]


def test_book_model_has_79510_parameters():
    s = models.summary(RunConfig())
    assert s["total_params"] == 79_510 and [r["params"] for r in s["layers"]] == [0, 78_500, 1_010]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_builds(activation):
    model = models.build_model(RunConfig(activation=activation).validate())
    assert model.get_layer("hidden_1").activation.__name__ == {"swish": "silu"}.get(activation, activation)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_with_keras_defaults(name):
    import keras

    opt = models.build_optimizer(RunConfig(optimizer=parse_optimizer(name)).validate())
    default = getattr(keras.optimizers, OPTIMIZERS[name][0])()
    assert float(opt.learning_rate) == pytest.approx(float(default.learning_rate))
    if name in ("momentum", "nesterov"):
        assert opt.momentum == 0.9 and opt.nesterov == (name == "nesterov")


def test_overrides_reach_keras():
    opt = models.build_optimizer(RunConfig(optimizer=parse_optimizer("sgd", 0.05, 0.8, True)).validate())
    assert float(opt.learning_rate) == pytest.approx(0.05) and opt.momentum == 0.8 and opt.nesterov


def test_summary_command_table_and_json():
    result = invoke("summary")
    assert result.exit_code == 0 and "79,510" in result.output and "78,500" in result.output
    js = __import__("json").loads(invoke("summary", "--hidden", "300,100", "--json").output)
    assert js["total_params"] == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


def test_help_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from fmnist_cli.cli import app; "
            "r = [CliRunner().invoke(app, a) for a in (['--help'], ['train', '--help'], ['compare', '--help'], "
            "['evaluate', '--help'], ['summary'], ['runs', '--help'], ['data', '--help'])]; "
            "assert all(x.exit_code == 0 for x in r), [x.output for x in r]; "
            "bad = [m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules]; print(bad); assert not bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_command_has_help_with_examples():
    for cmd in ("train", "evaluate", "compare", "summary", "runs", "data"):
        result = invoke(cmd, "--help")
        assert result.exit_code == 0 and "Example" in result.output, cmd


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_keras_loads_without_scikit_learn_and_matplotlib(backend):
    """Keras would import both (0.9 s) for features fmnist never uses through it, and TensorFlow JAX
    (0.4 s); fmnist's own uses of them (the stratified --limit, evaluate's confusion matrix, the
    figures) still import them."""
    import subprocess
    import sys

    if backend == "jax":
        pytest.importorskip("jax")
    code = ("import sys; from fmnist_cli import backend; backend.configure(%r); import keras; "
            "early = [m for m in ('sklearn', 'matplotlib', 'scipy.stats', 'jax') if m in sys.modules and m != %r]; "
            "from sklearn.metrics import confusion_matrix; import matplotlib.pyplot; "
            "print(early, keras.backend.backend(), confusion_matrix([0, 1], [0, 1]).tolist())") % (backend, backend)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[0] == f"[] {backend} [[1, 0], [0, 1]]"
