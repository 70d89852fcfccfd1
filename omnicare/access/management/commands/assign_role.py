"""``manage.py assign_role <username> <role>``: give a user one of the roles in roles.py (``--remove`` to take it)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from omnicare.access.roles import ROLES, role_assign, role_remove


class Command(BaseCommand):
    help = "Assign (or --remove) a role: " + ", ".join(ROLES)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("role", choices=sorted(ROLES))
        parser.add_argument("--remove", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError("no such user")
        (role_remove if options["remove"] else role_assign)(user=user, role=options["role"])
        self.stdout.write(f"{user.username}: {options['role']} {'removed' if options['remove'] else 'assigned'}")
