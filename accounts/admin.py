from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from accounts.models import User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "email", "tier", "is_staff", "is_active", "date_joined")
    list_filter = ("tier", "is_staff", "is_active")
    list_editable = ("tier",)
    fieldsets = (*BaseUserAdmin.fieldsets, ("Rate limit", {"fields": ("tier",)}))
    add_fieldsets = (*BaseUserAdmin.add_fieldsets, ("Rate limit", {"fields": ("tier",)}))
