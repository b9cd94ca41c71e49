from django.contrib import admin
from django.urls import path

from scheduler.views import healthz

admin.site.site_header = "Trial visit scheduler"
admin.site.site_title = "Trial visit scheduler"
admin.site.index_title = "Trials, participants and calendars"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
