"""Real servers on loopback for the test suite: Dovecot, redis-server, and their TLS files."""
