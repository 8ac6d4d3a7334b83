"""The publishing point file (``.isml``): ``Settings`` <-> bytes, in IIS's own layout.

A Live Smooth Streaming publishing point *is* its .isml file, a SMIL 2.0
document whose ``head`` holds the settings as ``<meta name content>`` pairs and
whose ``body/par`` holds ``<ref src>`` links to other publishing points. IIS
stores site settings it is given in that file too (update-publishing-point-
settings.md: they "are stored in the SMIL manifest"). smoothlive writes the
layout IIS writes, so an operator can copy a file from an IIS server and back::

    <smil xmlns="http://www.w3.org/2001/SMIL20/Language">
      <head>
        <meta name="title" content="" />
        ...
      </head>
      <body>
        <par>
          <ref src="http://downstream.example/live/ch1.isml" />
        </par>
      </body>
    </smil>

Metas IIS writes (in this order):

==============================  ===========================================================
meta name                       meaning
==============================  ===========================================================
title                           Title
module                          always ``liveSmoothStreaming`` (kept as found)
sourceType                      SourceType, ``Push`` or ``Pull``
publishing                      enabled roles, ``;``-separated: ``Fragments`` =
                                ClientConnections, ``Streams`` = ServerConnections,
                                ``Archives`` = Archive
estimatedTime                   EstimatedDuration, in seconds
lookaheadChunks                 LookAheadChunks
manifestWindowLength            ClientConnections/WindowLength, in seconds
startOnFirstRequest             AutoStart
archiveSegmentLength            Archive/SegmentLength, in seconds
restartOnEncoderReconnect       AutoRestartOnEncoderReconnect
filters                         not modelled (kept as found, empty when new)
formats                         ``m3u8-aapl`` when an HLS module is configured and not
                                switched off (other tokens kept as found)
m3u8-aapl-segmentlength         HLS/SegmentLength, in seconds
m3u8-aapl-maxbitrate            HLS/MaxBitRate, in bit/s
m3u8-aapl-allowcaching          HLS/AllowCaching
m3u8-aapl-backwardcompatible    HLS/BackwardCompatible
m3u8-aapl-enableencryption      HLS/Encryption/@enabled
==============================  ===========================================================

Metas smoothlive adds, for settings IIS keeps elsewhere and for its own (written after IIS's):

==============================  ===========================================================
meta name                       meaning
==============================  ===========================================================
liveCacheLength                 ClientConnections/LiveCacheLength, in seconds
clientManifestVersion           ClientConnections/ClientManifestVersion
sendEndOfStreamOnStop           ServerConnections/SendEndOfStreamOnStop
archivePath                     Archive/Path (empty: the server's default path)
useEventIdOnPath                Archive/Path/@useEventIdOnPath
m3u8-aapl-includecodecs         HLS/IncludeCodecs
m3u8-aapl-encryptionkey         HLS/Encryption/Key (only when set)
m3u8-aapl-keyrotationperiod     HLS/Encryption/KeyRotationPeriod, in seconds (only when
                                not 0)
m3u8-aapl-moduleid              id of the HLS module, when not ``hls``
m3u8-aapl-modulename            name of the HLS module, when not ``HTTP Live Streaming``
                                (empty: no name)
m3u8-aapl-enabled               ``False`` when the HLS module is switched off
                                (Module/@enabled): its settings are kept, and ``formats``
                                leaves out ``m3u8-aapl`` so that IIS too serves no HLS
modules                         only when the modules are not just one HLS module: every
                                Module in order, ``;``-separated
                                ``type:id[:name[:disabled]]`` with id and name
                                percent-encoded, ``disabled`` for Module/@enabled false
                                (name then empty if unset); the m3u8-aapl-* settings
                                belong to the one whose id is m3u8-aapl-moduleid
==============================  ===========================================================

A file without m3u8-aapl-enabled, m3u8-aapl-keyrotationperiod and ``disabled``
entries (every IIS file) switches no output off and rotates no key.

Booleans are written as IIS does (``True``/``False``; ``restartOnEncoderReconnect``
in lower case) and read case-insensitively; seconds are exact decimals. The
``ref`` children of ``body/par`` are the PullFrom sources of a Pull publishing
point and the PushTo destinations of a Push one, with ``credentialName`` as an
attribute of the ``ref``.

Sans-IO: this module converts bytes; the store reads and writes the file.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from lxml import etree

from smoothlive.management.durations import ZERO, Duration
from smoothlive.management.errors import ManagementError
from smoothlive.management.settings import (
    HLS_MODULE_ID,
    HLS_MODULE_NAME,
    ArchiveSettings,
    ClientConnections,
    HlsSettings,
    Module,
    PublishingPointRef,
    ServerConnections,
    Settings,
    check_settings,
)
from smoothlive.management.xmlsafe import make_parser, parse_xml

__all__ = ["IIS_METAS", "SMIL_NS", "SMOOTHLIVE_METAS", "settings_from_isml", "settings_to_isml"]

SMIL_NS = "http://www.w3.org/2001/SMIL20/Language"

#: The metas IIS writes, in IIS's order.
IIS_METAS: tuple[str, ...] = (
    "title",
    "module",
    "sourceType",
    "publishing",
    "estimatedTime",
    "lookaheadChunks",
    "manifestWindowLength",
    "startOnFirstRequest",
    "archiveSegmentLength",
    "restartOnEncoderReconnect",
    "filters",
    "formats",
    "m3u8-aapl-segmentlength",
    "m3u8-aapl-maxbitrate",
    "m3u8-aapl-allowcaching",
    "m3u8-aapl-backwardcompatible",
    "m3u8-aapl-enableencryption",
)
#: The metas smoothlive adds, written after IIS's.
SMOOTHLIVE_METAS: tuple[str, ...] = (
    "liveCacheLength",
    "clientManifestVersion",
    "sendEndOfStreamOnStop",
    "archivePath",
    "useEventIdOnPath",
    "m3u8-aapl-includecodecs",
    "m3u8-aapl-encryptionkey",
    "m3u8-aapl-keyrotationperiod",
    "m3u8-aapl-moduleid",
    "m3u8-aapl-modulename",
    "m3u8-aapl-enabled",
    "modules",
)
_KNOWN = {name.lower() for name in IIS_METAS + SMOOTHLIVE_METAS}

_HLS_FORMAT = "m3u8-aapl"
_DISABLED = "disabled"  # the flag of a switched-off module in the modules meta
_LIVE_MODULE = "liveSmoothStreaming"
_ROLES = (("Fragments", "client"), ("Streams", "server"), ("Archives", "archive"))
_TOKEN_SPLIT = re.compile(r"[;,\s]+")
_INTEGER = re.compile(r"\+?[0-9]+")
_EMPTY_CLOSE = re.compile(rb"(<!--.*?-->)|/>", re.DOTALL)
_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>\n'

# Used only after xmlsafe.parse_xml has accepted the same bytes (no DTD, no
# entities); this one keeps comments so an operator's notes survive an update.
_KEEPING_PARSER = make_parser(keep_comments=True, remove_blank_text=True)


# ---------------------------------------------------------------------------
# Writing


def _iis_bool(value: bool) -> str:
    return "True" if value else "False"


def _hls_module(settings: Settings) -> Module | None:
    return next((m for m in settings.modules if m.hls is not None), None)


def _only_hls(settings: Settings) -> bool:
    """True when the metas of IIS alone describe the modules (none, or one HLS module)."""
    return not settings.modules or (
        len(settings.modules) == 1 and settings.modules[0].hls is not None
    )


def _modules_text(modules: tuple[Module, ...]) -> str:
    entries = []
    for module in modules:
        entry = f"{module.type}:{quote(module.id, safe='')}"
        if module.name is not None or not module.enabled:
            entry += f":{quote(module.name or '', safe='')}"
        if not module.enabled:
            entry += f":{_DISABLED}"
        entries.append(entry)
    return ";".join(entries)


def _metas(settings: Settings, kept: dict[str, str]) -> list[tuple[str, str]]:
    """The (name, content) metas for ``settings``, IIS's then smoothlive's.

    ``kept`` holds the original file's values of metas smoothlive does not model.
    """
    s = settings
    roles = {
        "client": s.client_connections.enabled,
        "server": s.server_connections.enabled,
        "archive": s.archive.enabled,
    }
    hls_module = _hls_module(s)
    formats = [_HLS_FORMAT] if hls_module is not None and hls_module.enabled else []
    formats += [
        token
        for token in _TOKEN_SPLIT.split(kept.get("formats", ""))
        if token and token.lower() != _HLS_FORMAT
    ]

    metas = [
        ("title", s.title),
        ("module", kept.get("module", _LIVE_MODULE)),
        ("sourceType", s.source_type),
        ("publishing", ";".join(token for token, role in _ROLES if roles[role])),
        ("estimatedTime", s.estimated_duration.to_seconds_text()),
        ("lookaheadChunks", str(s.look_ahead_chunks)),
        ("manifestWindowLength", s.client_connections.window_length.to_seconds_text()),
        ("startOnFirstRequest", _iis_bool(s.auto_start)),
        ("archiveSegmentLength", s.archive.segment_length.to_seconds_text()),
        ("restartOnEncoderReconnect", _iis_bool(s.auto_restart_on_encoder_reconnect).lower()),
        ("filters", kept.get("filters", "")),
        ("formats", ";".join(formats)),
    ]
    hls = hls_module.hls if hls_module is not None else None
    if hls is not None:
        metas += [
            ("m3u8-aapl-segmentlength", hls.segment_length.to_seconds_text()),
            ("m3u8-aapl-maxbitrate", str(hls.max_bit_rate)),
            ("m3u8-aapl-allowcaching", _iis_bool(hls.allow_caching)),
            ("m3u8-aapl-backwardcompatible", _iis_bool(hls.backward_compatible)),
            ("m3u8-aapl-enableencryption", _iis_bool(hls.encryption_enabled)),
        ]
    metas += [
        ("liveCacheLength", s.client_connections.live_cache_length.to_seconds_text()),
        ("clientManifestVersion", s.client_connections.client_manifest_version),
        ("sendEndOfStreamOnStop", _iis_bool(s.server_connections.send_end_of_stream_on_stop)),
        ("archivePath", s.archive.path or ""),
        ("useEventIdOnPath", _iis_bool(s.archive.use_event_id_on_path)),
    ]
    if hls_module is not None and hls is not None:
        metas.append(("m3u8-aapl-includecodecs", _iis_bool(hls.include_codecs)))
        if hls.key is not None:
            metas.append(("m3u8-aapl-encryptionkey", hls.key))
        if hls.key_rotation != ZERO:
            metas.append(("m3u8-aapl-keyrotationperiod", hls.key_rotation.to_seconds_text()))
        if hls_module.id != HLS_MODULE_ID:
            metas.append(("m3u8-aapl-moduleid", hls_module.id))
        if _only_hls(s) and hls_module.name != HLS_MODULE_NAME:
            metas.append(("m3u8-aapl-modulename", hls_module.name or ""))
        if not hls_module.enabled:
            metas.append(("m3u8-aapl-enabled", _iis_bool(False)))
    if not _only_hls(s):
        metas.append(("modules", _modules_text(s.modules)))
    return metas


def _qname(namespace: str | None, local: str) -> str:
    return f"{{{namespace}}}{local}" if namespace else local


def _local(element: etree._Element) -> str | None:
    return etree.QName(element).localname if isinstance(element.tag, str) else None


def _parse_original(original: bytes) -> etree._Element:
    try:
        parse_xml(original)  # the safety gate: no DTD, no entities, bounded size and depth
        root = etree.fromstring(original, _KEEPING_PARSER)
    except (ManagementError, etree.XMLSyntaxError, ValueError) as exc:
        raise ValueError(f"the publishing point file is not well-formed XML: {exc}") from None
    _check_root(root)
    return root


def _check_root(root: etree._Element) -> None:
    if _local(root) != "smil" or etree.QName(root).namespace not in (SMIL_NS, None):
        raise ValueError(f"the publishing point file is not a SMIL document (root {root.tag!r})")


def settings_to_isml(settings: Settings, original: bytes | None = None) -> bytes:
    """The .isml file for ``settings``: UTF-8, 2-space indent, IIS's metas then smoothlive's.

    With ``original`` (the file's previous content), what smoothlive does not
    own survives: unknown metas and other ``head`` content (after ours),
    ``filters``/``module`` values and unknown ``formats`` tokens, and ``body``
    content other than the ``ref`` elements of ``body/par``.

    Raises ``ManagementError(INVALID_DATA)`` for settings ``check_settings``
    refuses, and ``ValueError`` when ``original`` is not a SMIL document.
    """
    check_settings(settings)
    kept_values: dict[str, str] = {}
    kept_head: list[etree._Element] = []
    if original is None:
        namespace: str | None = SMIL_NS
        root = etree.Element(_qname(namespace, "smil"), nsmap={None: SMIL_NS})
    else:
        root = _parse_original(original)
        namespace = etree.QName(root).namespace

    head = next((c for c in root if _local(c) == "head"), None)
    if head is None:
        head = etree.Element(_qname(namespace, "head"))
        root.insert(0, head)
    for child in list(head):
        name = child.get("name", "") if _local(child) == "meta" else None
        if name is not None and name.lower() in _KNOWN:
            kept_values.setdefault(name.lower(), child.get("content", ""))
        else:
            kept_head.append(child)
        head.remove(child)
    head.text = None
    for name, content in _metas(settings, kept_values):
        etree.SubElement(head, _qname(namespace, "meta"), name=name, content=content)
    head.extend(kept_head)

    body = next((c for c in root if _local(c) == "body"), None)
    if body is None:
        body = etree.Element(_qname(namespace, "body"))
        root.insert(root.index(head) + 1, body)
    pars = [c for c in body if _local(c) == "par"]
    target, position = None, None
    for par in pars:
        for ref in [c for c in par if _local(c) == "ref"]:
            if target is None:
                target, position = par, par.index(ref)
            par.remove(ref)
    refs = settings.pull_from if settings.source_type == "Pull" else settings.push_to
    if refs:
        if target is None:
            target = pars[0] if pars else etree.SubElement(body, _qname(namespace, "par"))
            position = len(target)
        assert position is not None
        for offset, ref in enumerate(refs):
            element = etree.Element(_qname(namespace, "ref"), src=ref.url)
            if ref.credential_name is not None:
                element.set("credentialName", ref.credential_name)
            target.insert(position + offset, element)

    etree.indent(root, space="  ")
    text = etree.tostring(root, encoding="utf-8", xml_declaration=False)
    # IIS closes empty elements as " />"; libxml2 escapes ">" in text and attribute
    # values, so outside comments "/>" only ever ends an empty element.
    text = _EMPTY_CLOSE.sub(lambda m: m.group(1) or b" />", text)
    return _DECLARATION + text + b"\n"


# ---------------------------------------------------------------------------
# Reading


def _bool(metas: dict[str, str], name: str, default: bool) -> bool:
    value = metas.get(name.lower())
    if value is None:
        return default
    text = value.strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"meta {name}: {value!r} is not a boolean")


def _seconds(metas: dict[str, str], name: str, default: Duration) -> Duration:
    value = metas.get(name.lower())
    if value is None:
        return default
    try:
        return Duration.from_seconds_text(value)
    except ValueError:
        raise ValueError(f"meta {name}: {value!r} is not a number of seconds") from None


def _integer(metas: dict[str, str], name: str, default: int) -> int:
    value = metas.get(name.lower())
    if value is None:
        return default
    if not _INTEGER.fullmatch(value.strip()):
        raise ValueError(f"meta {name}: {value!r} is not a whole number")
    return int(value.strip())


def _read_modules(metas: dict[str, str]) -> tuple[Module, ...]:
    formats = {t.lower() for t in _TOKEN_SPLIT.split(metas.get("formats", "")) if t}
    hls = None
    # Settings of a switched-off HLS module are kept without m3u8-aapl in formats.
    hls_enabled = _HLS_FORMAT in formats and _bool(metas, "m3u8-aapl-enabled", True)
    if _HLS_FORMAT in formats or "m3u8-aapl-enabled" in metas:
        default = HlsSettings()
        key = metas.get("m3u8-aapl-encryptionkey", "").strip() or None
        hls = HlsSettings(
            segment_length=_seconds(metas, "m3u8-aapl-segmentlength", default.segment_length),
            max_bit_rate=_integer(metas, "m3u8-aapl-maxbitrate", default.max_bit_rate),
            allow_caching=_bool(metas, "m3u8-aapl-allowcaching", default.allow_caching),
            backward_compatible=_bool(
                metas, "m3u8-aapl-backwardcompatible", default.backward_compatible
            ),
            include_codecs=_bool(metas, "m3u8-aapl-includecodecs", default.include_codecs),
            encryption_enabled=_bool(
                metas, "m3u8-aapl-enableencryption", default.encryption_enabled
            ),
            key=key,
            key_rotation=_seconds(metas, "m3u8-aapl-keyrotationperiod", default.key_rotation),
        )
    hls_id = metas.get("m3u8-aapl-moduleid", HLS_MODULE_ID)

    listed = metas.get("modules")
    if listed is None:
        if hls is None:
            return ()
        name = metas.get("m3u8-aapl-modulename", HLS_MODULE_NAME)
        return (Module(id=hls_id, type="sink", name=name or None, hls=hls, enabled=hls_enabled),)

    modules = []
    attached = False
    for entry in (e for e in listed.split(";") if e.strip()):
        parts = entry.strip().split(":")
        flag = parts[3].strip().lower() if len(parts) == 4 else ""
        if len(parts) not in (2, 3, 4) or flag not in ("", _DISABLED):
            raise ValueError(f"meta modules: {entry!r} is not type:id[:name[:disabled]]")
        module_id = unquote(parts[1])
        module_hls = hls if hls is not None and module_id == hls_id else None
        attached = attached or module_hls is not None
        modules.append(
            Module(
                id=module_id,
                type=parts[0],  # type: ignore[arg-type]  # checked by check_settings
                name=unquote(parts[2]) or None if len(parts) >= 3 else None,
                hls=module_hls,
                enabled=flag != _DISABLED and (module_hls is None or hls_enabled),
            )
        )
    if hls is not None and not attached:
        raise ValueError(f"meta modules: no module {hls_id!r} to carry the m3u8-aapl settings")
    return tuple(modules)


def settings_from_isml(data: bytes) -> Settings:
    """The ``Settings`` of an .isml file written by IIS or by smoothlive.

    Lenient: missing metas take their defaults, unknown ones are ignored, meta
    names and booleans are matched without regard to case, and any encoding
    the XML declaration names (IIS may write UTF-16) is read. Raises
    ``ValueError`` with a readable message for a file that is not a SMIL
    document, for a meta value that cannot be read, and for settings out of
    range (``check_settings``).
    """
    try:
        root = parse_xml(data)
    except ManagementError as exc:
        detail = exc.detail
        raise ValueError(f"the publishing point file is not well-formed XML: {detail}") from None
    _check_root(root)

    metas: dict[str, str] = {}
    head = next((c for c in root if _local(c) == "head"), None)
    for meta in head if head is not None else ():
        if _local(meta) == "meta" and meta.get("name") is not None:
            metas.setdefault(meta.get("name", "").lower(), meta.get("content", ""))

    defaults = Settings()
    source_type = metas.get("sourcetype", defaults.source_type).strip()
    source_type = {"push": "Push", "pull": "Pull"}.get(source_type.lower(), source_type)
    publishing = metas.get("publishing")
    roles = (
        {t.lower() for t in _TOKEN_SPLIT.split(publishing) if t}
        if publishing is not None
        else {token.lower() for token, _ in _ROLES}
    )

    refs = []
    body = next((c for c in root if _local(c) == "body"), None)
    for par in (c for c in (body if body is not None else ()) if _local(c) == "par"):
        for ref in (c for c in par if _local(c) == "ref"):
            src = ref.get("src")
            if src is None:
                raise ValueError("body/par/ref without a src attribute")
            credential = (ref.get("credentialName") or "").strip() or None
            refs.append(PublishingPointRef(url=src.strip(), credential_name=credential))

    archive_default, client_default = defaults.archive, defaults.client_connections
    server_default = defaults.server_connections
    settings = Settings(
        title=metas.get("title", defaults.title),
        source_type=source_type,  # type: ignore[arg-type]  # checked by check_settings
        estimated_duration=_seconds(metas, "estimatedTime", defaults.estimated_duration),
        auto_start=_bool(metas, "startOnFirstRequest", defaults.auto_start),
        auto_restart_on_encoder_reconnect=_bool(
            metas, "restartOnEncoderReconnect", defaults.auto_restart_on_encoder_reconnect
        ),
        look_ahead_chunks=_integer(metas, "lookaheadChunks", defaults.look_ahead_chunks),
        archive=ArchiveSettings(
            enabled="archives" in roles,
            segment_length=_seconds(
                metas, "archiveSegmentLength", archive_default.segment_length
            ),
            path=metas.get("archivepath", "").strip() or None,
            use_event_id_on_path=_bool(
                metas, "useEventIdOnPath", archive_default.use_event_id_on_path
            ),
        ),
        client_connections=ClientConnections(
            enabled="fragments" in roles,
            window_length=_seconds(metas, "manifestWindowLength", client_default.window_length),
            live_cache_length=_seconds(
                metas, "liveCacheLength", client_default.live_cache_length
            ),
            client_manifest_version=metas.get(
                "clientmanifestversion", client_default.client_manifest_version
            ).strip(),
        ),
        server_connections=ServerConnections(
            enabled="streams" in roles,
            send_end_of_stream_on_stop=_bool(
                metas, "sendEndOfStreamOnStop", server_default.send_end_of_stream_on_stop
            ),
        ),
        pull_from=tuple(refs) if source_type == "Pull" else (),
        push_to=tuple(refs) if source_type != "Pull" else (),
        modules=_read_modules(metas),
    )
    try:
        check_settings(settings)
    except ManagementError as exc:
        detail = exc.detail
        raise ValueError(f"the publishing point file holds invalid settings: {detail}") from None
    return settings
