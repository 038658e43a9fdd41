"""Every transport's configuration section, each in its own module: the section's dataclass,
its keys (``KEYS``), its reader (``read_section(r, data, path)``, with the line numbers and
did-you-mean errors of :class:`~exporter.config.reader.Reader`) and its :class:`Section`
(``SECTION``: what it can do in a round trip). Adding a transport adds a module here and its
row below; :mod:`exporter.config.load` reads only what every target has in common.
"""

from __future__ import annotations

from typing import Final

from exporter.config.reader import Section
from exporter.config.sections import ews, gmail, graph, imap, jmap, mx, pop3, smtp

SECTIONS: Final[dict[str, Section]] = {
    "smtp": smtp.SECTION,
    "imap": imap.SECTION,
    "graph": graph.SECTION,
    "gmail": gmail.SECTION,
    "mx": mx.SECTION,
    "pop3": pop3.SECTION,
    "ews": ews.SECTION,
    "jmap": jmap.SECTION,
}
"""Every transport's configuration section, by the key it has in a target."""

__all__ = ["SECTIONS", "Section"]
