"""The nine operations of the management REST API against a real server."""

from __future__ import annotations

from pathlib import Path

import httpx
from lxml import etree

from smoothlive.management.errors import MgmtError
from tests.e2e.conftest import client
from tests.e2e.xmlcompare import assert_contains

EXAMPLES = Path(__file__).parents[1] / "fixtures" / "spec_examples"
A = "{http://www.w3.org/2005/Atom}"
M = "{http://schemas.microsoft.com/iis/media/2011/03/streaming/management}"
SERVICE = "/services/smoothstreaming/publishingpoints.isml"
ATOM = {"Content-Type": "application/atom+xml"}


def example(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


def xml(response: httpx.Response) -> etree._Element:
    return etree.fromstring(response.content)


def error_code(response: httpx.Response) -> str:
    return xml(response).findtext(f"{M}Error/{M}ErrorCode")


def assert_error(response: httpx.Response, error: MgmtError) -> None:
    assert response.status_code == error.status, response.text
    root = xml(response)
    assert root.tag == f"{M}SmoothStreaming"
    assert root.findtext(f"{M}Error/{M}ErrorCode") == error.code
    assert root.findtext(f"{M}Error/{M}ErrorMessage") == error.message
    assert root.find(f"{M}Error/{M}InternalError") is not None


def settings_body(settings_inner: str = "") -> bytes:
    return (
        f'<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">'
        f'<SmoothStreaming xmlns="{M[1:-1]}"><Settings>{settings_inner}</Settings>'
        f"</SmoothStreaming></content></entry>"
    ).encode()


def state_body(value: str) -> bytes:
    return (
        f'<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml">'
        f'<SmoothStreaming xmlns="{M[1:-1]}"><State><Value>{value}</Value></State>'
        f"</SmoothStreaming></content></entry>"
    ).encode()


def create(http: httpx.Client, path: str, inner: str = "<Title>t</Title>") -> httpx.Response:
    return http.post(f"{SERVICE}/settings", content=settings_body(inner),
                     headers={**ATOM, "Slug": path})


def state_of(http: httpx.Client, path: str) -> str:
    response = http.get(f"{path}/state")
    assert response.status_code == 200, response.text
    return xml(response).findtext(f"{A}content/{M}SmoothStreaming/{M}State/{M}Value")


def set_state(http: httpx.Client, path: str, value: str) -> httpx.Response:
    return http.put(f"{path}/state", content=state_body(value), headers=ATOM)


# -- the spec's examples, sent as a client would --------------------------------

def test_create_example_gets_the_example_response(operator, server):
    response = operator.post(f"{SERVICE}/settings", content=example("create.request.xml"),
                             headers={**ATOM, "Slug": "/media/bunny.isml"})
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/atom+xml")
    assert response.headers["location"] == f"{server.url}/media/bunny.isml/settings"
    expected = etree.fromstring(example("create.response.xml"))
    assert_contains(expected, xml(response), "http://contoso.com", server.url)
    assert (server.root / "media" / "bunny.isml").is_file()


def test_query_settings_example(operator, server):
    create(operator, "/bunny.isml", example_settings("query-settings.response.xml"))
    response = operator.get("/bunny.isml/settings")
    assert response.status_code == 200
    expected = etree.fromstring(example("query-settings.response.xml"))
    assert_contains(expected, xml(response), "http://contoso.com", server.url)


def example_settings(name: str) -> str:
    """The Settings element of an example, as text, for sending it back."""
    settings = etree.fromstring(example(name)).find(f".//{M}Settings")
    return "".join(etree.tostring(child, encoding="unicode") for child in settings)


def test_update_settings_example_with_hls_module(operator, server, point_name):
    assert create(operator, point_name).status_code == 201
    response = operator.put(f"{point_name}/settings",
                            content=example("update-settings.request.xml"), headers=ATOM)
    assert response.status_code == 200, response.text
    assert response.content == b""
    shown = operator.get(f"{point_name}/settings")
    sent = etree.fromstring(example("update-settings.request.xml"))
    assert_contains(sent.find(f"{A}content"), xml(shown).find(f"{A}content"),
                    "http://contoso.com", server.url)
    isml = (server.root / point_name.strip("/")).read_text()
    assert "m3u8-aapl" in isml and "8C339AD2F44E4B2B72C95888385221BE" in isml


def test_state_example_and_query_state(operator, server, point_name):
    create(operator, point_name, "<Title>Bunny</Title>")
    response = operator.put(f"{point_name}/state", content=example("update-state.request.xml"),
                            headers=ATOM)
    assert response.status_code == 200, response.text
    shown = operator.get(f"{point_name}/state")
    expected = etree.fromstring(example("query-state.response.xml"))
    base = f"{server.url}{point_name[:-len('.isml')]}"
    assert_contains(expected, xml(shown), "http://contoso.com/test1", base)


def test_statistics_of_a_started_point_has_the_example_shape(operator, server, point_name):
    create(operator, point_name)
    assert set_state(operator, point_name, "Started").status_code == 200
    response = operator.get(f"{point_name}/statistics")
    assert response.status_code == 200, response.text
    root = xml(response)
    assert root.findtext(f"{A}id") == f"{server.url}{point_name}/statistics"
    links = {link.get("rel"): link.get("href") for link in root.findall(f"{A}link")}
    assert links == {"self": f"{server.url}{point_name}/statistics",
                     "related": f"{server.url}{point_name}/settings"}
    stats = root.find(f"{A}content/{M}SmoothStreaming/{M}Statistics")
    assert stats.find(f"{M}InputStreams") is not None
    assert stats.find(f"{M}OutputStreams") is not None


def test_enumerations_list_points_with_and_without_details(operator, server):
    for name in ("/myvideos/bunny.isml", "/myvideos/elephant.isml"):
        create(operator, name, "<Title>Big Buck Bunny</Title>")
    plain = xml(operator.get(SERVICE))
    assert plain.findtext(f"{A}title") == "Publishing Point Collection"
    ids = [e.findtext(f"{A}id") for e in plain.findall(f"{A}entry")]
    assert f"{server.url}/myvideos/bunny.isml/settings" in ids
    assert f"{server.url}/myvideos/elephant.isml/settings" in ids
    assert all(e.find(f"{A}content") is None for e in plain.findall(f"{A}entry"))

    detailed = xml(operator.get(f"{SERVICE}/settings"))
    entries = {e.findtext(f"{A}id"): e for e in detailed.findall(f"{A}entry")}
    bunny = entries[f"{server.url}/myvideos/bunny.isml/settings"]
    assert bunny.findtext(f"{A}content/{M}SmoothStreaming/{M}Settings/{M}Title") == \
        "Big Buck Bunny"
    rels = {link.get("title"): link.get("rel") for link in bunny.findall(f"{A}link")}
    assert rels == {"Settings": "self", "State": "related"}


def test_enumeration_leaves_out_points_the_user_cannot_read(operator, server):
    create(operator, "/events/e1.isml")
    create(operator, "/shared/s1.isml")
    create(operator, "/private/p1.isml")
    with client(server, "events") as events:
        ids = [e.findtext(f"{A}id") for e in xml(events.get(SERVICE)).findall(f"{A}entry")]
        detailed = xml(events.get(f"{SERVICE}/settings")).findall(f"{A}entry")
    assert f"{server.url}/events/e1.isml/settings" in ids
    assert f"{server.url}/shared/s1.isml/settings" in ids
    assert not any("/private/" in i for i in ids)
    assert len(detailed) == len(ids)


def test_delete_removes_the_file_and_the_point(operator, server, point_name):
    create(operator, point_name)
    response = operator.delete(f"{point_name}/settings")
    assert response.status_code == 200
    assert not (server.root / point_name.strip("/")).exists()
    assert_error(operator.get(f"{point_name}/settings"), MgmtError.PUBLISHING_POINT_NOT_FOUND)


def test_delete_of_a_running_point_stops_and_deletes_it(operator, server, point_name):
    create(operator, point_name)
    assert set_state(operator, point_name, "Started").status_code == 200
    assert operator.delete(f"{point_name}/settings").status_code == 200
    assert not (server.root / point_name.strip("/")).exists()
    # Recreated, it starts from Idle again.
    create(operator, point_name)
    assert state_of(operator, point_name) == "Idle"


def test_head_answers_like_get_without_a_body(operator, point_name):
    create(operator, point_name)
    response = operator.head(f"{point_name}/settings")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


def test_isml_copied_in_by_an_operator_is_a_point(operator, server):
    folder = server.root / "copied"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "iis.isml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<smil xmlns="http://www.w3.org/2001/SMIL20/Language"><head>'
        '<meta name="title" content="From IIS" />'
        '<meta name="module" content="liveSmoothStreaming" />'
        '<meta name="sourceType" content="Push" />'
        '<meta name="publishing" content="Fragments;Archives" />'
        '<meta name="estimatedTime" content="3600" />'
        '<meta name="lookaheadChunks" content="3" />'
        '<meta name="manifestWindowLength" content="1800" />'
        '<meta name="startOnFirstRequest" content="True" />'
        '<meta name="archiveSegmentLength" content="0" />'
        "</head><body></body></smil>")
    settings = xml(operator.get("/copied/iis.isml/settings")).find(
        f"{A}content/{M}SmoothStreaming/{M}Settings")
    assert settings.findtext(f"{M}Title") == "From IIS"
    assert settings.findtext(f"{M}EstimatedDuration") == "PT1H"
    assert settings.findtext(f"{M}AutoStart") == "true"
    assert settings.findtext(f"{M}LookAheadChunks") == "3"
    assert settings.findtext(f"{M}ClientConnections/{M}WindowLength") == "PT30M"
    assert settings.find(f"{M}ServerConnections").get("enabled") == "false"
    assert state_of(operator, "/copied/iis.isml") == "Idle"


def test_enumerate_example(operator, server):
    for name, title in (("/myvideos/bunny.isml", "Big Buck Bunny"),
                        ("/myvideos/elephant.isml", "Elephant's Dream")):
        create(operator, name, f"<Title>{title}</Title>")
        operator.put(f"{name}/settings", content=settings_body(f"<Title>{title}</Title>"),
                     headers=ATOM)
    expected = etree.fromstring(example("enumerate.response.xml"))
    assert_contains(expected, xml(operator.get(SERVICE)), "http://contoso.com", server.url)


def test_enumerate_with_details_example(operator, server):
    create(operator, "/testBunny.isml", "<Title>Bunny</Title><SourceType>Push</SourceType>"
           "<AutoStart>false</AutoStart><LookAheadChunks>2</LookAheadChunks>")
    expected = etree.fromstring(example("enumerate-details.response.xml"))
    # The example's first entry names a folder (TestElephant) without a .isml
    # file; the second is a real point: compare the feed with that entry.
    expected.remove(expected.findall(f"{A}entry")[0])
    assert_contains(expected, xml(operator.get(f"{SERVICE}/settings")),
                    "http://contoso.com", server.url)


def test_settings_element_example_round_trips(operator, server, point_name):
    sent = example_settings("settings-element.response.xml")
    assert create(operator, point_name, sent).status_code == 201
    expected = etree.fromstring(example("settings-element.response.xml"))
    shown = xml(operator.get(f"{point_name}/settings"))
    assert_contains(expected.find(f"{A}content"), shown.find(f"{A}content"), "", "")


def test_unreadable_isml_is_a_500_without_details_and_left_out_of_lists(operator, server):
    broken = server.root / "broken"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "bad.isml").write_bytes(b"\x00\x01 this is not SMIL")
    response = operator.get("/broken/bad.isml/settings")
    assert response.status_code == 500
    root = xml(response)
    assert root.findtext(f"{M}Error/{M}ErrorCode") == "0x80004005"
    assert "bad.isml" not in response.text and "Traceback" not in response.text
    ids = [e.findtext(f"{A}id") for e in xml(operator.get(SERVICE)).findall(f"{A}entry")]
    assert not any("/broken/" in i for i in ids)
    assert "bad.isml" in server.log()
