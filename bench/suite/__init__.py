"""``make bench`` in parts: orchestration stays in bench/run.py; browser, measures and report live here."""
