"""SIP (RFC 3261), sans-IO except transport.py."""
