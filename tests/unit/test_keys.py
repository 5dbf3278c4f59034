"""Keys in process: which routes need which key, the Authorization header's hostile forms, key files re-read
when they change, and the request metrics' route labels that keep series bounded."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from service.rest.guard import RequestGuard
from service.rest.keys import KeyFile, KeyRules, RouteGuard, bearer, needs
from service.routes import UNMATCHED, endpoint_label
from tests.helpers import asgi_request


def _guard(management: KeyFile | None, inference: KeyFile | None):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"through"})

    return RouteGuard(app, rules=KeyRules(management, inference))


def _call(guard, method: str, path: str, headers=None, **kwargs) -> httpx.Response:
    return asgi_request(guard, method, path, headers=headers, **kwargs)


@pytest.fixture
def files(tmp_path):
    management, inference = tmp_path / "management", tmp_path / "inference"
    management.write_text("# operators\nm-key-1\n\n")
    inference.write_text("i-key-1\ni-key-2\n")
    return management, inference


def test_routes_need_the_right_key():
    assert needs("/v2/repository/models/x/load") == "management" and needs("/v2/repository/index") == "management"
    for path in ("/models", "/models/x/examples", "/mnist/predict", "/v2/models/x/infer", "/v2", "/v2/models/x"):
        assert needs(path) == "inference", path
    for path in ("/livez", "/readyz", "/metrics", "/v2/health/ready", "/docs.json", "/", "/ui", "/ui/app.js"):
        assert needs(path) is None, path
    assert needs("/models/x/shadow") == "inference" and needs("/models/x/shadow", "PUT") == "management"
    assert needs("/models/x/shadow", "POST") == "management"  # no such method: the strictest key of the path


def test_a_path_no_route_has_is_refused_in_one_place_before_any_key(files):
    guard = _guard(KeyFile(files[0]), KeyFile(files[1]))
    unknown = _call(guard, "GET", "/nothing/here")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "path: no route answers GET /nothing/here (GET / lists the API)"
    oip = _call(guard, "GET", "/v2/nothing")
    assert oip.status_code == 404 and oip.json() == {"error": "GET /v2/nothing: no such route"}
    assert _call(guard, "POST", "/v2/repository/nothing").status_code == 404


def test_a_method_its_path_does_not_take_gets_405_naming_the_methods_after_the_key(files):
    guard = _guard(KeyFile(files[0]), KeyFile(files[1]))
    assert _call(guard, "POST", "/models/x/shadow").status_code == 401  # the key first
    refused = _call(guard, "POST", "/models/x/shadow", {"Authorization": "Bearer m-key-1"})
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD, PUT, DELETE"
    assert refused.json()["error"] == "method: POST is not allowed; use GET, PUT or DELETE"
    oip = _call(guard, "DELETE", "/v2/models/toy", {"Authorization": "Bearer i-key-1"})
    assert oip.status_code == 405 and oip.json() == {"error": "DELETE /v2/models/toy: no such route"}
    predict = _call(guard, "GET", "/models/x/predict", {"Authorization": "Bearer i-key-1"})
    assert predict.status_code == 405 and predict.json()["error"] == "method: GET is not allowed; use POST"


def test_management_routes_are_off_without_their_file_and_need_its_key_with_it(files):
    off = _call(_guard(None, None), "POST", "/v2/repository/index")
    assert off.status_code == 403 and "set MANAGEMENT_KEY_FILE" in off.json()["error"]
    assert _call(_guard(None, None), "POST", "/models/x/predict").text == "through"  # inference open when unset
    guard = _guard(KeyFile(files[0]), KeyFile(files[1]))
    assert _call(guard, "POST", "/v2/repository/index", {"Authorization": "Bearer m-key-1"}).text == "through"
    wrong = _call(guard, "POST", "/v2/repository/index", {"Authorization": "Bearer i-key-1"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    assert wrong.json()["error"] == "Authorization: the key is not valid"
    assert _call(guard, "GET", "/models", {"Authorization": "Bearer i-key-2"}).text == "through"
    assert _call(guard, "GET", "/models", {"Authorization": "Bearer m-key-1"}).status_code == 401
    assert _call(guard, "GET", "/metrics").text == "through" and _call(guard, "GET", "/livez").text == "through"


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ([], "send Authorization: Bearer <key>"),
        ([("Authorization", "")], "the Authorization scheme must be Bearer"),
        ([("Authorization", "Bearer ")], "the Bearer key is empty"),
        ([("Authorization", "Bearer    ")], "the Bearer key is empty"),
        ([("Authorization", "Basic aS1rZXktMTo=")], "the Authorization scheme must be Bearer"),
        ([("Authorization", "i-key-1")], "the Authorization scheme must be Bearer"),
        ([("Authorization", "Bearer i-key-1"), ("Authorization", "Bearer i-key-1")], "send one Authorization header"),
        ([("Authorization", "Bearer " + "k" * 5000)], "over 4096 bytes"),
        ([("Authorization", "Bearer i-key-1x")], "the key is not valid"),
        ([("Authorization", "Bearer i-key")], "the key is not valid"),
    ],
)
def test_hostile_authorization_headers_get_401_naming_the_problem(files, headers, problem):
    response = _call(_guard(None, KeyFile(files[1])), "POST", "/v2/models/x/infer", headers=headers, content=b"{}")
    assert response.status_code == 401 and problem in response.json()["error"]
    assert response.headers["www-authenticate"] == 'Bearer realm="sparsity-service"'


def test_the_scheme_is_case_insensitive_and_spaces_around_the_key_are_ignored(files):
    assert bearer([(b"authorization", b"bearer   i-key-1  ")]) == (b"i-key-1", None)


def test_a_key_file_is_reread_when_it_changes_and_a_missing_file_accepts_nothing(files):
    keys = KeyFile(files[1], reload_seconds=0)
    assert keys.accepts(b"i-key-1") and not keys.accepts(b"rotated")
    files[1].write_text("rotated\n")
    os.utime(files[1], ns=(time.time_ns(), time.time_ns() + 10**9))
    assert keys.accepts(b"rotated") and not keys.accepts(b"i-key-1")
    files[1].unlink()
    assert not keys.accepts(b"rotated")
    files[1].write_text("\n# nothing but a comment\n")
    assert not keys.accepts(b"") and not keys.accepts(b"# nothing but a comment")


def test_request_series_are_labelled_by_route():
    assert endpoint_label("/models/mnist_cnn/predict") == "/models/{name}/predict"
    assert endpoint_label("/models/anything") == "/models/{name}"
    assert endpoint_label("/v2/models/a/versions/b/infer") == "/v2/models/{name}/versions/{version}/infer"
    assert endpoint_label("/v2/repository/models/a/load") == "/v2/repository/models/{name}/load"
    assert endpoint_label("/mnist/predict") == "/mnist/predict" and endpoint_label("/metrics") == "/metrics"
    assert endpoint_label("/ui/app.js") == "/ui/{file}"
    for path in ("/wp-admin.php", "/models/a/b/c", "/v2/models/a/explain", "/v2/repository/x", "/a" * 50):
        assert endpoint_label(path) == UNMATCHED, path


def test_the_key_is_checked_before_the_content_type_and_the_size(files):
    """The request guard asks the key rules first: without its key, a POST with the wrong content type or an
    oversize body gets 401 (not 415 or 413); with it, the guard's own checks answer as before."""
    rules = KeyRules(KeyFile(files[0]), KeyFile(files[1]))

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"through"})

    stack = RequestGuard(RouteGuard(app, rules=rules), max_body_bytes=1024, first=rules.answer)
    path = "/models/x/predict_batch"
    text = {"content-type": "text/plain"}
    keyless = _call(stack, "POST", path, text, content=b"hello")
    assert keyless.status_code == 401 and keyless.headers["www-authenticate"].startswith("Bearer")
    assert keyless.json()["error"] == "Authorization: send Authorization: Bearer <key>"
    big = _call(stack, "POST", path, {"content-type": "application/x-npy"}, content=b"x" * 4096)
    assert big.status_code == 401
    keyed = {**text, "Authorization": "Bearer i-key-1"}
    assert _call(stack, "POST", path, keyed, content=b"hello").status_code == 415
    oversize = _call(stack, "POST", path, {**keyed, "content-type": "application/x-npy"}, content=b"x" * 4096)
    assert oversize.status_code == 413
    assert _call(stack, "POST", path, {**keyed, "content-type": "application/x-npy"}, content=b"x").text == "through"
