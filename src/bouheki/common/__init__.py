"""The vocabulary every layer shares: the engine contract (api), unit names
and the daemon settings. It imports nothing else of bouheki."""
