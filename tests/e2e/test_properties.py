"""Properties over HTTP: random valid Settings round trip, random bad bodies are refused."""

from __future__ import annotations

import itertools

import httpx
from hypothesis import HealthCheck, given, settings
from lxml import etree

from smoothlive.management.errors import MgmtError
from smoothlive.management.settings import parse_settings, render_settings
from tests.e2e.conftest import PASSWORDS
from tests.e2e.test_management_api import ATOM, SERVICE, M
from tests.strategies import invalid_settings_xml_strategy, settings_strategy

_names = itertools.count()
DOCUMENTED = {MgmtError.INVALID_XML.code, MgmtError.INVALID_SCHEMA.code,
              MgmtError.INVALID_DATA.code}
PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _entry(settings_xml: str) -> bytes:
    return (
        '<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">'
        f'<SmoothStreaming xmlns="{M[1:-1]}">{settings_xml}</SmoothStreaming>'
        "</content></entry>"
    ).encode()


@PROPERTY
@given(value=settings_strategy())
def test_random_settings_round_trip_through_post_and_get(server, value):
    path = f"/prop/rt{next(_names)}.isml"
    with httpx.Client(base_url=server.url, auth=("operator", PASSWORDS["operator"]),
                      timeout=20) as http:
        created = http.post(f"{SERVICE}/settings", content=_entry(render_settings(value)),
                            headers={**ATOM, "Slug": path})
        assert created.status_code == 201, created.text
        shown = http.get(f"{path}/settings")
        assert shown.status_code == 200
        element = etree.fromstring(shown.content).find(f".//{M}Settings")
        assert parse_settings(element) == value
        created_element = etree.fromstring(created.content).find(f".//{M}Settings")
        assert parse_settings(created_element) == value
        http.delete(f"{path}/settings")


@PROPERTY
@given(body=invalid_settings_xml_strategy())
def test_random_bad_bodies_get_a_documented_error_never_a_500(server, body):
    path = f"/prop/bad{next(_names)}.isml"
    with httpx.Client(base_url=server.url, auth=("operator", PASSWORDS["operator"]),
                      timeout=20) as http:
        response = http.post(f"{SERVICE}/settings", content=body,
                             headers={**ATOM, "Slug": path})
        assert response.status_code == 400, response.text
        code = etree.fromstring(response.content).findtext(f"{M}Error/{M}ErrorCode")
        assert code in DOCUMENTED
        assert http.get(f"{path}/settings").status_code == 404  # nothing half-created
