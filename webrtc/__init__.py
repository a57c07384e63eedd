"""WebRTC egress (WHEP): a stream's H.264 and G.711/Opus to WebRTC players, untranscoded.

:class:`webrtc.whep.WhepSessions` is the entry point; :class:`webrtc.config.WebRtcConfig`
its configuration. See ``docs/webrtc.md``. Importing this package does not import
aiortc (``webrtc.config`` is used by the settings).
"""
