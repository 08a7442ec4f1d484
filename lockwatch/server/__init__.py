"""The standalone dashboard server behind ``lockwatch serve`` and the top-level manage.py."""
