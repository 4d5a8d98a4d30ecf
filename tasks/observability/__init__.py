"""Shared by every process: structured logs (`logs`), Prometheus metrics (`metrics`) and
the request id that follows a request from the web through the broker into a worker
(`request_id`)."""
