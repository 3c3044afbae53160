import pytest

from fmnist_cli.config import RunConfig, parse_hidden, parse_optimizer
from fmnist_cli.errors import UsageError


def test_defaults_are_the_books_relu_model():
    c = RunConfig().validate()
    assert c.hidden == (100,) and c.activation == "relu" and c.optimizer.name == "rmsprop"
    assert (c.epochs, c.batch_size, c.seed, c.val_size, c.split_seed) == (5, 32, 42, 0.2, 42)


def test_config_round_trips_through_json():
    import json

    c = RunConfig(hidden=(300, 100), dropout=0.2, optimizer=parse_optimizer("sgd:lr=0.1,momentum=0.5"),
                  limit=1000, early_stopping=2).validate()
    again = RunConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c


@pytest.mark.parametrize("text,expected", [("100", (100,)), ("300,100", (300, 100)), (" 64 , 32 ", (64, 32)), ("300-100", (300, 100))])
def test_parse_hidden(text, expected):
    assert parse_hidden(text) == expected


@pytest.mark.parametrize("text", ["100,abc", "", "0", "-5", "1.5", ",", "100,,10"])
def test_parse_hidden_refuses_malformed(text):
    with pytest.raises(UsageError):
        parse_hidden(text)


def test_optimizer_names_and_overrides():
    assert parse_optimizer("momentum").keras_kwargs() == {"momentum": 0.9}
    assert parse_optimizer("nesterov").keras_kwargs() == {"momentum": 0.9, "nesterov": True}
    spec = parse_optimizer("sgd:lr=0.1", momentum=0.5)
    assert spec.keras_kwargs() == {"learning_rate": 0.1, "momentum": 0.5}
    assert spec.label() == "sgd:lr=0.1,momentum=0.5"
    assert parse_optimizer(spec.label()) == spec


def test_a_setting_given_twice_with_two_values_is_refused():
    # Neither may be dropped without a word: `--optimizer sgd:lr=0.1 --lr 0.01` trained at 0.01.
    assert parse_optimizer("sgd:lr=0.1", learning_rate=0.1).learning_rate == 0.1   # the same value twice
    for text, kw, mentions in (("sgd:lr=0.1", {"learning_rate": 0.01}, "--learning-rate sets it to 0.01"),
                               ("sgd:momentum=0.5", {"momentum": 0.9}, "--momentum"),
                               ("nesterov:nesterov=false", {"nesterov": True}, "disagree on nesterov")):
        with pytest.raises(UsageError, match=mentions):
            parse_optimizer(text, **kw)


@pytest.mark.parametrize("text", ["adamx", "sgd:lr=abc", "sgd:foo=1", "adam:momentum=0.9", "sgd:lr=-1", "sgd:lr"])
def test_bad_optimizers_list_the_choices_or_the_problem(text):
    with pytest.raises(UsageError) as err:
        parse_optimizer(text)
    if text == "adamx":
        assert "sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, nadam" in str(err.value)


@pytest.mark.parametrize("change", [dict(epochs=0), dict(dropout=1.5), dict(batch_size=0), dict(val_size=1.0),
                                    dict(activation="softmaxx"), dict(limit=3), dict(early_stopping=0),
                                    dict(backend="torch"), dict(engine="fast")])
def test_bad_values_are_refused(change):
    with pytest.raises(UsageError):
        RunConfig(**change).validate()
