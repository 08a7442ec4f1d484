"""Who may see the dashboard when it is mounted in a project.

``LOCKWATCH["ACCESS_CHECK"]`` names a function ``f(user) -> bool``; this is the default.
"""

from __future__ import annotations

from typing import Any


def is_staff(user: Any) -> bool:
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and getattr(user, "is_active", False)
        and getattr(user, "is_staff", False)
    )


def is_superuser(user: Any) -> bool:
    return is_staff(user) and bool(getattr(user, "is_superuser", False))
