"""The baseline of bench/ingest.py: the plan's worker, one ORM `add` + `commit` per trade.

Started by the benchmark as `celery -A plan_style worker -Q plan_trades` (from bench/).
Writes the same table as the project's worker, through the same model.
"""

import dataclasses
import os

from celery import Celery
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from db import TradeHistory, TradeRecord

app = Celery("plan_style", broker=os.environ["CELERY_BROKER_URL"])
app.conf.update(task_serializer="json", accept_content=["json"], worker_hijack_root_logger=False)
engine = create_engine(os.environ["DATABASE_URL"])
# The plan's columns: the record's fields (not the journal's own bookkeeping).
FIELDS = {field.name for field in dataclasses.fields(TradeRecord)}
COLUMNS = [column for column in TradeHistory.__table__.columns if column.name in FIELDS]


@app.task(name="plan.record_trade")
def record_trade(trade: dict) -> None:
    record = TradeRecord.from_dict(trade)
    with Session(engine) as session:
        session.add(TradeHistory(**{column.name: getattr(record, column.name) for column in COLUMNS}))
        session.commit()
