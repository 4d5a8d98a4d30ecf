"""What the web process asks of the workers and the broker: predictions (waited for or
queued), job look-ups, the broker's queue depths, which workers consume which queue, what
they have loaded and what they hold. Nothing here runs in a worker.
"""

from tasks.web_clients.broker_queues import BrokerDown, BrokerQueues, broker_problem, hidden_password
from tasks.web_clients.held import held_reports
from tasks.web_clients.loaded_models import ModelReports, live_workers, loaded_descriptions
from tasks.web_clients.predictions import Job, PredictionClient, PredictionTimeout
from tasks.web_clients.worker_status import QueueConsumers, WorkerStatus

__all__ = [
    "BrokerDown",
    "BrokerQueues",
    "Job",
    "ModelReports",
    "PredictionClient",
    "PredictionTimeout",
    "QueueConsumers",
    "WorkerStatus",
    "broker_problem",
    "held_reports",
    "hidden_password",
    "live_workers",
    "loaded_descriptions",
]
