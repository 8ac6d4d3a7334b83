"""Archives of live presentations as on-demand Smooth Streaming, and their playback.

IIS Live Smooth Streaming archived every publishing point to a folder of
``.ismv`` files (one per track here), a ``.ism`` server manifest (the
on-demand SMIL of the "On-Demand Server Manifest Format" pages) and a
``.ismc`` client manifest (the client manifest with ``IsLive`` absent), and
the on-demand Smooth Streaming handler served such a folder at
``/<path>.ism/Manifest``. :mod:`.writer` writes and repairs archives;
:mod:`.ondemand` reads them for playback.
"""
