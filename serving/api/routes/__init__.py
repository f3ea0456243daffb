"""Thin routers: validate, call a service function, return a schema."""
