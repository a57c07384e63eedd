"""RTMP egress."""
