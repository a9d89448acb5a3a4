"""The stedloop daemon: ZeroMQ request/reply and event publishing around one session slot."""
