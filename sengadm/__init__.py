"""sengadm: administration of a seng-gateway (scriptable commands and a terminal dashboard)."""
