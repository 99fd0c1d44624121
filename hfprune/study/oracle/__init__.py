"""The oracle-pruning study kind (STUDY §1–§4): dense model → candidate masks or unstructured methods → retrained
trials (or one chosen per setting by successive halving, :mod:`.halving`) → the oracle report."""
