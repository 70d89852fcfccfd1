"""Outbound pharmacy orders: filled in by the pharmacy step."""
