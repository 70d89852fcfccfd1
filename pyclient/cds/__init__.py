"""Offline clinical decision support: ``check(draft_orders, context) -> list[Card]``.

Sans-IO like the rest of pyclient: the same code runs on the device (Pyodide) before an order is saved
and on the server (re-check of every pushed order, CDS Hooks). The knowledge base is data
(``pyclient/data/cds-kb.json``, or a signed bundle the device fetched), see docs/CDS.md.
"""

from .cards import Card, Source, Suggestion, level_rank
from .engine import Context, check, is_active_medication, resolve_allergen, resolve_drug
from .kb import KnowledgeBase, KnowledgeBaseError, default_kb, shipped_bytes
from .warm import warm

__all__ = [
    "Card", "Context", "KnowledgeBase", "KnowledgeBaseError", "Source", "Suggestion", "check", "default_kb",
    "is_active_medication", "level_rank", "resolve_allergen", "resolve_drug", "shipped_bytes", "warm",
]
