"""`make run`'s machinery: check or start PostgreSQL and Redis, prepare, then run the Procfile."""
