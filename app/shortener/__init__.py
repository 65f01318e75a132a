"""A small link shortener: FastAPI + PostgreSQL (psycopg 3), the sample app of backbone."""

__version__ = "0.1.0"
