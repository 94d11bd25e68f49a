"""How the web process listens: sockets bound before anything is printed, protocols that cut
off slow clients, a bound on requests served at once, and quiet fd exhaustion."""
