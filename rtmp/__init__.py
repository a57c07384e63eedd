"""RTMP egress: a registry stream pushed as FLV over our own asyncio RTMP publisher (H.264
passed through,
audio to AAC-LC or G.711 as is), with reconnection. See :mod:`rtmp.pusher`."""

from rtmp.pusher import FAILED_INFO, PushConfig, PushStats, PushStatus, RtmpPusher

__all__ = ["FAILED_INFO", "PushConfig", "PushStats", "PushStatus", "RtmpPusher"]
