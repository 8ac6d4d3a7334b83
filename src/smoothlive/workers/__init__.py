"""Several processes behind one port: the owner and its front workers.

``smoothlive serve --workers N`` runs the owner (this whole server: ingest,
management, the fragment store) and N-1 front processes on the same port
(``SO_REUSEPORT``: the kernel spreads connections). A front answers what it
can from its cache and relays everything else to the owner over a Unix
socket. ARCHITECTURE.md, "Several worker processes", says why.
"""
