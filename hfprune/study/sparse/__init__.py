"""The sparse-MLP studies ("Sparsest Models Elude Pruning", STUDY §5b): the combinatorial search over active widths
and per-layer supports (:mod:`.search`, :mod:`.supports`) and the study runner that trains its candidates beside
the sparse-training methods at the same nonzero budgets."""
