"""service.observability.logs: refused requests as one line, server errors untouched; sparsity.logs' format."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest
from bentoml.exceptions import InternalServerError, InvalidArgument
from pydantic import BaseModel, ValidationError

from service.observability.logs import RefusalsAsOneLine
from sparsity import logs


class Rows(BaseModel):
    features: list[list[float]]


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        exc_info = sys.exc_info()
    return logging.LogRecord(
        "bentoml", logging.ERROR, __file__, 1, "Exception on %s [%s]", ("/iris/predict", "POST"), exc_info
    )


def _validation_error() -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Rows.model_validate({"features": [[1.0, "x"]]})
    return caught.value


def test_a_validation_error_becomes_one_info_line_naming_the_field():
    record = _record(_validation_error())
    assert RefusalsAsOneLine().filter(record) is True
    assert record.levelname == "INFO" and record.exc_info is None
    reason = "features[0][1]: Input should be a valid number, unable to parse string as a number"
    assert record.getMessage() == f"refused /iris/predict [POST] with 400: {reason}"


def test_a_client_error_from_bentoml_keeps_its_status():
    record = _record(InvalidArgument("images: bad"))
    RefusalsAsOneLine().filter(record)
    assert record.levelname == "INFO" and record.getMessage() == "refused /iris/predict [POST] with 400: images: bad"


@pytest.mark.parametrize("exc", [RuntimeError("boom"), InternalServerError("model failed")])
def test_a_server_error_keeps_its_level_and_traceback(exc):
    record = _record(exc)
    assert RefusalsAsOneLine().filter(record) is True
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.getMessage() == "Exception on /iris/predict [POST]"


def test_the_shared_format_matches_its_own_pattern():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure(logging.INFO, stream)
    try:
        logging.getLogger("training.mnist").info("epoch 1/2: loss 0.1")
    finally:
        root.handlers[:], root.level = saved
    (line,) = stream.getvalue().splitlines()
    assert re.match(logs.LINE_PATTERN + "epoch 1/2: loss 0.1$", line), line
    assert "[INFO] [training.mnist] " in line
