"""The wire: frames and envelopes, the handshake, a channel per connection, and sealed
frames on inbox media (docs/wire.md)."""
