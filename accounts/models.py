from django.contrib.auth.models import AbstractUser
from django.db import models


class Tier(models.TextChoices):
    FREE = "free", "Free"
    PRO = "pro", "Pro"
    ENTERPRISE = "enterprise", "Enterprise"


class User(AbstractUser):
    """A user of the API. The tier decides the user's rate limit."""

    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.FREE)

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        constraints = [
            models.CheckConstraint(condition=models.Q(tier__in=Tier.values), name="accounts_user_tier_valid"),
        ]
