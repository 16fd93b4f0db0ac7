"""The llorch operator CLI: `llorch up`, `llorch submit`, `llorch worker`."""
