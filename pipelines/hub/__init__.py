"""Module handles and their cache: resolvers, safe archive extraction, locks, loading and describing modules."""
