"""Third-party messages a gensis user cannot act on, silenced for the whole process (``gensis`` calls
:func:`quiet_third_party` once, before a command runs): Lightning's advert for its cloud logger at the start of
every run, and torch's deprecation of ``LeafSpec``, raised inside Lightning's own pytree helper every epoch.
Every other warning and log line is left as it is."""

from __future__ import annotations

import logging
import warnings

ADVERT_PREFIX = "💡 Tip:"
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
LEAFSPEC_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERT_PREFIX)


def quiet_third_party() -> None:
    """Install the two filters (idempotent)."""
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdverts) for f in logger.filters):
            logger.addFilter(_DropAdverts())
    warnings.filterwarnings("ignore", message=LEAFSPEC_DEPRECATION, category=FutureWarning)
