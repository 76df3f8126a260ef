"""eve-fdd."""
