"""The REST API (Starlette), WCS-compatible."""
