"""The sparse-training study kind ("Sparsest Models Elude Pruning", STUDY §5b): sparse-training methods at budgets
of nonzero weights, structured masks, and for MLP families the combinatorial search over active widths and
per-layer supports (:mod:`.search`, :mod:`.supports`), every model trained from the same initialisation."""
