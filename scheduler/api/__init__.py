"""The REST API for site systems (DRF): auth, permissions, serializers, views.

A face like the admin: it parses, asks `scheduler.access` for every queryset, calls one
service or selector, and presents. It never calls `.save()` on clinical data itself.
"""
