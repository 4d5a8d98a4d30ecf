"""The bot's client of the trade journal (the web's trade routes use it too).

    from tasks.client import TradeJournal

It imports only the contract and `db`'s record types: a bot needs nothing else of the
project, and never builds a worker's or the web's app.
"""

from tasks.client.journal import Enqueued, JournalUnavailable, TradeJournal

__all__ = ["Enqueued", "JournalUnavailable", "TradeJournal"]
