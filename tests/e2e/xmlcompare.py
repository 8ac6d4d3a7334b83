"""Comparing a server answer with an example of the IIS pages.

The answer must contain everything the example shows, in the same order,
with the same values; it may carry more (every Settings element is filled
in with its default). Host names are the real server's, times are now.
"""

from __future__ import annotations

import re

from lxml import etree

UPDATED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


def _rehost(text: str, example_base: str, real_base: str) -> str:
    return text.replace(example_base, real_base)


def assert_contains(example: etree._Element, actual: etree._Element,
                    example_base: str, real_base: str, where: str = "") -> None:
    where = f"{where}/{etree.QName(example).localname}"
    assert actual.tag == example.tag, f"{where}: {actual.tag} != {example.tag}"
    for name, value in example.attrib.items():
        assert name in actual.attrib, f"{where}: missing attribute {name}"
        assert actual.attrib[name] == _rehost(value, example_base, real_base), (
            f"{where}@{name}: {actual.attrib[name]!r} != {value!r}")
    expected_text = (example.text or "").strip()
    actual_text = (actual.text or "").strip()
    if etree.QName(example).localname == "updated":
        assert UPDATED.match(actual_text), f"{where}: bad timestamp {actual_text!r}"
    elif expected_text:
        assert actual_text == _rehost(expected_text, example_base, real_base), (
            f"{where}: {actual_text!r} != {expected_text!r}")
    children = [c for c in actual if isinstance(c.tag, str)]
    position = 0
    for child in example:
        if not isinstance(child.tag, str):
            continue
        # Greedy subsequence: the next child of the same tag that matches whole.
        failure = f"{where}: missing {etree.QName(child).localname}"
        while position < len(children):
            candidate = children[position]
            position += 1
            if candidate.tag != child.tag:
                continue
            try:
                assert_contains(child, candidate, example_base, real_base, where)
                break
            except AssertionError as exc:
                failure = str(exc)
        else:
            raise AssertionError(failure)
