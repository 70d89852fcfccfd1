"""Screen view models and form rules for the PWA (issue 18): pure functions, no I/O, no clock.

The browser adapter (``pyclient.adapters.browser_app``) hands them plain resources and outbox entries; the
JavaScript screens render exactly what they return (words, choices, which buttons exist).
"""
