"""URLs for tests/django_admin_settings.py: the stock admin, a custom AdminSite, and bento_tasks.urls."""

from django.contrib import admin
from django.urls import include, path

import bento_tasks.admin


class OpsSite(admin.AdminSite):
    site_header = "Ops"


ops_site = OpsSite(name="ops")
bento_tasks.admin.register(ops_site)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("ops/", ops_site.urls),
    path("bento/", include("bento_tasks.urls")),
]
