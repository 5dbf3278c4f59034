"""One route table: every prediction endpoint is guarded, and every guarded route is an endpoint."""

from __future__ import annotations

import pytest

from service.routes import ROUTES


@pytest.fixture(scope="module")
def apis():
    from service.service import SparsityService

    return {api.route: api for api in SparsityService.apis.values()}


def test_every_endpoint_has_a_guarded_route_and_every_route_an_endpoint(apis):
    assert set(apis) == {route.path for route in ROUTES if route.bentoml_api}


def test_routes_without_an_endpoint_are_the_ones_the_fast_path_answers():
    from service.fastpath import FastPaths

    assert {route.path for route in ROUTES if not route.bentoml_api} == set(FastPaths.OWN_ROUTES)


def test_upload_fields_are_the_endpoints_file_parameters(apis):
    for route in (r for r in ROUTES if r.bentoml_api):
        fields = set(apis[route.path].input_spec.model_fields)
        if route.upload_field is not None:
            assert route.upload_field in fields, route
            assert route.content_types == ("multipart/form-data",)
        else:
            assert route.content_types == ("application/json",)
