"""Helpers the tests share: spawning ranks, the jobs ranks run, fault injection."""
