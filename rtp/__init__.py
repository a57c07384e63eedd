"""Media ingest: RTP/RTCP (sans-IO wire formats, jitter buffer, sync)."""
