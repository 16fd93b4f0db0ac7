"""Cross-service test harness: start real llorch daemons on loopback and drive them."""
