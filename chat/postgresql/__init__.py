"""Django's PostgreSQL backend with a health check that costs no round trip (see base.py).

ENGINE "chat.postgresql" (chatsite.settings sets it for every PostgreSQL alias).
"""
