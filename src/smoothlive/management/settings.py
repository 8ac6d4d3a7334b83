"""The Settings element of the SmoothStreaming schema, as typed values.

One ``Settings`` value is the whole configuration of a publishing point: the
Query Publishing Point Settings operation returns "all available settings in a
single call" so that create and update are symmetric (query-publishing-point-
settings.md). So ``render_settings`` writes every element, defaults filled in,
and ``parse_settings(render_settings(s)) == s`` holds for every valid ``s``.

Element layout (settings-element.md)::

    Settings
      Title, SourceType, EstimatedDuration, AutoStart,
      AutoRestartOnEncoderReconnect, LookAheadChunks
      Archive @enabled          SegmentLength, Path @useEventIdOnPath
      ClientConnections @enabled WindowLength, LiveCacheLength, ClientManifestVersion
      ServerConnections @enabled SendEndOfStreamOnStop
      PullFrom | PushTo          PublishingPoints / PublishingPoint @credentialName
      Modules                    Module @id @type @name @enabled / HLS
        HLS                      SegmentLength, MaxBitRate, AllowCaching, BackwardCompatible,
                                 IncludeCodecs, Encryption @enabled / Key, KeyRotationPeriod
                                 (update-publishing-point-settings.md)

Outputs. A point is served as Smooth Streaming, HLS and MPEG-DASH; each output
is switched by the sink Module of its id (``smooth``, ``hls``, ``dash``; for HLS
the module carrying the HLS settings, whatever its id) and is on when there is
none, so IIS clients and IIS .isml files, which know only the HLS module, keep
every output on. ``Module/@enabled`` and ``Encryption/KeyRotationPeriod`` are
smoothlive's additions to the schema, both optional and rendered only when not
at their defaults (true, PT0S), so an IIS client never meets them.
``outputs_of`` reads the switches.

Errors: a body the schema refuses is ``INVALID_SCHEMA`` (``schema.validate`` runs
first; ``parse_settings`` re-checks the structure defensively); a well-formed
value out of range is ``INVALID_DATA``; ``check_settings`` holds the value rules.

Normalisation on reading, so that a parsed value renders back identically:
whitespace around typed values (booleans, numbers, durations), enumerations,
URLs, keys, credential names, module ids and the archive path is dropped; Title
and Module ``name`` are free text and kept verbatim; an empty Path,
``credentialName`` or Module ``name`` means "not set" (``None``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Literal
from urllib.parse import urlsplit

from lxml import etree

from smoothlive.management.durations import ZERO, Duration, is_xs_duration
from smoothlive.management.errors import NS_MGMT, ManagementError, MgmtError

__all__ = [
    "CLIENT_MANIFEST_VERSIONS",
    "DASH_MODULE_ID",
    "HLS_MODULE_ID",
    "HLS_MODULE_NAME",
    "HLS_SEGMENT_LENGTH_DEFAULT",
    "HLS_SEGMENT_LENGTH_MAX",
    "HLS_SEGMENT_LENGTH_MIN",
    "KEY_ROTATION_MAX",
    "KEY_ROTATION_MIN",
    "LIVE_CACHE_LENGTH_DEFAULT",
    "LOOK_AHEAD_CHUNKS_MAX",
    "LOOK_AHEAD_CHUNKS_MIN",
    "MODULE_TYPES",
    "OUTPUT_MODULE_IDS",
    "SINK_NAMES",
    "SMOOTH_MODULE_ID",
    "SOURCE_TYPES",
    "TITLE_MAX_LENGTH",
    "ArchiveSettings",
    "ClientConnections",
    "HlsSettings",
    "Module",
    "ModuleType",
    "Outputs",
    "PublishingPointRef",
    "ServerConnections",
    "Settings",
    "SourceType",
    "check_settings",
    "hls_module",
    "outputs_of",
    "parse_settings",
    "render_settings",
    "settings_defaults",
    "with_generated_keys",
]

SourceType = Literal["Push", "Pull"]
ModuleType = Literal["sink", "source"]

#: sourcetype-element.md: "Push|Pull".
SOURCE_TYPES: tuple[str, ...] = ("Push", "Pull")
#: clientmanifestversion-element.md: "either 2.0 or 2.2. No other versions".
CLIENT_MANIFEST_VERSIONS: tuple[str, ...] = ("2.0", "2.2")
#: module-element.md: 'either "sink" or "source"'.
MODULE_TYPES: tuple[str, ...] = ("sink", "source")
#: LookAheadChunks accepted range (inclusive); IIS Manager offers a small count, default 2.
LOOK_AHEAD_CHUNKS_MIN = 0
LOOK_AHEAD_CHUNKS_MAX = 10
TITLE_MAX_LENGTH = 256
#: HLS segment length range (inclusive). Apple recommends 10 s and warns against < 2 s.
HLS_SEGMENT_LENGTH_MIN = Duration.from_seconds(1)
HLS_SEGMENT_LENGTH_MAX = Duration.from_seconds(3600)
HLS_SEGMENT_LENGTH_DEFAULT = Duration.from_seconds(10)
#: LiveCacheLength when a request leaves it out.
LIVE_CACHE_LENGTH_DEFAULT = Duration.from_seconds(120)
MAX_UNSIGNED_INT = 2**32 - 1
#: The id and name IIS gives its Apple HTTP Live Streaming module (modules-element.md).
HLS_MODULE_ID = "hls"
HLS_MODULE_NAME = "HTTP Live Streaming"
#: The ids of the sink modules that switch the Smooth Streaming and MPEG-DASH outputs.
SMOOTH_MODULE_ID = "smooth"
DASH_MODULE_ID = "dash"
OUTPUT_MODULE_IDS: tuple[str, ...] = (SMOOTH_MODULE_ID, HLS_MODULE_ID, DASH_MODULE_ID)
#: Output module id -> the Sink name the statistics report for it (as IIS names its
#: sinks in query-publishing-point-statistics.md; MPEG-DASH is smoothlive's).
SINK_NAMES: Mapping[str, str] = MappingProxyType(
    {
        SMOOTH_MODULE_ID: "IIS Smooth Streaming",
        HLS_MODULE_ID: "Apple HTTP Live Streaming",
        DASH_MODULE_ID: "MPEG-DASH",
    }
)
#: KeyRotationPeriod range (inclusive) when not PT0S: shorter periods make clients
#: fetch a key every few segments; longer than a day is one key per event anyway.
KEY_ROTATION_MIN = Duration.from_seconds(10)
KEY_ROTATION_MAX = Duration.from_seconds(24 * 3600)

_NS = f"{{{NS_MGMT}}}"
_KEY = re.compile(r"[0-9A-Fa-f]{32}")
_UNSIGNED = re.compile(r"\+?[0-9]+|-0+")  # xs:unsignedInt lexical space, ASCII digits
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}  # xs:boolean
# Characters XML 1.0 cannot carry at all, not even as character references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


# ---------------------------------------------------------------------------
# The values


@dataclass(frozen=True)
class ArchiveSettings:
    """Archive element (archive-element.md, segmentlength-element.md, path-element.md).

    ``segment_length`` PT0S archives the whole broadcast as one presentation;
    ``path`` None keeps the server's configured archive path.
    """

    enabled: bool = True
    segment_length: Duration = ZERO
    path: str | None = None
    use_event_id_on_path: bool = False


@dataclass(frozen=True)
class ClientConnections:
    """ClientConnections element (clientconnections-element.md).

    ``window_length`` PT0S keeps the whole broadcast in the DVR window
    (windowlength-element.md); ``live_cache_length`` is the in-memory cache.
    """

    enabled: bool = True
    window_length: Duration = ZERO
    live_cache_length: Duration = LIVE_CACHE_LENGTH_DEFAULT
    client_manifest_version: str = "2.0"


@dataclass(frozen=True)
class ServerConnections:
    """ServerConnections element (serverconnections-element.md,
    sendendofstreamonstop-element.md)."""

    enabled: bool = True
    send_end_of_stream_on_stop: bool = True


@dataclass(frozen=True)
class PublishingPointRef:
    """A PublishingPoint: another server's publishing point URL (publishingpoint-element.md)."""

    url: str
    credential_name: str | None = None


@dataclass(frozen=True)
class HlsSettings:
    """The HLS element of the Apple HLS module (update-publishing-point-settings.md).

    Defaults are IIS's: 10 s segments and a 3000 kbps maximum bit rate
    (apple-http-live-streaming-with-iis-media-services.md). ``key`` is an
    AES-128 key as 32 hex digits; ``with_generated_keys`` fills it in when
    encryption is on, so the key is stored with the settings. ``key_rotation``
    (smoothlive's ``KeyRotationPeriod``) PT0S uses one key for the whole
    event; otherwise a new key every period.
    """

    segment_length: Duration = HLS_SEGMENT_LENGTH_DEFAULT
    max_bit_rate: int = 3_000_000
    allow_caching: bool = False
    backward_compatible: bool = True
    include_codecs: bool = False
    encryption_enabled: bool = False
    key: str | None = None
    key_rotation: Duration = ZERO


@dataclass(frozen=True)
class Module:
    """A Module element (module-element.md); ``hls`` holds its HLS configuration, if any.

    ``enabled`` (smoothlive's ``@enabled``) False switches off the output the
    module stands for; only sink modules can be switched off.
    """

    id: str
    type: ModuleType
    name: str | None = None
    hls: HlsSettings | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Settings:
    """The Settings element (settings-element.md), every field with its IIS default.

    Only one of ``pull_from`` / ``push_to`` may hold publishing points, the one
    that matches ``source_type`` (the schema shows ``PullFrom | PushTo``).
    """

    title: str = ""
    source_type: SourceType = "Push"
    estimated_duration: Duration = ZERO
    auto_start: bool = False
    auto_restart_on_encoder_reconnect: bool = False
    look_ahead_chunks: int = 2
    archive: ArchiveSettings = ArchiveSettings()
    client_connections: ClientConnections = ClientConnections()
    server_connections: ServerConnections = ServerConnections()
    pull_from: tuple[PublishingPointRef, ...] = ()
    push_to: tuple[PublishingPointRef, ...] = ()
    modules: tuple[Module, ...] = ()


def settings_defaults() -> Settings:
    """The settings of a publishing point created with an empty Settings element."""
    return Settings()


@dataclass(frozen=True)
class Outputs:
    """Which outputs a publishing point serves; ``hls`` None when HLS is off."""

    smooth: bool
    hls: HlsSettings | None
    dash: bool


def _sink(settings: Settings, module_id: str) -> Module | None:
    return next((m for m in settings.modules if m.id == module_id and m.type == "sink"), None)


def hls_module(settings: Settings) -> Module | None:
    """The module that configures and switches HLS: the one carrying HLS settings
    (IIS lets it have any id), else the sink with id ``hls``, else None."""
    carrying = next((m for m in settings.modules if m.hls is not None), None)
    return carrying if carrying is not None else _sink(settings, HLS_MODULE_ID)


def outputs_of(settings: Settings) -> Outputs:
    """The outputs ``settings`` switch on: each is on unless its module says
    ``enabled="false"``; HLS with its module's settings, or the defaults."""
    smooth, dash = _sink(settings, SMOOTH_MODULE_ID), _sink(settings, DASH_MODULE_ID)
    module = hls_module(settings)
    if module is None or module.hls is None:
        hls: HlsSettings | None = HlsSettings()
    else:
        hls = module.hls
    return Outputs(
        smooth=smooth is None or smooth.enabled,
        hls=hls if module is None or module.enabled else None,
        dash=dash is None or dash.enabled,
    )


def with_generated_keys(settings: Settings, make_key: Callable[[], str]) -> Settings:
    """``settings`` with ``make_key()`` as the Key of every HLS module that encrypts
    without one, so the key is stored with the settings and survives restarts.

    ``make_key`` returns 32 hex digits (``secrets.token_hex(16).upper()``); anything
    else is a ``ValueError``. Settings that need no key come back as the same object.
    """
    modules = []
    for module in settings.modules:
        hls = module.hls
        if hls is not None and hls.encryption_enabled and hls.key is None:
            key = make_key()
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                raise ValueError(f"make_key returned {key!r}, not 32 hex digits")
            module = replace(module, hls=replace(hls, key=key))
        modules.append(module)
    if all(new is old for new, old in zip(modules, settings.modules, strict=True)):
        return settings
    return replace(settings, modules=tuple(modules))


# ---------------------------------------------------------------------------
# Value rules


def _invalid(detail: str) -> ManagementError:
    return ManagementError(MgmtError.INVALID_DATA, detail)


def _check_text(where: str, value: object, *, trimmed: bool = False) -> None:
    if not isinstance(value, str):
        raise _invalid(f"{where}: expected text, got {type(value).__name__}")
    if _NOT_XML.search(value):
        raise _invalid(f"{where}: contains a character XML cannot carry")
    if trimmed and value != value.strip():
        raise _invalid(f"{where}: surrounding whitespace")


def _check_optional(where: str, value: object) -> None:
    """An optional identifier: None, or non-empty trimmed text (empty means None)."""
    if value is None:
        return
    _check_text(where, value, trimmed=True)
    if value == "":
        raise _invalid(f"{where}: empty (leave it out instead)")


def _check_bool(where: str, value: object) -> None:
    if not isinstance(value, bool):
        raise _invalid(f"{where}: expected a boolean, got {value!r}")


def _check_duration(where: str, value: object) -> None:
    if not isinstance(value, Duration):
        raise _invalid(f"{where}: expected a duration, got {value!r}")


def _check_url(where: str, url: object) -> None:
    """An absolute http(s) URL with a host and nothing that needs quoting as whitespace."""
    _check_text(where, url)
    assert isinstance(url, str)
    if not url or any(c.isspace() for c in url):
        raise _invalid(f"{where}: {url!r} is not an absolute http(s) URL")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise _invalid(f"{where}: {url!r} is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _invalid(f"{where}: {url!r} is not an absolute http(s) URL")


def _check_refs(where: str, refs: object) -> None:
    if not isinstance(refs, tuple):
        raise _invalid(f"{where}: expected a tuple of publishing points")
    for ref in refs:
        if not isinstance(ref, PublishingPointRef):
            raise _invalid(f"{where}: expected PublishingPointRef, got {ref!r}")
        _check_url(f"{where}/PublishingPoint", ref.url)
        _check_optional(f"{where}/PublishingPoint/@credentialName", ref.credential_name)


def _check_hls(where: str, hls: HlsSettings) -> None:
    _check_duration(f"{where}/SegmentLength", hls.segment_length)
    if not HLS_SEGMENT_LENGTH_MIN <= hls.segment_length <= HLS_SEGMENT_LENGTH_MAX:
        raise _invalid(
            f"{where}/SegmentLength: {hls.segment_length} is outside "
            f"{HLS_SEGMENT_LENGTH_MIN}..{HLS_SEGMENT_LENGTH_MAX}"
        )
    rate = hls.max_bit_rate
    if isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= MAX_UNSIGNED_INT:
        raise _invalid(f"{where}/MaxBitRate: {rate!r} is outside 1..{MAX_UNSIGNED_INT}")
    for name in ("allow_caching", "backward_compatible", "include_codecs", "encryption_enabled"):
        _check_bool(f"{where}/{name}", getattr(hls, name))
    if hls.key is not None and (not isinstance(hls.key, str) or not _KEY.fullmatch(hls.key)):
        raise _invalid(f"{where}/Encryption/Key: an AES-128 key is 32 hex digits")
    _check_duration(f"{where}/Encryption/KeyRotationPeriod", hls.key_rotation)
    if hls.key_rotation != ZERO and not KEY_ROTATION_MIN <= hls.key_rotation <= KEY_ROTATION_MAX:
        raise _invalid(
            f"{where}/Encryption/KeyRotationPeriod: {hls.key_rotation} is neither PT0S "
            f"nor in {KEY_ROTATION_MIN}..{KEY_ROTATION_MAX}"
        )


def _check_modules(modules: object) -> None:
    if not isinstance(modules, tuple):
        raise _invalid("Modules: expected a tuple of modules")
    seen: set[str] = set()
    with_hls = 0
    for module in modules:
        if not isinstance(module, Module):
            raise _invalid(f"Modules: expected Module, got {module!r}")
        where = f"Modules/Module[@id={module.id!r}]"
        _check_text(f"{where}/@id", module.id, trimmed=True)
        if not module.id:
            raise _invalid("Modules/Module/@id: empty")
        if module.id in seen:
            raise _invalid(f"{where}: duplicate module id")
        seen.add(module.id)
        if module.type not in MODULE_TYPES:
            raise _invalid(f"{where}/@type: {module.type!r} is not sink or source")
        if module.name is not None:
            _check_text(f"{where}/@name", module.name)
            if module.name == "":
                raise _invalid(f"{where}/@name: empty (leave it out instead)")
        _check_bool(f"{where}/@enabled", module.enabled)
        if not module.enabled and module.type != "sink":
            raise _invalid(f"{where}/@enabled: only an output (a sink module) can be switched off")
        if module.hls is not None:
            if not isinstance(module.hls, HlsSettings):
                raise _invalid(f"{where}/HLS: expected HlsSettings")
            if module.type != "sink":
                raise _invalid(f"{where}: HLS is an output; only a sink module can carry it")
            with_hls += 1
            _check_hls(f"{where}/HLS", module.hls)
    if with_hls > 1:
        # One manifest URL (format=m3u8-aapl) and one set of .isml metas: one HLS output.
        raise _invalid("Modules: more than one module carries HLS settings")
    named = next((m for m in modules if m.id == HLS_MODULE_ID and m.type == "sink"), None)
    if with_hls and named is not None and named.hls is None and not named.enabled:
        # The module carrying HLS settings switches HLS; a second switch would contradict it.
        raise _invalid(
            f"Modules/Module[@id={HLS_MODULE_ID!r}]/@enabled: another module carries the "
            "HLS settings and switches HLS"
        )


def check_settings(settings: Settings) -> None:
    """Raise ``ManagementError(INVALID_DATA)`` unless every value is in range.

    Rules (the element pages, plus smoothlive's documented limits):

    - SourceType is ``Push`` or ``Pull``; ClientManifestVersion ``2.0`` or ``2.2``.
    - Title has at most 256 characters.
    - LookAheadChunks is in 0..10.
    - durations are non-negative ``Duration`` values (``Duration`` refuses the rest).
    - Archive Path has no NUL; PublishingPoint URLs are absolute http(s) URLs.
    - PullFrom publishing points only with SourceType Pull, PushTo only with Push.
    - Module ids are unique and non-empty, type is ``sink`` or ``source``; at most
      one module carries HLS, and it is a sink; only sinks are switched off
      (``enabled`` False), and not a sink ``hls`` while another module carries HLS.
    - HLS SegmentLength is in PT1S..PT1H, MaxBitRate in 1..4294967295, Key is 32 hex
      digits (an AES-128 key), KeyRotationPeriod is PT0S or in PT10S..PT24H.
    - no text holds a character XML 1.0 cannot carry.
    """
    s = settings
    if not isinstance(s, Settings):
        raise _invalid(f"expected Settings, got {type(s).__name__}")
    _check_text("Title", s.title)
    if len(s.title) > TITLE_MAX_LENGTH:
        raise _invalid(f"Title: {len(s.title)} characters, more than {TITLE_MAX_LENGTH}")
    if s.source_type not in SOURCE_TYPES:
        raise _invalid(f"SourceType: {s.source_type!r} is not Push or Pull")
    _check_duration("EstimatedDuration", s.estimated_duration)
    _check_bool("AutoStart", s.auto_start)
    _check_bool("AutoRestartOnEncoderReconnect", s.auto_restart_on_encoder_reconnect)
    chunks = s.look_ahead_chunks
    if (
        isinstance(chunks, bool)
        or not isinstance(chunks, int)
        or not LOOK_AHEAD_CHUNKS_MIN <= chunks <= LOOK_AHEAD_CHUNKS_MAX
    ):
        raise _invalid(
            f"LookAheadChunks: {chunks!r} is outside "
            f"{LOOK_AHEAD_CHUNKS_MIN}..{LOOK_AHEAD_CHUNKS_MAX}"
        )

    archive = s.archive
    if not isinstance(archive, ArchiveSettings):
        raise _invalid("Archive: expected ArchiveSettings")
    _check_bool("Archive/@enabled", archive.enabled)
    _check_duration("Archive/SegmentLength", archive.segment_length)
    if archive.path is not None and "\x00" in archive.path:
        raise _invalid("Archive/Path: contains NUL")
    _check_optional("Archive/Path", archive.path)
    _check_bool("Archive/Path/@useEventIdOnPath", archive.use_event_id_on_path)

    client = s.client_connections
    if not isinstance(client, ClientConnections):
        raise _invalid("ClientConnections: expected ClientConnections")
    _check_bool("ClientConnections/@enabled", client.enabled)
    _check_duration("ClientConnections/WindowLength", client.window_length)
    _check_duration("ClientConnections/LiveCacheLength", client.live_cache_length)
    if client.client_manifest_version not in CLIENT_MANIFEST_VERSIONS:
        raise _invalid(
            f"ClientConnections/ClientManifestVersion: {client.client_manifest_version!r} "
            "is not 2.0 or 2.2"
        )

    server = s.server_connections
    if not isinstance(server, ServerConnections):
        raise _invalid("ServerConnections: expected ServerConnections")
    _check_bool("ServerConnections/@enabled", server.enabled)
    _check_bool("ServerConnections/SendEndOfStreamOnStop", server.send_end_of_stream_on_stop)

    _check_refs("PullFrom/PublishingPoints", s.pull_from)
    _check_refs("PushTo/PublishingPoints", s.push_to)
    if s.pull_from and s.push_to:
        raise _invalid("PullFrom and PushTo: a publishing point has one or the other")
    if s.pull_from and s.source_type != "Pull":
        raise _invalid("PullFrom: publishing points to pull from need SourceType Pull")
    if s.push_to and s.source_type != "Push":
        raise _invalid("PushTo: publishing points to push to need SourceType Push")

    _check_modules(s.modules)


# ---------------------------------------------------------------------------
# Reading


def _schema_error(detail: str) -> ManagementError:
    return ManagementError(MgmtError.INVALID_SCHEMA, detail)


def _local(element: etree._Element) -> str:
    """The local name of a SmoothStreaming element; anything else is a schema error."""
    tag = element.tag
    if not isinstance(tag, str) or not tag.startswith(_NS):
        raise _schema_error(f"element {tag!r} is not in the SmoothStreaming namespace")
    return tag[len(_NS):]


def _elements(element: etree._Element) -> Iterator[etree._Element]:
    """Child elements, skipping comments and processing instructions."""
    for child in element:
        if isinstance(child.tag, str):
            yield child


def _children(element: etree._Element, allowed: tuple[str, ...]) -> dict[str, etree._Element]:
    """Children by local name: each at most once and in ``allowed`` (the schema's xs:all)."""
    where = _local(element)
    found: dict[str, etree._Element] = {}
    for child in _elements(element):
        name = _local(child)
        if name not in allowed:
            raise _schema_error(f"{where}: unexpected element {name}")
        if name in found:
            raise _schema_error(f"{where}: {name} appears more than once")
        found[name] = child
    _no_text(element)
    return found


def _no_text(element: etree._Element) -> None:
    """Element-only content: whitespace between the children, nothing else."""
    texts = [element.text, *(child.tail for child in element)]
    if any(text and text.strip() for text in texts):
        raise _schema_error(f"{_local(element)}: unexpected text")


def _repeated(element: etree._Element, name: str) -> list[etree._Element]:
    where = _local(element)
    items = []
    for child in _elements(element):
        if _local(child) != name:
            raise _schema_error(f"{where}: unexpected element {_local(child)}")
        items.append(child)
    _no_text(element)
    return items


def _text(element: etree._Element) -> str:
    """The text of a simple-content element (comments skipped, no child elements)."""
    parts = [element.text or ""]
    for child in element:
        if isinstance(child.tag, str):
            raise _schema_error(f"{_local(element)}: unexpected element {child.tag}")
        parts.append(child.tail or "")
    return "".join(parts)


def _bool_value(where: str, text: str) -> bool:
    try:
        return _BOOLEANS[text.strip()]
    except KeyError:
        raise _schema_error(f"{where}: {text!r} is not an xs:boolean") from None


def _bool(children: dict[str, etree._Element], name: str, default: bool) -> bool:
    element = children.get(name)
    return default if element is None else _bool_value(name, _text(element))


def _bool_attr(element: etree._Element, name: str, default: bool | None = None) -> bool:
    where = f"{_local(element)}/@{name}"
    value = element.get(name)
    if value is None:
        if default is None:
            raise _schema_error(f"{where}: required attribute missing")
        return default
    return _bool_value(where, value)


def _unsigned(children: dict[str, etree._Element], name: str, default: int) -> int:
    element = children.get(name)
    if element is None:
        return default
    text = _text(element).strip()
    if not _UNSIGNED.fullmatch(text):
        raise _schema_error(f"{name}: {text!r} is not an xs:unsignedInt")
    value = int(text)
    if value > MAX_UNSIGNED_INT:
        raise _schema_error(f"{name}: {value} is larger than an xs:unsignedInt")
    return value


def _duration(children: dict[str, etree._Element], name: str, default: Duration) -> Duration:
    element = children.get(name)
    if element is None:
        return default
    text = _text(element)
    try:
        return Duration.parse(text)
    except ValueError as exc:
        if is_xs_duration(text):  # well-formed, but negative or in years/months
            raise _invalid(f"{name}: {exc}") from None
        raise _schema_error(f"{name}: {text!r} is not an xs:duration") from None


def _string(children: dict[str, etree._Element], name: str, default: str) -> str:
    element = children.get(name)
    return default if element is None else _text(element).strip()


def _optional(value: str | None) -> str | None:
    """Trimmed text, with empty meaning "not set"."""
    if value is None:
        return None
    return value.strip() or None


def _refs(element: etree._Element) -> tuple[PublishingPointRef, ...]:
    found = _children(element, ("PublishingPoints",))
    points = found.get("PublishingPoints")
    if points is None:
        return ()
    return tuple(
        PublishingPointRef(
            url=_text(point).strip(), credential_name=_optional(point.get("credentialName"))
        )
        for point in _repeated(points, "PublishingPoint")
    )


def _hls(element: etree._Element) -> HlsSettings:
    found = _children(
        element,
        (
            "SegmentLength",
            "MaxBitRate",
            "AllowCaching",
            "BackwardCompatible",
            "IncludeCodecs",
            "Encryption",
        ),
    )
    default = HlsSettings()
    encryption_enabled, key = default.encryption_enabled, default.key
    key_rotation = default.key_rotation
    encryption = found.get("Encryption")
    if encryption is not None:
        encryption_enabled = _bool_attr(encryption, "enabled")
        sub = _children(encryption, ("Key", "KeyRotationPeriod"))
        if (key_element := sub.get("Key")) is not None:
            key = _optional(_text(key_element))
        key_rotation = _duration(sub, "KeyRotationPeriod", key_rotation)
    return HlsSettings(
        segment_length=_duration(found, "SegmentLength", default.segment_length),
        max_bit_rate=_unsigned(found, "MaxBitRate", default.max_bit_rate),
        allow_caching=_bool(found, "AllowCaching", default.allow_caching),
        backward_compatible=_bool(found, "BackwardCompatible", default.backward_compatible),
        include_codecs=_bool(found, "IncludeCodecs", default.include_codecs),
        encryption_enabled=encryption_enabled,
        key=key,
        key_rotation=key_rotation,
    )


def _module(element: etree._Element) -> Module:
    found = _children(element, ("HLS",))
    module_id, module_type = element.get("id"), element.get("type")
    if module_id is None or module_type is None:
        raise _schema_error("Module: the id and type attributes are required")
    name = element.get("name")
    hls = found.get("HLS")
    return Module(
        id=module_id.strip(),
        type=module_type.strip(),  # type: ignore[arg-type]  # checked by check_settings
        name=name or None,
        hls=None if hls is None else _hls(hls),
        enabled=_bool_attr(element, "enabled", default=True),
    )


_SETTINGS_CHILDREN = (
    "Title",
    "SourceType",
    "EstimatedDuration",
    "AutoStart",
    "AutoRestartOnEncoderReconnect",
    "LookAheadChunks",
    "Archive",
    "ClientConnections",
    "ServerConnections",
    "PullFrom",
    "PushTo",
    "Modules",
)


def parse_settings(element: etree._Element) -> Settings:
    """The ``Settings`` of a ``{NS_MGMT}Settings`` element; left-out elements take defaults.

    The element is normally XSD-checked already (``schema.validate``); the
    structure is re-checked here so a caller that skipped it still gets an
    ``INVALID_SCHEMA`` and never a wrong value. Values out of range raise
    ``INVALID_DATA`` (see ``check_settings``), as does sending both PullFrom
    and PushTo, even empty ones (settings-element.md: ``PullFrom | PushTo``).
    """
    if _local(element) != "Settings":
        raise _schema_error(f"expected Settings, got {_local(element)}")
    found = _children(element, _SETTINGS_CHILDREN)
    default = Settings()

    archive = ArchiveSettings()
    if (element_ := found.get("Archive")) is not None:
        sub = _children(element_, ("SegmentLength", "Path"))
        path, use_event_id = archive.path, archive.use_event_id_on_path
        if (path_element := sub.get("Path")) is not None:
            path = _optional(_text(path_element))
            use_event_id = _bool_attr(path_element, "useEventIdOnPath", default=False)
        archive = ArchiveSettings(
            enabled=_bool_attr(element_, "enabled"),
            segment_length=_duration(sub, "SegmentLength", archive.segment_length),
            path=path,
            use_event_id_on_path=use_event_id,
        )

    client = ClientConnections()
    if (element_ := found.get("ClientConnections")) is not None:
        sub = _children(element_, ("WindowLength", "LiveCacheLength", "ClientManifestVersion"))
        client = ClientConnections(
            enabled=_bool_attr(element_, "enabled"),
            window_length=_duration(sub, "WindowLength", client.window_length),
            live_cache_length=_duration(sub, "LiveCacheLength", client.live_cache_length),
            client_manifest_version=_string(
                sub, "ClientManifestVersion", client.client_manifest_version
            ),
        )

    server = ServerConnections()
    if (element_ := found.get("ServerConnections")) is not None:
        sub = _children(element_, ("SendEndOfStreamOnStop",))
        server = ServerConnections(
            enabled=_bool_attr(element_, "enabled"),
            send_end_of_stream_on_stop=_bool(
                sub, "SendEndOfStreamOnStop", server.send_end_of_stream_on_stop
            ),
        )

    if "PullFrom" in found and "PushTo" in found:
        raise _invalid("PullFrom and PushTo: a publishing point has one or the other")
    pull_from = _refs(found["PullFrom"]) if "PullFrom" in found else ()
    push_to = _refs(found["PushTo"]) if "PushTo" in found else ()

    modules: tuple[Module, ...] = ()
    if (element_ := found.get("Modules")) is not None:
        modules = tuple(_module(m) for m in _repeated(element_, "Module"))

    title = found.get("Title")
    settings = Settings(
        title=default.title if title is None else _text(title),
        source_type=_string(found, "SourceType", default.source_type),  # type: ignore[arg-type]
        estimated_duration=_duration(found, "EstimatedDuration", default.estimated_duration),
        auto_start=_bool(found, "AutoStart", default.auto_start),
        auto_restart_on_encoder_reconnect=_bool(
            found, "AutoRestartOnEncoderReconnect", default.auto_restart_on_encoder_reconnect
        ),
        look_ahead_chunks=_unsigned(found, "LookAheadChunks", default.look_ahead_chunks),
        archive=archive,
        client_connections=client,
        server_connections=server,
        pull_from=pull_from,
        push_to=push_to,
        modules=modules,
    )
    check_settings(settings)
    return settings


# ---------------------------------------------------------------------------
# Writing


def _escape_text(text: str) -> str:
    # \r is escaped too: a literal one would be read back as \n (XML end-of-line handling).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace(
        "\r", "&#13;"
    )


def _escape_attr(text: str) -> str:
    # Tabs and newlines too: attribute-value normalisation would turn them into spaces.
    return (
        _escape_text(text)
        .replace('"', "&quot;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
    )


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def render_settings(settings: Settings, indent: str = "      ") -> str:
    """The ``<Settings>`` element as XML text, every element present in schema order.

    No namespace declaration: the caller writes it inside
    ``<SmoothStreaming xmlns=NS_MGMT>``. Each line starts with ``indent`` (the
    Settings element's own indentation; children add two spaces) and ends with
    a newline, the last one included, so the text drops between the lines of
    the enclosing document. Booleans are ``true``/``false``, durations canonical.
    PullFrom is written for a Pull publishing point, PushTo otherwise.
    """
    s = settings
    lines: list[str] = []

    def add(level: int, text: str) -> None:
        lines.append(f"{indent}{'  ' * level}{text}")

    def leaf(level: int, name: str, value: str) -> None:
        add(level, f"<{name}>{_escape_text(value)}</{name}>")

    add(0, "<Settings>")
    leaf(1, "Title", s.title)
    leaf(1, "SourceType", s.source_type)
    leaf(1, "EstimatedDuration", str(s.estimated_duration))
    leaf(1, "AutoStart", _bool_text(s.auto_start))
    leaf(1, "AutoRestartOnEncoderReconnect", _bool_text(s.auto_restart_on_encoder_reconnect))
    leaf(1, "LookAheadChunks", str(s.look_ahead_chunks))

    a = s.archive
    add(1, f'<Archive enabled="{_bool_text(a.enabled)}">')
    leaf(2, "SegmentLength", str(a.segment_length))
    path_open = f'<Path useEventIdOnPath="{_bool_text(a.use_event_id_on_path)}"'
    add(2, f"{path_open} />" if a.path is None else f"{path_open}>{_escape_text(a.path)}</Path>")
    add(1, "</Archive>")

    c = s.client_connections
    add(1, f'<ClientConnections enabled="{_bool_text(c.enabled)}">')
    leaf(2, "WindowLength", str(c.window_length))
    leaf(2, "LiveCacheLength", str(c.live_cache_length))
    leaf(2, "ClientManifestVersion", c.client_manifest_version)
    add(1, "</ClientConnections>")

    v = s.server_connections
    add(1, f'<ServerConnections enabled="{_bool_text(v.enabled)}">')
    leaf(2, "SendEndOfStreamOnStop", _bool_text(v.send_end_of_stream_on_stop))
    add(1, "</ServerConnections>")

    pull = s.source_type == "Pull"
    direction, refs = ("PullFrom", s.pull_from) if pull else ("PushTo", s.push_to)
    add(1, f"<{direction}>")
    if refs:
        add(2, "<PublishingPoints>")
        for ref in refs:
            credential = (
                "" if ref.credential_name is None
                else f' credentialName="{_escape_attr(ref.credential_name)}"'
            )
            add(3, f"<PublishingPoint{credential}>{_escape_text(ref.url)}</PublishingPoint>")
        add(2, "</PublishingPoints>")
    else:
        add(2, "<PublishingPoints />")
    add(1, f"</{direction}>")

    if not s.modules:
        add(1, "<Modules />")
    else:
        add(1, "<Modules>")
        for module in s.modules:
            attrs = f'id="{_escape_attr(module.id)}" type="{_escape_attr(module.type)}"'
            if module.name is not None:
                attrs += f' name="{_escape_attr(module.name)}"'
            if not module.enabled:
                attrs += ' enabled="false"'
            if module.hls is None:
                add(2, f"<Module {attrs} />")
                continue
            h = module.hls
            add(2, f"<Module {attrs}>")
            add(3, "<HLS>")
            leaf(4, "SegmentLength", str(h.segment_length))
            leaf(4, "MaxBitRate", str(h.max_bit_rate))
            leaf(4, "AllowCaching", _bool_text(h.allow_caching))
            leaf(4, "BackwardCompatible", _bool_text(h.backward_compatible))
            leaf(4, "IncludeCodecs", _bool_text(h.include_codecs))
            encryption = f'<Encryption enabled="{_bool_text(h.encryption_enabled)}"'
            if h.key is None and h.key_rotation == ZERO:
                add(4, f"{encryption} />")
            else:
                add(4, f"{encryption}>")
                if h.key is not None:
                    leaf(5, "Key", h.key)
                if h.key_rotation != ZERO:
                    leaf(5, "KeyRotationPeriod", str(h.key_rotation))
                add(4, "</Encryption>")
            add(3, "</HLS>")
            add(2, "</Module>")
        add(1, "</Modules>")

    add(0, "</Settings>")
    return "\n".join(lines) + "\n"
