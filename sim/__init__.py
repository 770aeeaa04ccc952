"""Command-line tools of mobile-vla-sim (``python -m sim.<tool>``)."""
