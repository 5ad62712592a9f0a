"""Messaging: the dispatcher (topics to apps, requests to replies), the apps' mailboxes,
the peer table, and the counters."""
