"""Monitoring: live views, monitor and alert streams, security profiles, recording policy."""
