"""Every environment setting is typed and range-checked; a bad value names the variable, the value
and the rule (the real start of the service with a bad value is in tests/integration)."""

from __future__ import annotations

import pytest

from service.config import SETTINGS, Settings, SettingsError

BAD = {
    "SERVED_MODELS": ["MNIST:latest", "mnist cnn", ":latest", "iris/l1", "iris:", "a,,b", "a,a:latest", "a:v1,a:v1"],
    "SERVICE_WORKERS": ["0", "65", "two", "1.5"],
    "TF_INTRA_OP_THREADS": ["0", "-1", "many"],
    "TF_INTER_OP_THREADS": ["0", "257"],
    "ONNX_INTRA_OP_THREADS": ["0", "257"],
    "ENGINE": ["onnx", "torch", "tensorflow,auto", "sparse,auto"],
    "NUMPY_THREADS": ["0", "257", "all"],
    "MAX_BODY_BYTES": ["100", "16MB", str(2**31)],
    "MAX_DRAIN_BYTES": ["-1", "lots"],
    "BODY_TIMEOUT_SECONDS": ["0", "nan", "3601", "soon"],
    "MAX_IMAGE_PIXELS": ["10", "big"],
    "ACCESS_LOG": ["maybe", "2"],
    "MODEL_KINDS": ["my kinds", "a..b", "1mod", "a,,b"],
    "MODEL_POLL_SECONDS": ["-1", "hourly", "86401"],
    "MODEL_LOAD_TIMEOUT_SECONDS": ["0", "inf"],
    "MAX_UNIT_SERIES": ["-5", "many"],
    "MANAGEMENT_KEY_FILE": ["/nonexistent/keys", "/"],
    "INFERENCE_KEY_FILE": ["/nonexistent/keys"],
    "EXPOSE_EXAMPLES": ["hidden"],
    "SHADOW": ["mnist_cnn:v2", "mnist_cnn:v2:1.5", "mnist_cnn:v2:-0.1", "mnist_cnn:v2:x", "a:v:1,a:w:1", "a:v:1:tee"],
    "SHADOW_QUEUE_BYTES": ["0", "4095", "lots"],
    "BATCH_MAX_SIZE": ["0", "1025", "many"],
    "BATCH_WAIT_MS": ["-1", "1001", "nan", "soon"],
    "BATCH_MAX_QUEUE": ["1023", "10000000", "lots"],
    "PREDICTION_LOG": ["sometimes"],
    "PREDICTION_LOG_URL": ["mysql://db/log", "postgresql://", "postgresql://host", "/tmp"],
    "PREDICTION_LOG_SAMPLE": ["-0.1", "1.5", "half", "nan"],
    "PREDICTION_LOG_INPUTS": ["some", "typical"],
    "PREDICTION_LOG_RETENTION_DAYS": ["-1", "forever", "36501"],
    "DRIFT_WINDOW": ["49", "0", "big"],
}


def test_every_setting_has_bad_values_under_test():
    assert {s.env for s in SETTINGS} == set(BAD)


@pytest.mark.parametrize(("name", "raw"), [(n, v) for n, values in BAD.items() for v in values])
def test_a_bad_value_names_variable_value_and_rule(name, raw):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: raw})
    message = str(caught.value)
    assert message.startswith(f"environment variable {name}={raw!r} is invalid: must ")
    assert "\n" not in message
    assert caught.value.name == name and caught.value.raw == raw


def test_defaults_when_unset_or_blank():
    defaults = Settings.from_env({})
    assert defaults == Settings.from_env({s.env: "  " for s in SETTINGS})
    assert defaults.workers == 1 and defaults.body_timeout == 30.0
    assert defaults.max_body_bytes == 16 * 1024 * 1024 and defaults.max_drain_bytes == 64 * 1024 * 1024
    assert defaults.served_models == () and defaults.access_log is False


def test_good_values_are_parsed_to_their_types():
    settings = Settings.from_env(
        {
            "SERVED_MODELS": "mnist_cnn:ahplpzxlhgqpkax4, wine_mlp",
            "SERVICE_WORKERS": " 4 ",
            "MAX_BODY_BYTES": "1_048_576",
            "BODY_TIMEOUT_SECONDS": "2.5",
            "MAX_DRAIN_BYTES": "0",
            "ACCESS_LOG": "On",
        }
    )
    assert settings.served_models == ("mnist_cnn:ahplpzxlhgqpkax4", "wine_mlp")
    versions = Settings.from_env({"SERVED_MODELS": "mnist_cnn:v1,mnist_cnn:v2", "EXPOSE_EXAMPLES": "false"})
    assert versions.served_models == ("mnist_cnn:v1", "mnist_cnn:v2") and versions.expose_examples is False
    assert settings.workers == 4 and settings.max_body_bytes == 1_048_576
    assert settings.body_timeout == 2.5 and settings.max_drain_bytes == 0 and settings.access_log is True
