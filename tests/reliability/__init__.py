"""Reliability and security suite: the bad-input corpus and its tests."""
