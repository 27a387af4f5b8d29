"""Frozen published networks used inside training (the reward backbone)."""
